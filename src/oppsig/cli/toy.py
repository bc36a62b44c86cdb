"""``oppsig toy linear`` (two-layer linear model of opposing signals) and ``oppsig toy valley`` (the narrow valley)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("toy", help="small exactly solvable models of the opposing-signals mechanism",
                       description="oppsig toy linear: a two-layer linear network with an opposing feature "
                                   "(closed-form Hessian); oppsig toy valley: optimisers in a 2-D narrow valley.")
    models = p.add_subparsers(dest="toy_model", metavar="MODEL")
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])
    lp = models.add_parser(
        "linear", help="two-layer linear network: sharpening, edge of stability, phase diagram",
        description="Train a two-layer linear network on data with two groups that share a large opposing "
                    "feature (+alpha in one, -alpha in the other) and a small genuine signal, in float64 with "
                    "the closed-form Hessian; print the predicted and observed phase and the groups' anti-phase "
                    "oscillation, and draw the figures.")
    lp.add_argument("--alpha", type=float, default=4.0, help="opposing feature magnitude (default 4; 0 removes it)")
    lp.add_argument("--lr", type=float, default=0.15, help="step size (default 0.15)")
    lp.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    lp.add_argument("--seed", type=int, default=0, help="seed of the data and the initialisation (default 0)")
    lp.add_argument("--optimizer", choices=("gd", "adam"), default="gd", help="optimiser (default gd)")
    lp.add_argument("--signal", type=float, default=0.05, help="genuine signal magnitude (default 0.05)")
    lp.add_argument("--width", type=int, default=6, help="hidden width (default 6)")
    lp.add_argument("--out-dir", default="toy_linear", help="folder for the PNG figures (default toy_linear)")
    lp.add_argument("--phase-diagram", action="store_true",
                    help="also run the (alpha, lr) phase diagram and compare it with the prediction, ~20 s "
                         "(default: off)")
    lp.add_argument("--no-figures", action="store_true", help="print the numbers only (default: figures written)")
    lp.set_defaults(func=run)
    vp = models.add_parser(
        "valley", help="GD vs Adam vs SplitSGD in a 2-D narrow valley, drawn over its contours",
        description="Run each optimiser from the same start in a 2-D valley that is narrow across and shallow "
                    "along its floor; print how far each got along the floor and how much it bounced across, "
                    "and draw the paths over the contours.")
    vp.add_argument("--lr", type=float, default=0.019, help="step size of every optimiser (default 0.019)")
    vp.add_argument("--steps", type=int, default=100, help="steps (default 100)")
    vp.add_argument("--optimizers", default="gd,adam,splitsgd",
                    help="comma-separated, from gd, adam, splitsgd, signsgd (default gd,adam,splitsgd)")
    vp.add_argument("--out", default="valley.png", help="the PNG figure (default valley.png)")
    vp.set_defaults(func=run_valley)


def run_valley(args) -> int:
    from ..errors import ConfigError
    from ..toy.valley import Valley, default_optimizers, valley_figure, valley_summary, valley_trajectories

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    bad = [n for n in names if n not in default_optimizers()]
    if bad:
        raise ConfigError(f"unknown optimizer {bad[0]!r} for the valley; valid: {', '.join(default_optimizers())}")
    valley = Valley()
    traj = valley_trajectories(valley, names, lr=args.lr, steps=args.steps)
    fig = valley_figure(traj, valley)
    fig.savefig(args.out, dpi=100)
    for name, row in valley_summary(traj, valley).items():
        print(f"{name:10s} " + "  ".join(f"{k} {v:.3g}" for k, v in row.items()))
    print("cross_oscillation: travel across the valley beyond the net displacement, halved (0: no bounce); "
          "cross_reversals: times the motion across turns back; cross_amplitude_late: largest distance from the "
          "floor in the second half; along_progress: fraction of the way along the floor to the minimum "
          "(1: arrived); final_loss: the loss at the end; diverged: 1 if the run blew up")
    print(f"figure: {args.out}")
    return 0


def _out_dir(path: str) -> Path:
    from ..errors import ConfigError

    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out-dir {str(out)!r} cannot be created ({e.strerror}); pass a writable folder") from None
    return out


def run(args) -> int:
    import numpy as np

    from ..toy import linear as tl

    data = tl.make_data(tl.OpposingDataConfig(alpha=args.alpha, signal=args.signal, seed=args.seed))
    net = tl.NetConfig(width=args.width, seed=args.seed)
    cfg = tl.TrainConfig(lr=args.lr, steps=args.steps, optimizer=args.optimizer)
    pred = tl.predict_valley(data)
    traj = tl.train(data, net, cfg)
    n_a, n_b = data.config.group_sizes
    ratio = traj.sharpness * args.lr / 2
    window = tl.oscillation_window(traj)
    print(f"data: n={data.n} d={data.d} alpha={args.alpha:g} signal={args.signal:g} groups A={n_a} B={n_b}")
    print(f"valley: S_bal={pred.s_balanced:.4g} S_flat={pred.s_flattest:.4g} 2/lr={2 / args.lr:.4g} "
          f"lr*S_bal={args.lr * pred.s_balanced:.3f} -> predicted {pred.phase(args.lr)}")
    print(f"run ({args.optimizer}, {len(traj.loss) - 1} steps): observed {tl.classify(traj)}; "
          f"final loss {traj.loss[-1]:.5g} (A {traj.loss_a[-1]:.4g}, B {traj.loss_b[-1]:.4g}); "
          f"u_opposing {traj.u_opposing[-1]:.4g}, u_signal {traj.u_signal[-1]:.4g}")
    print(f"sharpness/(2/lr): peak {np.nanmax(ratio):.3f}, final {ratio[np.isfinite(ratio)][-1]:.3f}")
    if cfg.optimizer == "adam":
        ps = traj.precond_sharpness[np.isfinite(traj.precond_sharpness)]
        if ps.size:
            print(f"preconditioned sharpness/threshold: peak {ps.max() / cfg.threshold:.3f}, "
                  f"final {ps[-1] / cfg.threshold:.3f}")
    if window.size:
        print(f"oscillation: {window.size} steps from step {int(window[0])}, sharpness/(2/lr) there "
              f"{np.nanmedian(ratio[window]):.4f}; anti-phase correlation of the groups' loss changes "
              f"{tl.antiphase_correlation(traj, window):.3f}")
    else:
        print("oscillation: none at the edge of stability")
    out = None if args.no_figures else _out_dir(args.out_dir)
    if out is not None:
        from ..toy import figures

        figures.trajectory_figure(traj).savefig(out / "trajectory.png", dpi=120)
        figures.antiphase_figure(traj, window=window).savefig(out / "antiphase.png", dpi=120)
    if args.phase_diagram:
        alphas = np.linspace(0.0, 6.0, 13)
        lrs = np.geomspace(0.04, 2.0, 12)
        pd = tl.phase_diagram(alphas, lrs, tl.OpposingDataConfig(signal=args.signal, seed=args.seed), net)
        print(f"phase diagram ({alphas.size} alphas x {lrs.size} lrs, {pd.steps} steps): prediction matches "
              f"{100 * pd.agreement:.1f}% of cells")
        if out is not None:
            from ..toy import figures

            figures.phase_diagram_figure(pd).savefig(out / "phase_diagram.png", dpi=120)
    print("S_bal: sharpness of the balanced minimum that GD reaches from a small start (predicted phase: smooth "
          "if lr*S_bal < 2, edge of stability (eos) if < 4, else diverges); S_flat: the least sharpness of any "
          "global minimum; u_opposing, u_signal: the output weights along the opposing feature and along the "
          "genuine signal")
    if out is not None:
        print(f"figures: {out}")
    return 0
