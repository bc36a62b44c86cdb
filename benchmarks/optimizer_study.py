"""GD, SGD, Adam and SplitSGD branched from one GD checkpoint at the edge of stability.

fc-tanh 3072-200-200-10, cross-entropy, the first 5k CIFAR-10 images (synthetic
when absent). A GD run at lr 0.1 reaches the edge of stability by step ~100;
at ``--branch-at`` every optimiser continues from that identical state on the
same data order, recorded every step with sharpness every 25 steps. The table:
loss spikes (count, largest rise), the oscillation amplitude of the opposing
groups detected in the GD branch (std of their group-mean loss change) in each
branch, raw and preconditioned sharpness against each optimiser's threshold,
the mean |projection| of the update on the top eigenvector, and final
train/test accuracy.

    python benchmarks/optimizer_study.py [--branch-at 300] [--steps 700] [--out bench_out/optimizers]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import data_overrides
from oppsig.compare import compare, parse_branches
from oppsig.config import load_config
from oppsig.report.html import load_signals, run_summary
from oppsig.store import open_run

BRANCHES = ("gd,"
            "sgd:optim.lr=0.01;optim.momentum=0.9;train.batch_size=128,"
            "adam:optim.lr=0.0005,"
            "splitsgd:optim.lr=0.1;optim.momentum=0.9;optim.dampening=0.9;optim.split_threshold=3.0;optim.split_lr=0.0005")


def group_swing(run, members) -> float:
    cols = np.sort(np.asarray(members, dtype=int))
    g = np.asarray(run.losses[:, cols], dtype=np.float64).mean(1)
    return float(np.std(np.diff(g)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--branch-at", type=int, default=300)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--branches", default=BRANCHES)
    ap.add_argument("--out", default="bench_out/optimizers")
    args = ap.parse_args()
    ov, what = data_overrides(5000)
    cfg = load_config(None, ov + [
        "name=study", f"out_dir={args.out}", "data.test_n=1000", "model.widths=[200, 200]", "model.activation=tanh",
        "optim.name=gd", "optim.lr=0.1", "train.loss=ce", "train.physical_batch_size=5000",
        "train.checkpoint_every=100", "curvature.every=25", "curvature.preconditioned=true", "record.every=1",
        "record.chunk_steps=32"])
    t0 = time.time()
    res = compare(cfg, parse_branches(args.branches), args.branch_at, args.steps, detect=True, overwrite=True,
                  progress=False)
    runs = {k: open_run(v) for k, v in res.branches.items()}
    gd_name = next(k for k in runs if k.startswith("gd"))
    gd_sig = load_signals(res.branches[gd_name])
    pair = gd_sig.pairs[0] if gd_sig is not None and gd_sig.pairs else None
    by_id = {g.id: g for g in gd_sig.groups} if gd_sig is not None else {}
    print(f"\n{what}; fc-tanh, CE; branched from GD (lr 0.1) at step {args.branch_at}, to step {args.steps}; "
          f"{time.time() - t0:.0f} s")
    if pair is not None:
        ga, gb = by_id[pair.a], by_id[pair.b]
        print(f"GD branch's top pair: group {ga.id} ({ga.size}: {', '.join(ga.shared[:1])}) vs group {gb.id} "
              f"({gb.size}: {', '.join(gb.shared[:1])}), corr {pair.corr:.2f}")
    head = ["branch", "optimiser", "spikes", "largest", "pairs", "pair swing", "sharp/thr", "precond/thr",
            "|update.v|", "final loss", "train acc", "test acc"]
    print("".join(f"{h:>12s}" for h in head))
    for name, run in runs.items():
        m = run.metrics
        sig = load_signals(res.branches[name])
        s = run_summary(run)
        thr = np.asarray(m.get("threshold", []), float)
        sh = np.asarray(m.get("sharpness", []), float)
        pre = np.asarray(m.get("precond_sharpness", [np.nan] * len(sh)), float)
        ok = np.isfinite(sh) & np.isfinite(thr)
        okp = np.isfinite(pre) & np.isfinite(thr)
        up = np.asarray(m.get("update_proj", []), float)
        up = up[np.isfinite(up)]
        cfgb = run.config
        swing = group_swing(run, list(by_id[pair.a].members) + list(by_id[pair.b].members)) if pair is not None else float("nan")
        row = [name, f"{cfgb.optim.name} {cfgb.optim.lr:g}", str(len(sig.spikes) if sig else "-"),
               f"{max((x.height for x in sig.spikes), default=0):.2f}" if sig else "-",
               str(len(sig.pairs) if sig else "-"), f"{swing:.3f}",
               f"{np.median(sh[ok] / thr[ok]):.2f}" if ok.any() else "-",
               f"{np.median(pre[okp] / thr[okp]):.2f}" if okp.any() else "-",
               f"{np.mean(np.abs(up)):.3f}" if len(up) else "-", f"{s['final loss']:.3f}",
               f"{s['final accuracy']:.3f}", f"{s['test accuracy']:.3f}"]
        print("".join(f"{c:>12s}" for c in row))
    print("sharp/thr and precond/thr: median over the branch of the (raw / Adam-preconditioned) top eigenvalue over "
          "the optimiser's stability threshold (GD 2/lr, momentum (2+2b)/lr, Adam (2+2b1)/((1-b1) lr)).")
    print(f"comparison report: {res.report}")


if __name__ == "__main__":
    main()
