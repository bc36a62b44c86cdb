"""Cost of sharpness measurements on fc-tanh 3072-200-200-10, MSE (or ``--loss ce``), the first n CIFAR-10 images.

After ``--steps`` full-batch GD steps (seeded), one run measures:

1. the time of one full-batch gradient, and of one Hessian-vector product in
   gradients: double backprop (``rev_rev``) rebuilding the gradient's graph for
   every product, the same with the graph cached (oppsig's default for one
   physical batch), blocks of two and four products with the graph cached (what one
   block of the default solver costs), as a loop over the columns and as one
   batched call (``batched=True``: ``is_grads_batched``), and forward-over-reverse
   (``fwd_rev``); ``--products-only`` stops after this table;
2. the top Hessian eigenvalue from a random start to ``--tol`` (1e-3) relative
   accuracy, for ``--seeds`` seeds: oppsig (``top_hessian_eigs``: Lanczos with
   the eigenvalue-accuracy stop, started from a 10% presample), block Lanczos
   from a random block, a PyHessian-style power iteration (random start, stop
   at ``--tol`` relative change), and SciPy ``eigsh(which="LA")``, against a
   tight reference (float64 Lanczos);
3. after ``--more-steps`` further GD steps, oppsig warm-started from the cold
   solve's block of Ritz vectors (``warm_start``; the same solve timed
   ``--seeds`` times), beside cold power iterations at the same point;
4. at matched error: the same power iteration (same products, same random start
   per seed) run until its estimate's true relative error is at most oppsig's
   own error on that seed (the cold solve's at step ``--steps``, the warm
   solve's ``--more-steps`` later, power iteration started cold there), or
   ``--match-cap`` products (such a run did not reach the error: its time is a
   lower bound and is flagged). The stop looks at the float64 reference, which
   no real power iteration can: it favours power iteration.

Every oppsig solve reports an error bound (from a safe gap, see
``oppsig.curvature.lanczos``); the table gives the worst ratio of the true error
to it (<= 1: the bound held) and whether each solve converged.

Every solver gets the same Hessian-vector product engine (double backprop with
the graph cached) and its time includes building that graph; the power
iteration is also timed on products that rebuild the graph every time (as
PyHessian does over a data loader). Counts are in products over the full data
(a presample's products count by their share of the rows; a block counts each
column); medians over seeds.

Goals: HVP <= 2.5 gradients; cold >= 5x less time than power iteration at matched
error; warm >= 15x (a cold power iteration at the warm solve's error).

Usage (wall time with the defaults: 4.5 minutes on 2 idle cores, about 21 under load average 5):
    OPPSIG_DATA=/path/to/data python benchmarks/bench_sharpness.py            # n=5000, 200 steps
    OPPSIG_DATA=/path/to/data python benchmarks/bench_sharpness.py --n 1000 --steps 20 --seeds 2   # quick
    OPPSIG_DATA=/path/to/data python benchmarks/bench_sharpness.py --loss ce --lr 0.1 --steps 400   # cross-entropy
"""

from __future__ import annotations

import argparse
import math
import statistics
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
    top_hessian_eigs,
    warm_start,
)
from oppsig.curvature.basis import dot64, start_vector
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


