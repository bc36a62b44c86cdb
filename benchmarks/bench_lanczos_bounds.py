"""Do Lanczos' reported error bounds hold? Seeded solves on matrices with close top eigenvalues.

Each matrix is ``Q diag(lambda) Q^T`` (seeded random orthogonal ``Q``) with top
eigenvalues ``10`` and ``10 * ratio`` (ratios 0.9, 0.99, 0.999) and a spectrum
below them of one of four shapes:

- ``dense``: dense right below the pair, down to -2 (as a trained network's
  Hessian bulk under its outliers, and the shape of the failure reported in
  issue 16);
- ``isolated pair``: the pair alone far above a bulk below ``5 * ratio``;
- ``isolated third``: a third eigenvalue at half the second, the rest below a quarter;
- ``close triple``: three at ``10``, ``10 ratio``, ``10 ratio^2``, alone above a
  bulk below half the third (a cluster larger than the default block of ``k + 2``
  columns when ``k = 2``, and as large as it when ``k = 1``).

Every solve (``oppsig.curvature.lanczos`` at its default settings: a random
block of ``k + 2`` columns seeded per solve, the eigenvalue criterion) is
compared with the exact eigenvalues: a *miss* is a solve whose true error
``|theta_i - lambda_i|`` exceeds its reported bound (plus 1e-12 relative for
``eigvalsh``'s rounding). Printed per shape, ratio, k and tolerance: misses /
solves, the worst error / bound, median and largest products (columns
multiplied), the median and largest number of columns the block grew by, solves
not converged.
``--block 1`` runs single-vector Lanczos (the solver before the block one),
which cannot resolve an isolated pair: its rows show the failure the block removes.

Usage:
    python benchmarks/bench_lanczos_bounds.py                        # 70 solves per cell, k = 1 and 2
    python benchmarks/bench_lanczos_bounds.py --seeds 10 --d 100     # quick
    python benchmarks/bench_lanczos_bounds.py --block 1 --ks 1       # single-vector Lanczos
    python benchmarks/bench_lanczos_bounds.py --block 2 --ks 1 --shapes "close triple" --max-growth 0   # no growth
    python benchmarks/bench_lanczos_bounds.py --warm 0.01            # warm starts from a nearby matrix's solve
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import importlib

import torch

L = importlib.import_module("oppsig.curvature.lanczos")  # the module (the package exports the function by that name)
LB = importlib.import_module("oppsig.curvature.bounds")
W = importlib.import_module("oppsig.curvature.results")

F64 = torch.float64
RATIOS = (0.9, 0.99, 0.999)


SHAPES = ("dense", "isolated pair", "isolated third", "close triple")


def matrix(shape: str, ratio: float, seed: int, d: int, top: float = 10.0):
    """``(A, eigenvalues descending)`` of one test matrix."""
    g = torch.Generator().manual_seed(seed)
    second = ratio * top
    head = [top, second]
    if shape == "dense":
        rest = second - (second + 2.0) * torch.rand(d - 2, generator=g, dtype=F64) ** 2
    elif shape == "isolated pair":
        rest = 0.5 * second - (0.5 * second + 2.0) * torch.rand(d - 2, generator=g, dtype=F64) ** 2
    elif shape == "isolated third":
        rest = torch.cat([torch.tensor([0.5 * second], dtype=F64),
                          0.25 * second * torch.rand(d - 3, generator=g, dtype=F64)])
    elif shape == "close triple":
        third = ratio * second
        head.append(third)
        rest = 0.5 * third - (0.5 * third + 2.0) * torch.rand(d - 3, generator=g, dtype=F64) ** 2
    else:
        raise SystemExit(f"unknown shape {shape!r}; pass one of {', '.join(SHAPES)}")
    ev = torch.cat([torch.tensor(head, dtype=F64), rest])
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return Q @ torch.diag(ev) @ Q.T, ev.sort(descending=True).values


def nearby(A: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """``A + E``, ``E`` a seeded symmetric Gaussian matrix of spectral norm ``size``."""
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(A.shape, generator=g, dtype=F64)
    E = (E + E.T) / 2
    return A + size * E / torch.linalg.matrix_norm(E, 2)


def sweep(shape: str, ratio: float, k: int, tol: float, seeds, d: int, criterion: str, block: int | None,
          warm: float = 0.0) -> dict:
    over, work, blocks, misses, unconv = [], [], [], 0, 0
    for s in seeds:
        A, ev = matrix(shape, ratio, s, d)
        v0 = None
        if warm > 0:  # start from the block of a solve of a nearby matrix (a previous step's, a presample's)
            prev = L.lanczos(nearby(A, warm, 20_000 + s), k=k, tol=tol, max_iter=d, seed=10_000 + s,
                             criterion=criterion, block=block)
            v0 = W.warm_start(prev)
        r = L.lanczos(A, k=k, tol=tol, max_iter=d, v0=v0, seed=10_000 + s, criterion=criterion, block=block)
        err = (r.eigenvalues - ev[:k]).abs()
        ratio_ = float((err / (r.error_bounds + 1e-12 * float(ev[0]))).max())
        over.append(ratio_)
        misses += ratio_ > 1
        unconv += not r.converged
        work.append(r.num_matvecs)
        blocks.append(r.ritz_block.shape[1] - k - 1)  # columns the block grew by
    return {"solves": len(over), "misses": misses, "worst": max(over), "med": statistics.median(work),
            "max": max(work), "unconverged": unconv, "block": statistics.median(blocks), "block_max": max(blocks)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=200, help="matrix size")
    ap.add_argument("--seeds", type=int, default=70, help="solves per shape, ratio, k and tolerance")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--tols", default="1e-3")
    ap.add_argument("--ks", default="1,2")
    ap.add_argument("--block", type=int, default=None, help="first block size (default: the solver's, k + 2)")
    ap.add_argument("--max-growth", type=int, default=L.MAX_GROWTH,
                    help=f"MAX_GROWTH: most columns added to a block whose last Ritz value lies in the wanted cluster "
                         f"(default {L.MAX_GROWTH}; 0 turns the growth off)")
    ap.add_argument("--warm", type=float, default=0.0,
                    help="warm starts: each solve starts from the block of a solve of A + E, ||E|| = this "
                         "(0: random starts)")
    ap.add_argument("--criterion", default="eigenvalue", choices=LB.CRITERIA)
    ap.add_argument("--confirm", type=float, default=LB.GAP_CONFIRM,
                    help=f"GAP_CONFIRM: a gap is used once the next Ritz residual is at most this fraction of it "
                         f"(default {LB.GAP_CONFIRM})")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    LB.GAP_CONFIRM = args.confirm
    L.MAX_GROWTH = args.max_growth
    blk = "k + 2 (default)" if args.block is None else str(args.block)
    if args.warm > 0:
        blk = f"warm: the block of a solve of A + E, ||E|| = {args.warm:g} (products of the warm solve alone)"
    print(f"Lanczos error bounds, {args.criterion} criterion, first block {blk}, growth up to {args.max_growth}, "
          f"GAP_CONFIRM {args.confirm:g}, "
          f"d={args.d}, torch {torch.__version__}")
    print(f"{'shape':<16}{'ratio':>7}{'k':>3}{'tol':>8}{'misses':>12}{'worst err/bound':>17}{'products med/max':>18}"
          f"{'grown med/max':>15}{'unconverged':>13}")
    t0 = time.perf_counter()
    totals: dict[tuple[str, int], list[int]] = {}
    for shape in args.shapes.split(","):
        for k in (int(x) for x in args.ks.split(",")):
            for tol in (float(x) for x in args.tols.split(",")):
                for ratio in RATIOS:
                    r = sweep(shape, ratio, k, tol, range(args.seeds), args.d, args.criterion, args.block,
                              args.warm)
                    t = totals.setdefault((shape, k), [0, 0, 0.0])
                    t[0] += r["misses"]
                    t[1] += r["solves"]
                    t[2] = max(t[2], r["worst"])
                    print(f"{shape:<16}{ratio:>7g}{k:>3}{tol:>8.0e}{r['misses']:>6}/{r['solves']:<5}{r['worst']:>17.3g}"
                          f"{r['med']:>10g}/{r['max']:<7}{r['block']:>9g}/{r['block_max']:<5}{r['unconverged']:>13}",
                          flush=True)
    print("\nmiss rate by shape and k:")
    for (shape, k), (m, n, w) in totals.items():
        print(f"  {shape:<16} k={k}: {m}/{n} ({100 * m / n:.1f}%), worst error / bound {w:.3g}")
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
