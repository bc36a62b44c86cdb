"""``oppsig sharpness RUN``: the top Hessian eigenvalues of a finished run at chosen steps."""

from __future__ import annotations

import json


def _steps(text: str) -> list[int]:
    from ..errors import ConfigError

    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"cannot read --steps {text!r}; pass comma-separated steps, e.g. --steps 200,400") from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sharpness", help="measure the sharpness of a finished run at chosen steps (from its checkpoints)",
        description="Rebuild the model at each chosen step by replaying training exactly from the last kept "
                    "checkpoint at or before it, and measure the top Hessian eigenvalues (Lanczos) against the "
                    "optimiser's stability threshold; one table row per step.")
    p.add_argument("run", help="run directory")
    p.add_argument("--steps", help="comma-separated steps (default: every kept checkpoint)")
    p.add_argument("--top-k", type=int, default=1, help="eigenvalues per step (default 1)")
    p.add_argument("--tol", type=float, default=1e-3, help="relative accuracy of each eigenvalue (default 1e-3)")
    p.add_argument("--n", type=int, help="use the first n training examples (default: as in training)")
    p.add_argument("--layerwise", action="store_true", help="also each module's diagonal Hessian block (default: off)")
    p.add_argument("--out", help="write the results to this JSON file (default: printed only)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.sharpness import run_curvature

    steps = None if args.steps is None else _steps(args.steps)
    k = args.top_k
    eig_cols = "".join(f"{f'eig {i}':>12}" for i in range(2, k + 1))
    print(f"{'step':>7}{'sharpness':>12}{eig_cols}{'threshold':>11}{'ratio':>7}{'HVPs':>7}{'seconds':>9}", flush=True)

    def row(r) -> None:  # one table row per step, printed as soon as it is measured
        more = "".join(f"{x:>12.4f}" for x in r.eigenvalues[1:]) + " " * 12 * (k - len(r.eigenvalues))
        print(f"{r.step:>7}{r.sharpness:>12.4f}{more}{r.threshold:>11.4g}{r.sharpness / r.threshold:>7.2f}"
              f"{r.hvps:>7.1f}{r.seconds:>9.1f}", flush=True)
        if r.layers:
            print(" " * 9 + "layers: " + ", ".join(f"{g} {v:.4g}" for g, v in r.layers.items()), flush=True)

    res = run_curvature(args.run, steps, k=k, tol=args.tol, n=args.n, layerwise=args.layerwise, on_step=row)
    nxt = "" if k == 1 else f"; eig 2{'' if k == 2 else f'..{k}'}: the next eigenvalue{'s' if k > 2 else ''}"
    print(f"sharpness: top Hessian eigenvalue{nxt}; threshold: the optimiser's stability threshold; "
          "ratio: sharpness / threshold; HVPs: Hessian-vector products used")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"run": str(args.run), "steps": [r.to_dict() for r in res]}, f, indent=1)
        print(f"saved: {args.out}")
    return 0
