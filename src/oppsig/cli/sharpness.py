"""``oppsig sharpness RUN``: the top Hessian eigenvalues of a finished run at chosen steps."""

from __future__ import annotations

from ._common import add_allow_other_data

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
    p.add_argument("--max-iter", type=int, help="most Hessian-vector products per solve (default: as in training, "
                   "at least 60); a solve that needs more is printed as not converged")
    p.add_argument("--device", help="replay and measure on this device (default: the one the run was trained on; "
                   "another one is not a bit-exact replay, and says so)")
    p.add_argument("--n", type=int, help="use the first n training examples (default: as in training)")
    p.add_argument("--layerwise", action="store_true", help="also each module's diagonal Hessian block (default: off)")
    p.add_argument("--out", help="write the results to this JSON file (default: printed only)")
    add_allow_other_data(p)
    p.set_defaults(func=run)


def _bad_checkpoint(run_dir: str, e: Exception) -> Exception | None:
    """The error for a damaged kept checkpoint in terms of this command (which steps it holds up, what to
    measure instead), or None when ``e`` is about something else. The loader's own advice is about training."""
    from ..errors import StoreError
    from ..training.checkpoint import DamagedCheckpointError, list_checkpoints

    kept = list_checkpoints(run_dir)
    hit = [s for s, p in kept.items() if isinstance(e, DamagedCheckpointError) and p.name == e.path.name]
    if not hit:
        return None
    s = hit[0]
    later = [k for k in kept if k > s]
    held = f"steps {s} to {later[0] - 1}" if later else f"steps from {s} on"
    other = [k for k in kept if k != s][-2:]
    example = f" (e.g. --steps {','.join(map(str, other))})" if other else ""
    return StoreError(f"checkpoint {kept[s]} is damaged or not an oppsig checkpoint, and {held} are replayed "
                      f"from it; restore it from a backup, or measure steps replayed from another kept "
                      f"checkpoint with --steps{example}")


def run(args) -> int:
    from ..errors import StoreError
    from ..experiments.sharpness import run_curvature

    steps = None if args.steps is None else _steps(args.steps)
    from ..curvature.results import UNCONVERGED_MARK
    from ..experiments.sharpness import OPTIM_NOTE

    k = args.top_k
    eig_cols = "".join(f"{f'eig {i}':>12}{'+-':>9}" for i in range(2, k + 1))
    print(f"{'step':>7}{'sharpness':>12}{'+-':>9}{eig_cols}{'threshold':>11}{'ratio':>7}{'HVPs':>7}{'seconds':>9}",
          flush=True)

    def row(r) -> None:  # one table row per step, printed as soon as it is measured
        more = "".join(f"{x:>12.4f}{e:>9.2g}" for x, e in zip(r.eigenvalues[1:], r.error_bounds[1:]))
        more += " " * 21 * (k - len(r.eigenvalues))
        ratio = "–" if r.ratio is None else f"{r.ratio:.2f}"
        mark = "" if r.converged else f"  {UNCONVERGED_MARK}"
        print(f"{r.step:>7}{r.sharpness:>12.4f}{r.error_bounds[0]:>9.2g}{more}{r.threshold:>11.4g}{ratio:>7}"
              f"{r.hvps:>7.1f}{r.seconds:>9.1f}{mark}", flush=True)
        if r.layers:
            print(" " * 9 + "layers: " + ", ".join(
                f"{g} {v:.4g} +- {e:.2g}{'' if c else ' ' + UNCONVERGED_MARK}" for g, (v, e, c) in r.layers.items()),
                flush=True)

    try:
        res = run_curvature(args.run, steps, k=k, tol=args.tol, n=args.n, layerwise=args.layerwise,
                            max_iter=args.max_iter, device=args.device, on_step=row,
                            allow_other_data=args.allow_other_data)
    except StoreError as e:
        raise _bad_checkpoint(args.run, e) or e from None
    nxt = "" if k == 1 else f"; eig 2{'' if k == 2 else f'..{k}'}: the next eigenvalue{'s' if k > 2 else ''}"
    print(f"sharpness: top Hessian eigenvalue{nxt}; +-: its error bound; threshold: the optimiser's stability "
          "threshold; ratio: sharpness / threshold; HVPs: Hessian-vector products used")
    if any(r.preconditioned_threshold for r in res):
        print(f"(ratio –: {OPTIM_NOTE}; track it during training with curvature.preconditioned)")
    if not all(r.converged for r in res):
        print(f"{UNCONVERGED_MARK}: the solve ran out of iterations; the value is within its residual bound of "
              "some eigenvalue, not certified to --tol")
    mismatch = next((r.data_mismatch for r in res if r.data_mismatch), None)
    if mismatch is not None:
        from ..store.fingerprint import mismatch_text

        print(f"OTHER DATA: {mismatch_text(mismatch)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"run": str(args.run), "steps": [r.to_dict() for r in res],
                       **({"data_mismatch": mismatch} if mismatch else {})}, f, indent=1)
        print(f"saved: {args.out}")
    return 0
