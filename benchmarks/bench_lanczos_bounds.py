"""Do Lanczos' reported error bounds hold? Seeded solves on matrices with close top eigenvalues.

Each matrix is ``Q diag(lambda) Q^T`` (seeded random orthogonal ``Q``) with top
eigenvalues ``10`` and ``10 * ratio`` (ratios 0.9, 0.99, 0.999) and a spectrum
below them of one of three shapes:

- ``dense``: dense right below the pair, down to -2 (as a trained network's
  Hessian bulk under its outliers, and the shape of the failure reported in
  issue 16);
- ``separated``: the pair alone far above a bulk below ``5 * ratio``;
- ``isolated third``: a third eigenvalue at half the second, the rest below a quarter.

Every solve (``oppsig.curvature.lanczos``, random start seeded per solve) is
compared with the exact eigenvalues: a *miss* is a solve whose true error
``|theta_i - lambda_i|`` exceeds its reported bound (plus 1e-12 relative for
``eigvalsh``'s rounding). Printed per shape, ratio, k and tolerance: misses /
solves, the worst error / bound, median and largest products, solves not
converged.

Single-vector Krylov methods cannot see what their space has not reached: a
pair closer together than the space can yet resolve looks like one eigenvalue
(the space holds one mixture of the two). Above a dense spectrum the gap below
the pair keeps the solver going until it resolves the pair; with the pair
isolated, the next Ritz value settles on the bulk first and the solver stops
on the mixture. The ``separated`` and ``isolated third`` rows measure that
limit; ``--k 2`` (asking for both) resolves the pair.

Usage:
    python benchmarks/bench_lanczos_bounds.py                  # 300 dense solves per tol, and the hard shapes
    python benchmarks/bench_lanczos_bounds.py --seeds 20 --d 100   # quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import importlib

import torch

L = importlib.import_module("oppsig.curvature.lanczos")  # the module (the package exports the function by that name)

F64 = torch.float64
RATIOS = (0.9, 0.99, 0.999)


def matrix(shape: str, ratio: float, seed: int, d: int, top: float = 10.0):
    """``(A, eigenvalues descending)`` of one test matrix."""
    g = torch.Generator().manual_seed(seed)
    second = ratio * top
    if shape == "dense":
        rest = second - (second + 2.0) * torch.rand(d - 2, generator=g, dtype=F64) ** 2
    elif shape == "separated":
        rest = 0.5 * second - (0.5 * second + 2.0) * torch.rand(d - 2, generator=g, dtype=F64) ** 2
    elif shape == "isolated third":
        rest = torch.cat([torch.tensor([0.5 * second], dtype=F64),
                          0.25 * second * torch.rand(d - 3, generator=g, dtype=F64)])
    else:
        raise SystemExit(f"unknown shape {shape!r}")
    ev = torch.cat([torch.tensor([top, second], dtype=F64), rest])
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return Q @ torch.diag(ev) @ Q.T, ev.sort(descending=True).values


def sweep(shape: str, ratio: float, k: int, tol: float, seeds, d: int, criterion: str) -> dict:
    over, work, misses, unconv = [], [], 0, 0
    for s in seeds:
        A, ev = matrix(shape, ratio, s, d)
        r = L.lanczos(A, k=k, tol=tol, max_iter=d, seed=10_000 + s, criterion=criterion)
        err = (r.eigenvalues - ev[:k]).abs()
        ratio_ = float((err / (r.error_bounds + 1e-12 * float(ev[0]))).max())
        over.append(ratio_)
        misses += ratio_ > 1
        unconv += not r.converged
        work.append(r.num_matvecs)
    return {"solves": len(over), "misses": misses, "worst": max(over), "med": statistics.median(work),
            "max": max(work), "unconverged": unconv}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=300, help="matrix size")
    ap.add_argument("--seeds", type=int, default=100, help="solves per ratio on the dense shape")
    ap.add_argument("--hard-seeds", type=int, default=40, help="solves per ratio on the separated shapes")
    ap.add_argument("--tols", default="1e-3,1e-4")
    ap.add_argument("--ks", default="1", help="k of the dense shape's solves")
    ap.add_argument("--hard-ks", default="1,2", help="k of the separated shapes' solves (2 resolves the pair)")
    ap.add_argument("--criterion", default="eigenvalue", choices=L.CRITERIA)
    ap.add_argument("--confirm", type=float, default=L.GAP_CONFIRM,
                    help=f"GAP_CONFIRM: a gap is used once the next Ritz residual is at most this fraction of it "
                         f"(default {L.GAP_CONFIRM})")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    L.GAP_CONFIRM = args.confirm
    print(f"Lanczos error bounds, {args.criterion} criterion, GAP_CONFIRM {args.confirm:g}, d={args.d}, "
          f"torch {torch.__version__}")
    print(f"{'shape':<16}{'ratio':>7}{'k':>3}{'tol':>8}{'misses':>12}{'worst err/bound':>17}{'products med/max':>18}"
          f"{'unconverged':>13}")
    t0 = time.perf_counter()
    totals: dict[str, list[int]] = {}
    for shape, n, ks in (("dense", args.seeds, args.ks), ("separated", args.hard_seeds, args.hard_ks),
                         ("isolated third", args.hard_seeds, args.hard_ks)):
        for k in (int(x) for x in ks.split(",")):
            for tol in (float(x) for x in args.tols.split(",")):
                for ratio in RATIOS:
                    r = sweep(shape, ratio, k, tol, range(n), args.d, args.criterion)
                    t = totals.setdefault(shape, [0, 0])
                    t[0] += r["misses"]
                    t[1] += r["solves"]
                    print(f"{shape:<16}{ratio:>7g}{k:>3}{tol:>8.0e}{r['misses']:>6}/{r['solves']:<5}{r['worst']:>17.3g}"
                          f"{r['med']:>10g}/{r['max']:<7}{r['unconverged']:>13}", flush=True)
    print(f"\nmiss rate by shape: " + ", ".join(f"{s} {m}/{n} ({100 * m / n:.1f}%)" for s, (m, n) in totals.items())
          + f"; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
