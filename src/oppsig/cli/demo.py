"""``oppsig demo``: train, record, track sharpness, detect and report on the embedded default."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the whole pipeline in one command (CIFAR-10 if found, else synthetic data)",
        description="Train fc-tanh with full-batch GD at the edge of stability, record every example's loss at every "
                    "step, track the sharpness, detect the opposing groups, check them on the model and write the "
                    "HTML report. Uses CIFAR-10 when found (--data-dir, else $OPPSIG_DATA, else ~/.cache/oppsig), "
                    "otherwise synthetic images with two planted opposing pairs, and says which.")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py; an error if it holds none "
                                      "(default: $OPPSIG_DATA, else ~/.cache/oppsig, else synthetic data)")
    p.add_argument("--out-dir", default="runs", help="parent folder of the run directory (default runs)")
    p.add_argument("--steps", type=int,
                   help="training steps, at least 8 (default 800 on CIFAR-10, 600 on synthetic data)")
    p.add_argument("--n", type=int, help="training examples (default 5000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.demo import run_demo

    res = run_demo(args.data_dir, args.out_dir, args.steps, progress=not args.no_progress, n=args.n)
    print(f"run: {res.run_dir}")
    print(f"training: {res.train_summary}")
    if res.signals_summary:
        lines = res.signals_summary.splitlines()
        print("\n".join(lines[:12]) + ("\n  ... (full summary in the report)" if len(lines) > 12 else ""))
    if res.report:
        print(f"report: {res.report}")
    for n in res.notes:
        print(f"note: {n}")
    t = res.timings
    if t:
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in t.items() if k != "total")
        print(f"time: {t.get('total', float('nan')):.0f} s ({parts}); CPU time {res.cpu_seconds:.0f} s")
    return 0
