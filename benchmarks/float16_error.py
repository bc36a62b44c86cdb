"""The error float16 storage (``record.dtype: float16``) adds to detection's figures.

For several seeds of the synthetic losses of bench_scale.py (planted anti-phase pairs, spikes), detection
runs on the float32 losses and on the same losses rounded to float16 (what the store keeps), and the
figures are compared: spikes (rows), groups (members), pairs, pair correlation, the spike heights, the
per-example loss-change statistics, and float16's relative rounding error of the losses and of their
step-to-step changes (a change is a difference of two rounded losses: its relative error grows as the
change shrinks against the loss).

    OMP_NUM_THREADS=1 python benchmarks/float16_error.py [--seeds 5] [--n 2000] [--r 500]
"""

from __future__ import annotations

import argparse

import numpy as np

from bench_scale import loss_rows, planted_rows


def main() -> None:
    from oppsig.signals import find_signals
    from oppsig.signals.detect import scan_losses
    from oppsig.signals.matrix import LossMatrix

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--r", type=int, default=500)
    a = ap.parse_args()
    ds, pairs = planted_rows(a.n)
    rows = []
    for seed in range(a.seeds):
        rng = np.random.default_rng(seed)
        c = (rng.choice([-1.0, 1.0], size=a.n) * rng.lognormal(0.0, 0.5, size=a.n)).astype(np.float32)
        L32 = loss_rows(np.arange(a.r), a.r, a.n, pairs, rng, c)
        L16 = L32.astype(np.float16).astype(np.float32)
        r32 = find_signals(L32, np.arange(a.r), ds)
        r16 = find_signals(L16, np.arange(a.r), ds)
        s32, s16 = scan_losses(LossMatrix(L32), 20), scan_losses(LossMatrix(L16), 20)
        d32, d16 = np.diff(L32, axis=0), np.diff(L16, axis=0)
        g32 = [set(g.members) for g in r32.groups]
        g16 = [set(g.members) for g in r16.groups]
        jac = [max((len(x & y) / len(x | y) for y in g16), default=0.0) for x in g32]
        corr = [abs(p.corr - q.corr) for p, q in zip(r32.pairs, r16.pairs)]
        h = [abs(p.height - q.height) for p, q in zip(r32.spikes, r16.spikes)]
        rows.append({
            "same_spikes": [s.row for s in r32.spikes] == [s.row for s in r16.spikes],
            "same_pairs": [(p.a, p.b) for p in r32.pairs] == [(p.a, p.b) for p in r16.pairs],
            "group_jaccard": float(np.mean(jac)) if jac else 1.0,
            "pair_corr_err": max(corr, default=0.0),
            "spike_height_err": max(h, default=0.0),
            "std_rel_err": float(np.median(np.abs(s16.std - s32.std) / s32.std)),
            "loss_rel_err": float(np.max(np.abs(L16 - L32) / L32)),
            "change_rel_err": float(np.median(np.abs(d16 - d32) / np.maximum(np.abs(d32), 1e-12))),
        })
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in rows[-1].items()), flush=True)
    print(f"over {a.seeds} seeds ({a.n} examples x {a.r} steps): same spikes {sum(r['same_spikes'] for r in rows)}/"
          f"{a.seeds}, same pairs {sum(r['same_pairs'] for r in rows)}/{a.seeds}, group Jaccard >= "
          f"{min(r['group_jaccard'] for r in rows):.3f}, "
          f"|pair corr error| <= {max(r['pair_corr_err'] for r in rows):.2g}, "
          f"spike height error <= {max(r['spike_height_err'] for r in rows):.2g}, "
          f"per-example change std relative error "
          f"(median) <= {max(r['std_rel_err'] for r in rows):.2g}; loss relative rounding <= "
          f"{max(r['loss_rel_err'] for r in rows):.2g}, change relative error (median) <= "
          f"{max(r['change_rel_err'] for r in rows):.2g}")


if __name__ == "__main__":
    main()
