"""What the sparse mini-batch record costs a training step (target <= 3%).

On configs/cnn-sgd-minibatch-cifar10k.yaml (small CNN, SGD batch 128, momentum 0.9, the 10,000 CIFAR-10
images of data_batch_1; synthetic when absent), in one process:

1. direct: a run with ``record.mode=batch`` whose ``BatchWriter.append`` / ``flush`` calls are timed
   (everything the record adds to the loop: the copy of 128 losses, ids and flags, the chunk writes and
   the progress file); their total over the run's wall time is the record's share of the step time;
2. A/B: per-step wall times with the record on and off, interleaved in rounds (the same steps each
   time); the ratio of medians. Noisier than (1) on a shared machine: both are printed.

It also prints the size of the sparse record against a dense (steps x examples) record of the same
losses, and against a masked dense layout (NaN where an example was not in the batch).

    OMP_NUM_THREADS=1 python benchmarks/bench_batch_record.py [--steps 120] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import StepTimer, batch_record_time, data_overrides

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn-sgd-minibatch-cifar10k.yaml"


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main() -> None:
    from oppsig.config import load_config
    from oppsig.data import build_datasets
    from oppsig.training import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ov, what = data_overrides(10000)
    base = load_config(str(CONFIG), ov + ["train.eval_every=0", "train.checkpoint_every=0", "data.test_n=0"])
    data = build_datasets(base.data, seed=0)
    print(f"{base.name}: {what}; {a.steps} steps per round, {a.rounds} rounds; threads {a.threads}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    # 1. direct timing of everything the record does
    with batch_record_time() as spent:
        with tempfile.TemporaryDirectory() as d:
            c = base.replace([f"train.steps={a.steps}", "record.mode=batch", f"out_dir={d}", "name=direct"])
            t0 = time.perf_counter()
            res = train(c, progress=False, data=data)
            wall = time.perf_counter() - t0
            size = du(Path(res.run_dir) / "store.zarr" / "batch")
            entries = a.steps * base.train.batch_size
            # the same losses in a masked dense layout: one row of N per step, NaN outside the batch
            from oppsig.store import StoreWriter, open_run

            step, col, loss, corr = open_run(res.run_dir).batches.arrays()
            n = len(data[0])
            w = StoreWriter(Path(d) / "masked", np.arange(n), capacity=a.steps)
            for s in range(a.steps):
                row = np.full(n, np.nan, np.float32)
                row[col[step == s]] = loss[step == s]
                w.append(s, row, np.zeros(n, bool))
            w.close()
            masked = du(Path(d) / "masked" / "store.zarr")
    share = spent[0] / wall
    print(f"direct: the record took {1000 * spent[0] / a.steps:.3f} ms per step of {1000 * wall / a.steps:.1f} ms "
          f"= {100 * share:.2f}% of the step time (target <= 3%)")
    print(f"size on disk: sparse {size / entries:.1f} bytes per recorded loss ({size / 2**20:.2f} MB for {entries:,}); "
          f"masked dense (N={n:,} values per step, NaN outside the batch, zarr-compressed) {masked / entries:.1f} "
          f"bytes per recorded loss ({masked / 2**20:.2f} MB), {masked / size:.1f}x; reading one example's series: "
          f"sparse scans all entries, masked dense reads one column")

    # 2. A/B rounds
    on, off = [], []
    for _ in range(a.rounds):
        for rec, out in ((True, on), (False, off)):
            timer = StepTimer()
            with tempfile.TemporaryDirectory() as d:
                over = ["record.mode=batch"] if rec else ["record.enabled=false"]
                c = base.replace([f"train.steps={a.steps}", f"out_dir={d}", "name=ab", *over])
                train(c, hooks=[timer], progress=False, data=data)
            out.append(np.median(timer.per_step()))
    ratio = np.array(on) / np.array(off)
    print(f"A/B: median step {1000 * np.median(on):.1f} ms recording vs {1000 * np.median(off):.1f} ms not; "
          f"ratio per round {', '.join(f'{r:.3f}' for r in ratio)} (median {np.median(ratio):.3f})")


if __name__ == "__main__":
    main()
