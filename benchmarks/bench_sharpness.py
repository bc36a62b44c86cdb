"""Cost of sharpness measurements on fc-tanh 3072-200-200-10, MSE, the first n CIFAR-10 images.

After ``--steps`` full-batch GD steps (seeded), one run measures:

1. the time of one full-batch gradient;
2. the cost of one Hessian-vector product in gradients, for ``rev_rev`` and ``fwd_rev``;
3. the top Hessian eigenvalue from a random start to ``--tol`` (1e-3) relative
   accuracy: Lanczos, a PyHessian-style power iteration (stop at ``--tol``
   relative change) and SciPy ``eigsh(which="LA")`` on double-backprop HVPs,
   against a tight reference (float64 Lanczos at ``--ref-tol``);
4. after ``--more-steps`` further GD steps, Lanczos warm-started from the
   previous eigenvector, beside a cold power iteration at the same point.

Targets: HVP <= 2.5 gradients; cold Lanczos >= 3x faster than power iteration at
better accuracy; warm Lanczos <= 4 HVPs and >= 10x faster than a cold power iteration.

Usage:
    OPPSIG_DATA=/path/to/data python benchmarks/bench_sharpness.py            # n=5000, 200 steps
    OPPSIG_DATA=/path/to/data python benchmarks/bench_sharpness.py --n 500 --steps 20   # quick
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from oppsig.curvature import (
    HessianOperator,
    gd_threshold,
    lanczos,
    loss_and_gradient,
    make_batches,
    make_hvp,
    power_iteration,
)
from oppsig.curvature.lanczos import start_vector
from oppsig.errors import DataNotFoundError
from oppsig.losses import get_loss
from oppsig.models import build_model


def gd_steps(model, batches, loss_fn, lr: float, steps: int, n: int) -> float:
    """Plain full-batch gradient descent on the model's parameters; returns the last loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss_val = math.nan
    for _ in range(steps):
        grads = [torch.zeros_like(p) for p in params]
        total = 0.0
        for x, y in batches:
            loss = loss_fn(model(x), y).sum() / n
            for acc, g in zip(grads, torch.autograd.grad(loss, params)):
                acc.add_(g)
            total += float(loss.detach())
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
        loss_val = total
        if not math.isfinite(loss_val):
            raise SystemExit(f"GD diverged (loss {loss_val}); lower --lr")
    return loss_val


