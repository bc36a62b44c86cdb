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

from _common import data_overrides
from oppsig.experiments.compare import compare, comparison_table, format_table, parse_branches
from oppsig.config import load_config

# learning rates tuned (sweep over 2-3 values each) so that every branch ends near GD's training loss after
# 350 steps: GD 0.28, Adam 0.26, SplitSGD 0.36, SGD 0.40 (SGD gets worse, not better, at 0.02 and 0.04)
BRANCHES = ("gd,"
            "sgd:optim.lr=0.01;optim.momentum=0.9;train.batch_size=128,"
            "adam:optim.lr=0.00005,"
            "splitsgd:optim.lr=0.05;optim.momentum=0.9;optim.dampening=0.9;optim.split_threshold=3.0;optim.split_lr=0.0001")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--branch-at", type=int, default=300)
    ap.add_argument("--steps", type=int, default=650)
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
    gd_name = next(k for k in res.branches if k.startswith("gd"))
    rows, note = comparison_table(res.branches, reference=gd_name)
    print(f"\n{what}; fc-tanh, CE; branched from GD (lr 0.1) at step {args.branch_at}, to step {args.steps}; "
          f"{time.time() - t0:.0f} s")
    print(format_table(rows))
    print(note)
    print("sharp/thr and precond/thr: median over the branch of the (raw / Adam-preconditioned) top eigenvalue over "
          "the optimiser's stability threshold (GD 2/lr, momentum (2+2b)/lr, Adam (2+2b1)/((1-b1) lr)).")
    print(f"comparison report: {res.report}")


if __name__ == "__main__":
    main()
