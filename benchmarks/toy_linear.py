"""Opposing signals in a two-layer linear network: sharpening, edge of stability, anti-phase groups, phase diagram.

From one seed, on the data model of :mod:`oppsig.toy.linear` (alpha = 4, signal 0.05):

1. GD at lr = 0.15: the opposing feature is learned first, sharpness rises to
   2/lr while the small signal is learned, then GD oscillates across the valley
   with the two groups' losses in anti-phase (target: correlation of their
   step-to-step changes <= -0.8, sharpness within 2% of 2/lr there);
2. the same run with alpha = 0 (no opposing feature): no sharpening to 2/lr, no oscillation;
3. Adam at lr = 0.01 for contrast (its preconditioned sharpness against its threshold);
4. the phase diagram over (alpha, lr): observed smooth / edge-of-stability /
   divergent runs against the prediction lr*S_bal < 2 / < 4 / >= 4.

    python benchmarks/toy_linear.py [--seed 0] [--out-dir DIR]

Runs in about a minute on one core; with --out-dir it also saves the figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from oppsig.toy import linear as tl

LR = 0.15
STEPS = 3000
ALPHAS = np.linspace(0.0, 6.0, 13)
LRS = np.geomspace(0.04, 2.0, 12)


def first(mask: np.ndarray) -> int:
    idx = np.nonzero(mask)[0]
    return int(idx[0]) if idx.size else -1


def describe_run(name: str, tr: tl.Trajectory) -> dict:
    lr = tr.config.lr
    ratio = tr.sharpness * lr / 2
    w = tl.oscillation_window(tr)
    corr = tl.antiphase_correlation(tr, w)
    cross = first(np.nan_to_num(ratio) >= 1.0)
    inc = int(np.sum(tr.loss[1:] > tr.loss[:-1] * (1 + 1e-9)))
    print(f"[{name}] phase {tl.classify(tr)}; loss {tr.loss[0]:.4f} -> {tr.loss[-1]:.4f}; "
          f"loss rose on {inc} of {len(tr.loss) - 1} steps")
    print(f"[{name}] sharpness/(2/lr): start {ratio[0]:.3f}, first >= 1 at step {cross}, "
          f"peak {np.nanmax(ratio):.3f}, end {ratio[np.isfinite(ratio)][-1]:.4f}")
    if w.size:
        print(f"[{name}] oscillation: {w.size} steps from step {int(w[0])} to {int(w[-1])}; "
              f"sharpness/(2/lr) there: median {np.median(ratio[w]):.4f} "
              f"(range {ratio[w].min():.4f}..{ratio[w].max():.4f})")
        print(f"[{name}] anti-phase correlation of the groups' loss changes: {corr:.4f}")
    else:
        print(f"[{name}] oscillation: none (no step at the edge of stability)")
    return {"ratio": ratio, "window": w, "corr": corr, "cross": cross}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", help="save the figures here (PNG)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    data_cfg = tl.OpposingDataConfig(seed=args.seed)
    net = tl.NetConfig(seed=args.seed)
    data = tl.make_data(data_cfg)
    pred = tl.predict_valley(data)
    n_a, n_b = data_cfg.group_sizes
    print(f"data: n={data.n} d={data.d} alpha={data_cfg.alpha} signal={data_cfg.signal} p={data_cfg.p} "
          f"groups A={n_a} (y=+1) B={n_b} (y=-1); seed {args.seed}")
    print(f"closed form: u*_signal={float(pred.u_star[tl.SIGNAL]):.3f} "
          f"u*_opposing={float(pred.u_star[tl.OPPOSING]):.4f} "
          f"Sigma_oo={pred.sigma_oo:.3f} S_bal={pred.s_balanced:.3f} S_flat={pred.s_flattest:.3f} "
          f"kappa_o(valley)={pred.kappa_opposing:.3f}")
    print(f"lr={LR}: 2/lr={2 / LR:.3f}, lr*S_bal={LR * pred.s_balanced:.3f} -> predicted {pred.phase(LR)}")

    # 1. the run
    t0 = time.perf_counter()
    tr = tl.train(data, net, tl.TrainConfig(lr=LR, steps=STEPS))
    us, uo = tr.u_signal, tr.u_opposing
    print(f"\n[alpha=4] {STEPS} GD steps in {time.perf_counter() - t0:.1f} s")
    print(f"[alpha=4] opposing feature first: u_opposing reaches 90% of its final {uo[-1]:.4f} at step "
          f"{first(uo >= 0.9 * uo[-1])}, u_signal reaches 10% of its final {us[-1]:.3f} at step "
          f"{first(us >= 0.1 * us[-1])}")
    main_run = describe_run("alpha=4", tr)
    w = main_run["window"]
    if w.size:
        ra, rb = mean_residuals(data, net, LR, int(w[0]))
        print(f"[alpha=4] at the start of the oscillation: mean residual A {ra:+.4f}, B {rb:+.4f} "
              "(opposite signs: each step across the valley helps one group and hurts the other)")

    # 2. control: no opposing feature
    ctrl = tl.train(tl.make_data(data_cfg, alpha=0.0), net, tl.TrainConfig(lr=LR, steps=STEPS, sharpness_every=10))
    print(f"\n[alpha=0] S_bal={tl.predict_valley(tl.make_data(data_cfg, alpha=0.0)).s_balanced:.4f}")
    ctrl_run = describe_run("alpha=0", ctrl)

    # 3. Adam for contrast
    adam = tl.train(data, net, tl.TrainConfig(lr=0.01, steps=STEPS, optimizer="adam", sharpness_every=10))
    ps = adam.precond_sharpness[np.isfinite(adam.precond_sharpness)] / adam.threshold
    print(f"\n[adam lr=0.01] phase {tl.classify(adam)}; loss {adam.loss[-1]:.4f}; preconditioned sharpness / "
          f"threshold {adam.threshold:.0f}: peak {ps.max():.3f}, end {ps[-1]:.3f}; raw sharpness end "
          f"{adam.sharpness[np.isfinite(adam.sharpness)][-1]:.3f}")

    # 4. phase diagram
    t0 = time.perf_counter()
    pd = tl.phase_diagram(ALPHAS, LRS, data_cfg, net)
    print(f"\nphase diagram: {ALPHAS.size} alphas x {LRS.size} lrs, {pd.steps} GD steps each, "
          f"{time.perf_counter() - t0:.1f} s  (s smooth, E edge of stability, d diverges)")
    print("lr:        " + " ".join(f"{x:.3g}" for x in LRS))
    for i, a in enumerate(ALPHAS):
        obs = "".join("sEd"[k] for k in pd.observed[i])
        prd = "".join("sEd"[k] for k in pd.predicted[i])
        print(f"alpha={a:3.1f} S_bal={pd.s_balanced[i]:6.2f}  observed {obs}  predicted {prd}")
    conf = np.zeros((3, 3), dtype=int)
    for o, p in zip(pd.observed.ravel(), pd.predicted.ravel()):
        conf[p, o] += 1
    print("confusion (rows predicted, columns observed: smooth, eos, diverges):")
    for name, row in zip(tl.PHASES, conf):
        print(f"  {name:9s} {row.tolist()}")
    print(f"prediction matches the observed phase in {int((pd.observed == pd.predicted).sum())}/{pd.observed.size} "
          f"cells = {100 * pd.agreement:.1f}%")
    eos_final = pd.final_sharpness_ratio[pd.observed == 1]
    print(f"edge-of-stability runs end with sharpness/(2/lr) median {np.median(eos_final):.4f} "
          f"(range {eos_final.min():.3f}..{eos_final.max():.3f})")

    # verdict
    ratio, w = main_run["ratio"], main_run["window"]
    checks = {
        "sharpening reaches 2/lr and stays within 2% of it while oscillating":
            main_run["cross"] > 0 and w.size > 0 and abs(np.median(ratio[w]) - 1) < 0.02,
        "anti-phase correlation <= -0.8": w.size > 0 and main_run["corr"] <= -0.8,
        "alpha=0 removes it (no sharpening to 2/lr, no oscillation)":
            ctrl_run["cross"] < 0 and ctrl_run["window"].size == 0 and tl.classify(ctrl) == "smooth",
    }
    print()
    for k, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {k}")

    if args.out_dir:
        from oppsig.toy import figures

        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        figures.trajectory_figure(tr, title=f"GD, alpha=4, lr={LR}").savefig(out / "trajectory.png", dpi=120)
        figures.antiphase_figure(tr).savefig(out / "antiphase.png", dpi=120)
        figures.comparison_figure({"alpha=4": tr, "alpha=0": ctrl}).savefig(out / "control.png", dpi=120)
        figures.trajectory_figure(adam, title="Adam, lr=0.01").savefig(out / "adam.png", dpi=120)
        figures.phase_diagram_figure(pd).savefig(out / "phase_diagram.png", dpi=120)
        print(f"figures: {out}")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0 if all(checks.values()) else 1


def mean_residuals(data: tl.ToyData, net: tl.NetConfig, lr: float, t: int) -> tuple[float, float]:
    """Mean residual of group A and of group B after ``t`` GD steps (the run is repeated up to ``t``)."""
    short = tl.train(data, net, tl.TrainConfig(lr=lr, steps=t, sharpness_every=0))
    r = tl.predict(short.W, short.v, data.X) - data.y
    return float(r[data.groups == 0].mean()), float(r[data.groups == 1].mean())


if __name__ == "__main__":
    raise SystemExit(main())