def interleaved_min_times(fns: dict, reps: int) -> dict:
    """Fastest of ``reps`` timings of each function, run in turn (robust to load from other processes)."""
    for fn in fns.values():
        fn()  # warm-up
    best = {k: math.inf for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def power_until(op, v, target: float, tol: float, max_extra: int) -> int | None:
    """Continue power iteration from ``v``; products until the estimate is within ``tol`` of ``target``.

    Power iteration keeps no state but the vector, so this is the same run as if
    it had not stopped; the first product recomputes the last estimate and is not counted.
    """
    for i in range(max_extra + 1):
        w = op.matvec(v)
        lam = float(torch.dot(v.double(), w.double()))
        if abs(lam - target) <= tol * abs(target):
            return i
        v = w / w.norm()
    return None


class Clock:
    """Wall and process CPU seconds of a call (CPU time is less affected by other processes' load)."""

    def __init__(self, wall: float, cpu: float):
        self.wall, self.cpu = wall, cpu

    def __truediv__(self, other: "Clock") -> str:
        return f"{self.wall / other.wall:.1f}x wall, {self.cpu / other.cpu:.1f}x CPU"


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, Clock(time.perf_counter() - t, time.process_time() - c)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="first n CIFAR-10 training images")
    ap.add_argument("--steps", type=int, default=200, help="GD steps before the measurements")
    ap.add_argument("--more-steps", type=int, default=10, help="GD steps before the warm-started measurement")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--physical-batch-size", type=int, default=0, help="rows per forward pass (0: all n)")
    ap.add_argument("--tol", type=float, default=1e-3, help="accuracy asked of every solver")
    ap.add_argument("--ref-tol", type=float, default=1e-8, help="relative residual of the float64 reference")
    ap.add_argument("--max-iter", type=int, default=1000, help="most HVPs of power iteration / eigsh")
    ap.add_argument("--max-extra", type=int, default=60,
                    help="most extra HVPs of power iteration run on until within --tol of the reference")
    ap.add_argument("--reps", type=int, default=5, help="timing repetitions of gradient and HVP")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (default: $OPPSIG_DATA)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from oppsig.data import cifar10

    try:
        ds = cifar10(args.data_dir, n=args.n)
    except DataNotFoundError as e:
        print(f"skipped: CIFAR-10 not found ({e}); set OPPSIG_DATA or pass --data-dir")
        return 0
    torch.manual_seed(args.seed)
    model = build_model("mlp", (3, 32, 32), 10, widths=(200, 200), activation="tanh")
    loss_fn = get_loss("mse")
    batches = make_batches(ds.x, ds.y, args.physical_batch_size or None)
    n = len(ds)
    d = sum(p.numel() for p in model.parameters())
    print(f"fc-tanh 3072-200-200-10 (d={d}), MSE, CIFAR-10 n={n}, physical batch {batches[0][0].shape[0]}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, seed {args.seed}")

    loss, t_gd = timed(lambda: gd_steps(model, batches, loss_fn, args.lr, args.steps, n))
    print(f"GD: {args.steps} steps at lr {args.lr} in {t_gd.wall:.1f} s, loss {loss:.4f}")

    # 1-2: gradient and HVP costs ------------------------------------------------
    fns = {"grad": lambda: loss_and_gradient(model, batches, loss_fn)}
    for method in ("rev_rev", "fwd_rev"):
        h = make_hvp(model, batches, loss_fn, method=method)
        v = start_vector(h.layout.dim, None, args.seed, h.dtype, h.device)
        fns[method] = lambda h=h, v=v: h.matvec(v)
    times = interleaved_min_times(fns, args.reps)
    t_grad = times.pop("grad")
    hvp_cost = times

    # 3: cold top eigenvalue -----------------------------------------------------
    op = HessianOperator(make_hvp(model, batches, loss_fn, method="rev_rev"))
    cold, t_cold = timed(lambda: lanczos(op, k=1, tol=args.tol, max_iter=200, seed=args.seed))
    power, t_power = timed(lambda: power_iteration(op, tol=args.tol, max_iter=args.max_iter, seed=args.seed))

    from scipy.sparse.linalg import eigsh

    sop = op.to_scipy()
    v0 = start_vector(op.dim, None, args.seed, torch.float64, torch.device("cpu")).numpy()
    before = op.num_matvecs
    (w_e, _), t_eigsh = timed(lambda: eigsh(sop, k=1, which="LA", tol=args.tol, v0=v0, maxiter=args.max_iter))
    n_eigsh = op.num_matvecs - before

    op64 = HessianOperator(make_hvp(model, batches, loss_fn, method="rev_rev", dtype=torch.float64))
    ref, t_ref = timed(lambda: lanczos(op64, k=1, tol=args.ref_tol, max_iter=300, seed=args.seed + 1))
    lam = ref.top

    def rel(x):
        return abs(x - lam) / abs(lam)

    rows = [
        ("reference: Lanczos float64", ref, t_ref, None),
        (f"Lanczos cold (residual {args.tol:g})", cold, t_cold, lam),
        (f"power iteration ({args.tol:g} change)", power, t_power, lam),
        (f"SciPy eigsh LA (tol {args.tol:g})", (n_eigsh, float(w_e[0])), t_eigsh, lam),
    ]

    # 4: warm-started tracking after more GD steps ---------------------------------
    gd_steps(model, batches, loss_fn, args.lr, args.more_steps, n)
    op2 = HessianOperator(make_hvp(model, batches, loss_fn, method="rev_rev"))
    warm, t_warm = timed(lambda: lanczos(op2, k=1, tol=args.tol, max_iter=200, v0=cold.eigenvectors))
    power2, t_power2 = timed(lambda: power_iteration(op2, tol=args.tol, max_iter=args.max_iter, seed=args.seed + 2))
    op2_64 = HessianOperator(make_hvp(model, batches, loss_fn, method="rev_rev", dtype=torch.float64))
    # the reference is started from the previous reference's vector; its own residual certifies it
    ref2, t_ref2 = timed(lambda: lanczos(op2_64, k=1, tol=args.ref_tol, max_iter=300, v0=ref.eigenvectors))
    lam2 = ref2.top
    step2 = args.steps + args.more_steps
    rows += [
        (f"reference at step {step2}", ref2, t_ref2, None),
        (f"Lanczos warm at step {step2}", warm, t_warm, lam2),
        (f"power iteration cold at step {step2}", power2, t_power2, lam2),
    ]

    def to_accuracy(r, target):
        """Products until the estimate first lies within --tol of the reference (None: never)."""
        for i, h in enumerate(r.history):
            if abs(h - target) <= args.tol * abs(target):
                return i + 1
        return None

    print(f"\nfull-batch gradient: {t_grad:.3f} s (fastest of {args.reps}, interleaved with the HVPs)")
    print(f"{'HVP method':<12}{'seconds':>10}{'gradients':>11}")
    for m, t in hvp_cost.items():
        print(f"{m:<12}{t:>10.3f}{t / t_grad:>11.2f}")
    print(f"\nsharpness at step {args.steps}: {lam:.4f} (2/lr = {gd_threshold(args.lr):.1f})")
    print(f"{'solver':<38}{'HVPs':>6}{'wall s':>8}{'CPU s':>8}{'top eigenvalue':>16}{'rel. error':>12}"
          f"{'HVPs to ' + format(args.tol, 'g'):>14}  converged")
    acc = {}
    for name, r, t, target in rows:
        if isinstance(r, tuple):  # eigsh: no history
            hv, val, reached, conv = r[0], r[1], "-", True
            err = abs(val - target) / abs(target)
        elif target is None:  # reference: relative residual in the error column
            hv, val, err, reached, conv = r.num_matvecs, r.top, float(r.relative_residuals[0]), "-", "resid"
        else:
            hv, val, conv = r.num_matvecs, r.top, r.converged
            err = abs(val - target) / abs(target)
            reached = to_accuracy(r, target)
            acc[name] = reached
            reached = "never" if reached is None else str(reached)
        print(f"{name:<38}{hv:>6d}{t.wall:>8.2f}{t.cpu:>8.2f}{val:>16.6f}{err:>12.2e}{reached:>14}  {conv}")

    def ratio(a, b):
        return "n/a" if a is None or b is None else f"{a / b:.1f}x"

    a_cold, a_pow = to_accuracy(cold, lam), to_accuracy(power, lam)
    a_warm, a_pow2 = to_accuracy(warm, lam2), to_accuracy(power2, lam2)
    if a_pow is None:  # run power iteration on until it is as accurate as asked
        extra = power_until(op, power.eigenvectors[:, 0], lam, args.tol, args.max_extra)
        a_pow = None if extra is None else power.num_matvecs + extra
    if a_pow2 is None:
        extra = power_until(op2, power2.eigenvectors[:, 0], lam2, args.tol, args.max_extra)
        a_pow2 = None if extra is None else power2.num_matvecs + extra
    print("\nratios")
    print(f"  HVP cost in gradients: rev_rev {hvp_cost['rev_rev'] / t_grad:.2f} (target <= 2.5), "
          f"fwd_rev {hvp_cost['fwd_rev'] / t_grad:.2f}")
    print(f"  cold, each solver's own stop: power / Lanczos = {t_power / t_cold}, "
          f"{power.num_matvecs / cold.num_matvecs:.1f}x HVPs (target >= 3); "
          f"error Lanczos {rel(cold.top):.1e} vs power {rel(power.top):.1e}")
    print(f"  cold, HVPs until within {args.tol:g} of the reference (power run on past its stop): "
          f"power / Lanczos = {ratio(a_pow, a_cold)} ({a_pow} / {a_cold})")
    print(f"  cold: eigsh / Lanczos = {t_eigsh / t_cold}, {n_eigsh / cold.num_matvecs:.1f}x HVPs")
    print(f"  warm: {warm.num_matvecs} HVPs to residual {args.tol:g} (target <= 4); cold power / warm = "
          f"{t_power2 / t_warm}, {power2.num_matvecs / warm.num_matvecs:.1f}x HVPs (target >= 10)")
    print(f"  warm, HVPs until within {args.tol:g} of the reference: {a_warm}; cold power: {a_pow2} "
          f"-> {ratio(a_pow2, a_warm)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