def sync() -> None:
    """Wait for queued GPU work, so that wall times cover it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved_min_times(fns: dict, reps: int) -> dict:
    """Fastest of ``reps`` timings of each function, run in turn (robust to load from other processes)."""
    for fn in fns.values():
        fn()  # warm-up
    best = {k: math.inf for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def print_products(times: dict, t_grad: float, reps: int) -> None:
    """The table of part 1: seconds and gradients per product, and per column of a block."""
    print(f"\nfull-batch gradient: {t_grad:.3f} s (fastest of {reps}, interleaved with the HVPs)")
    print(f"{'HVP':<44}{'seconds':>10}{'gradients':>11}{'per column':>12}")
    labels = {"rev_rev": ("rev_rev (graph rebuilt per product)", 1), "build": ("building the cached graph", 1),
              "rev_rev cached": ("rev_rev, graph cached", 1),
              "block 2": ("a block of 2, graph cached, loop", 2),
              "block 2, one call": ("the same, one batched call", 2),
              "block 4": ("a block of 4, graph cached, loop", 4),
              "block 4, one call": ("the same, one batched call", 4),
              "fwd_rev": ("fwd_rev", 1)}
    for k, (label, cols) in labels.items():
        print(f"{label:<44}{times[k]:>10.3f}{times[k] / t_grad:>11.2f}{times[k] / t_grad / cols:>12.2f}")
    for b in (2, 4):
        ratio = times[f"block {b}, one call"] / times[f"block {b}"]
        print(f"  block of {b}: one batched call / loop = {ratio:.2f}x time")


def timed(fn):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def to_accuracy(history, target: float, tol: float):
    """Products until the estimate first lies within ``tol`` of ``target`` (None: never)."""
    for i, h in enumerate(history):
        if abs(h - target) <= tol * abs(target):
            return i + 1
    return None


class Runs:
    """Per-seed results of one solver: work (full products), seconds, relative error."""

    def __init__(self, name: str):
        self.name, self.work, self.secs, self.errs, self.reached = name, [], [], [], []
        self.over, self.conv = [], []  # true error / claimed bound; converged

    def add(self, work: float, secs: float, err: float, reached="-", result=None, target=None):
        self.work.append(work)
        self.secs.append(secs)
        self.errs.append(err)
        self.reached.append(reached)
        if result is not None and result.error_bounds is not None:
            self.over.append(abs(result.top - target) / max(float(result.error_bounds[0]), 1e-300))
            self.conv.append(bool(result.converged))

    def med(self, attr: str) -> float:
        return statistics.median(getattr(self, attr))

    def row(self) -> str:
        rng = f"{min(self.work):g}-{max(self.work):g}"
        tracked = [r for r in self.reached if r != "-"]
        if not tracked:
            acc = "-"
        elif any(r is None for r in tracked):
            acc = f"never {sum(r is None for r in tracked)}/{len(tracked)}"
        else:
            acc = f"{statistics.median(tracked):g}"
        bound = f"{max(self.over):.2g}" if self.over else "-"
        conv = f"{sum(self.conv)}/{len(self.conv)}" if self.conv else "-"
        return (f"{self.name:<44}{self.med('work'):>7.1f}{rng:>10}{self.med('secs'):>8.2f}"
                f"{self.med('errs'):>11.1e}{max(self.errs):>11.1e}{acc:>11}{bound:>11}{conv:>6}")


class Reached(Exception):
    """Raised by :class:`StopAtError` at the first estimate within the error asked."""


class StopAtError(HessianOperator):
    """The Hessian, ending a power iteration at its first estimate within ``err`` (relative) of ``target``.

    ``power_iteration`` multiplies its current unit vector v and takes ``dot64(v, Hv)`` as its estimate; this
    operator computes the same quotient after each product (one dot product more) and raises :class:`Reached`
    once it is close enough to the reference ``target``, which no real power iteration knows.
    """

    def __init__(self, hvp, target: float, err: float):
        super().__init__(hvp)
        self.target, self.err, self.products, self.estimate = target, err, 0, math.nan

    def _matvec(self, v):
        w = super()._matvec(v)
        self.products += 1
        self.estimate = dot64(v, w)
        if abs(self.estimate - self.target) <= self.err * abs(self.target):
            raise Reached
        return w


def power_to_error(make, target: float, err: float, seed: int, cap: int):
    """Power iteration from ``seed``'s random start until within ``err`` of ``target`` (at most ``cap`` products).

    ``make()`` builds the HVP engine (timed, as for every solver). Returns (products, seconds, relative error,
    whether it reached ``err``).
    """
    sync()
    t = time.perf_counter()
    op = StopAtError(make(), target, err)
    try:
        power_iteration(op, tol=0.0, max_iter=cap, seed=seed)
        reached = False
    except Reached:
        reached = True
    sync()
    return op.products, time.perf_counter() - t, abs(op.estimate - target) / abs(target), reached


def matched_row(runs: Runs, reached: list) -> str:
    """The row of a matched-error power iteration, flagged when a run hit the cap (its time a lower bound)."""
    capped = len(reached) - sum(reached)
    if capped:
        runs.name += f" [{capped} capped: >=]"
    return runs.row()


HEADER = (f"{'solver (median over seeds)':<44}{'HVPs':>7}{'range':>10}{'wall s':>8}{'med err':>11}"
          f"{'max err':>11}{'HVPs to tol':>11}{'err/bound':>11}{'conv':>6}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="first n CIFAR-10 training images")
    ap.add_argument("--steps", type=int, default=200, help="GD steps before the measurements")
    ap.add_argument("--more-steps", type=int, default=10, help="GD steps before the warm-started measurement")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--loss", default="mse", choices=("mse", "ce"), help="training loss (and the Hessian's)")
    ap.add_argument("--tol", type=float, default=1e-3, help="accuracy asked of every solver")
    ap.add_argument("--ref-tol", type=float, default=1e-8, help="relative residual of the float64 reference")
    ap.add_argument("--max-iter", type=int, default=500, help="most HVPs of any solver")
    ap.add_argument("--seeds", type=int, default=7, help="random starts per solver")
    ap.add_argument("--match-cap", type=int, default=2000,
                    help="most products of the power iteration run to oppsig's error")
    ap.add_argument("--presample", type=float, default=0.1, help="oppsig's cold-start presample fraction")
    ap.add_argument("--reps", type=int, default=5, help="timing repetitions of gradient and HVP")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (products, solvers and data on that device)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--products-only", action="store_true", help="only the gradient and product costs (part 1)")
    ap.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (default: $OPPSIG_DATA)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from oppsig.data import cifar10

    try:
        ds = cifar10(args.data_dir, n=args.n)
    except DataNotFoundError as e:
        print(f"skipped: CIFAR-10 not found ({e}); set OPPSIG_DATA or pass --data-dir")
        return 0
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = build_model("mlp", (3, 32, 32), 10, widths=(200, 200), activation="tanh").to(dev)
    loss_fn = get_loss(args.loss)
    batches = make_batches(ds.x.to(dev), ds.y.to(dev), None)
    n = len(ds)
    d = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"fc-tanh 3072-200-200-10 (d={d}), {args.loss.upper()}, CIFAR-10 n={n}, one physical batch, "
          f"torch {torch.__version__}, {where}, seed {args.seed}, {args.seeds} solver seeds")
    loss, t_gd = timed(lambda: gd_steps(model, batches, loss_fn, args.lr, args.steps, n))
    print(f"GD: {args.steps} steps at lr {args.lr} in {t_gd:.1f} s, loss {loss:.4f}")

    def hvp(cache=True, dtype=None, batched="auto"):
        return make_hvp(model, batches, loss_fn, method="rev_rev", cache_graph=cache, dtype=dtype, batched=batched)

    # 1: gradient and HVP costs ------------------------------------------------------
    v = start_vector(d, None, args.seed, torch.float32, dev)
    cached, one_call = hvp(True, batched=False), hvp(True, batched=True)
    cached.matvec(v)  # builds the graph
    one_call.matvec(v)
    v2, v4 = torch.stack([v, v.flip(0)], dim=1), torch.stack([v, v.flip(0), v.roll(1), -v], dim=1)
    fns = {
        "grad": lambda: loss_and_gradient(model, batches, loss_fn),
        "rev_rev": lambda: hvp(False).matvec(v),
        "build": lambda: hvp(True)._build_graph(),
        "rev_rev cached": lambda: cached.matvec(v),
        "block 2": lambda: cached.matmat(v2),
        "block 2, one call": lambda: one_call.matmat(v2),
        "block 4": lambda: cached.matmat(v4),
        "block 4, one call": lambda: one_call.matmat(v4),
        "fwd_rev": lambda: make_hvp(model, batches, loss_fn, method="fwd_rev").matvec(v),
    }
    times = interleaved_min_times(fns, args.reps)
    t_grad = times["grad"]
    cached.release()
    one_call.release()
    if args.products_only:
        print_products(times, t_grad, args.reps)
        return 0

    # 2: cold top eigenvalue ----------------------------------------------------------
    ref, t_ref = timed(lambda: lanczos(HessianOperator(hvp(True, torch.float64)), k=2, tol=args.ref_tol,
                                       max_iter=400, seed=args.seed + 1000))
    lam = ref.top

    def rel(x, target):
        return abs(x - target) / abs(target)

    def cold_runs(target, seeds, with_extras: bool, match=None):
        """Cold solves per seed; ``match``: the errors the matched power iterations run to (default: oppsig's)."""
        ours, plain, power, power_nc = (Runs(f"oppsig cold (Lanczos, {args.presample:g} presample)"),
                                        Runs("block Lanczos, random block"), Runs("power iteration"),
                                        Runs("power iteration, graph rebuilt per HVP"))
        matched, reached = Runs("power iteration to oppsig's error, ref. stop"), []
        first = None
        for i, s in enumerate(seeds):
            r, t = timed(lambda: top_hessian_eigs(hvp(), tol=args.tol, max_iter=args.max_iter, seed=s,
                                                  presample=args.presample))
            ours.add(r.work, t, rel(r.top, target), result=r, target=target)
            first = first or r
            k, t, e, ok = power_to_error(hvp, target, ours.errs[-1] if match is None else match[i], s, args.match_cap)
            matched.add(k, t, e)
            reached.append(ok)
            p, t = timed(lambda: power_iteration(HessianOperator(hvp()), tol=args.tol, max_iter=args.max_iter,
                                                 seed=s))
            power.add(p.work, t, rel(p.top, target), to_accuracy(p.history, target, args.tol), result=p, target=target)
            if with_extras:
                r, t = timed(lambda: top_hessian_eigs(hvp(), tol=args.tol, max_iter=args.max_iter, seed=s,
                                                      presample=0.0))
                plain.add(r.work, t, rel(r.top, target), to_accuracy(r.history, target, args.tol), result=r,
                          target=target)
                p, t = timed(lambda: power_iteration(HessianOperator(hvp(False)), tol=args.tol,
                                                     max_iter=args.max_iter, seed=s))
                power_nc.add(p.work, t, rel(p.top, target))
        return ours, plain, power, power_nc, first, (matched, reached)

    seeds = range(args.seed, args.seed + args.seeds)
    ours, plain, power, power_nc, cold0, (pmatch, preached) = cold_runs(lam, seeds, True)

    from scipy.sparse.linalg import eigsh

    op = HessianOperator(hvp())
    sop = op.to_scipy()
    v0 = start_vector(op.dim, None, args.seed, torch.float64, torch.device("cpu")).numpy()  # SciPy works on the CPU
    (w_e, _), t_eigsh = timed(lambda s=sop: eigsh(s, k=1, which="LA", tol=args.tol, v0=v0, maxiter=args.max_iter))
    eig = Runs(f"SciPy eigsh LA (tol {args.tol:g}, one seed)")
    eig.add(op.hvp.num_hvps, t_eigsh, rel(float(w_e[0]), lam))
    del op, sop

    # 3: warm start after more GD steps --------------------------------------------------
    gd_steps(model, batches, loss_fn, args.lr, args.more_steps, n)
    ref2, t_ref2 = timed(lambda: lanczos(HessianOperator(hvp(True, torch.float64)), k=2, tol=args.ref_tol,
                                         max_iter=400, v0=ref.eigenvectors))
    lam2 = ref2.top
    warm = Runs("oppsig warm (previous block of Ritz vectors)")
    for _ in range(args.seeds):  # deterministic: the same solve, timed again (one timing is at the mercy of load)
        w, t = timed(lambda: top_hessian_eigs(hvp(), tol=args.tol, max_iter=args.max_iter, v0=warm_start(cold0)))
        warm.add(w.work, t, rel(w.top, lam2), to_accuracy(w.history, lam2, args.tol), result=w, target=lam2)
    _, _, power2, _, _, (pmatch2, preached2) = cold_runs(lam2, range(args.seed + 100, args.seed + 100 + args.seeds),
                                                         False, match=warm.errs)
    power2.name = "power iteration, cold"
    pmatch2.name = "power, cold, to the warm error, ref. stop"

    # report -------------------------------------------------------------------------------
    print_products(times, t_grad, args.reps)

    gap_true = lam - float(ref.eigenvalues[1])
    print(f"\nstep {args.steps}: top eigenvalues {lam:.4f}, {float(ref.eigenvalues[1]):.4f} (2/lr = "
          f"{gd_threshold(args.lr):.1f}); reference: {ref.num_matvecs} float64 HVPs, {t_ref:.1f} s, "
          f"residual {float(ref.relative_residuals[0]):.1e}")
    print(HEADER)
    for r in (ours, plain, power, power_nc, eig):
        print(r.row())
    print(matched_row(pmatch, preached))
    print(f"\nstep {args.steps + args.more_steps}: top eigenvalue {lam2:.4f} (moved {rel(lam2, lam):.1e}); "
          f"reference {ref2.num_matvecs} HVPs, {t_ref2:.1f} s")
    print(HEADER)
    for r in (warm, power2):
        print(r.row())
    print(matched_row(pmatch2, preached2))

    cold_hvp = power.med("work") / ours.med("work")
    cold_sec = power.med("secs") / ours.med("secs")
    better = max(ours.errs) < min(power.errs)
    err_ratio = statistics.median(power.errs) / statistics.median(ours.errs)
    warm_hvp = power2.med("work") / warm.med("work")
    warm_sec = power2.med("secs") / warm.med("secs")
    print("\nratios (medians)")
    print(f"  HVP cost: {times['rev_rev'] / t_grad:.2f} gradients rebuilt, {times['rev_rev cached'] / t_grad:.2f} "
          f"cached (target <= 2.5)")
    print(f"  cold: power / oppsig = {cold_hvp:.1f}x HVPs, {cold_sec:.1f}x seconds (goal >= 5), "
          f"{err_ratio:.0f}x smaller median error (goal >= 20); "
          f"vs power with rebuilt graphs {power_nc.med('secs') / ours.med('secs'):.1f}x seconds; "
          f"worst oppsig error {max(ours.errs):.1e} < best power error {min(power.errs):.1e}: {better}")
    print(f"  eigsh at tol {args.tol:g} / oppsig cold = {eig.med('secs') / ours.med('secs'):.1f}x seconds, "
          f"{eig.med('work') / ours.med('work'):.1f}x HVPs")
    held = max(ours.over + warm.over + plain.over) if ours.over else float("nan")
    print(f"  bounds: worst true error / claimed bound over oppsig's solves {held:.2g} (<= 1: held); "
          f"converged {sum(ours.conv + warm.conv + plain.conv)}/{len(ours.conv + warm.conv + plain.conv)}")
    print(f"  cold: random-start Lanczos / oppsig = {plain.med('work') / ours.med('work'):.1f}x HVPs; "
          f"power / random-start Lanczos = {power.med('work') / plain.med('work'):.1f}x HVPs")
    print(f"  warm: {warm.med('work'):g} HVPs, error {warm.errs[0]:.1e}; cold power / warm = "
          f"{warm_hvp:.1f}x HVPs, {warm_sec:.1f}x seconds (goal >= 15)")
    for label, m, ok, o in (("cold", pmatch, preached, ours), ("warm", pmatch2, preached2, warm)):
        capped = len(ok) - sum(ok)
        flag = f"; {capped}/{len(ok)} capped at {args.match_cap} products: a lower bound" if capped else ""
        print(f"  matched error, {label}: power (to oppsig's error, reference stop) / oppsig = "
              f"{m.med('secs') / o.med('secs'):.1f}x seconds (goal >= {5 if label == 'cold' else 15}), "
              f"{m.med('work') / o.med('work'):.1f}x HVPs; power {m.med('work'):g} "
              f"({min(m.work):g}-{max(m.work):g}) HVPs in {m.med('secs'):.2f} s, oppsig {o.med('work'):g} HVPs in "
              f"{o.med('secs'):.2f} s{flag}")
    est = "unknown" if cold0.gap is None else f"{cold0.gap:.3f}"
    print(f"  (true gap at step {args.steps}: {gap_true:.3f}; oppsig's safe lower bound {est})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
