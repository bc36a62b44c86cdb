"""What recording every example's loss costs, and how fast the store reads.

In one run, on fc-tanh 3072-200-200-10 + CE with full-batch GD on the first 5k
CIFAR-10 images (synthetic when absent), interleaved in rounds:
- the per-step time with and without recording every step, and their ratio (target <= 1.03);
- the cost of a probe recording (no-grad forward over every example) relative to one SGD step (batch 128);
- the store's size per million (step, example) values;
- reading one step (all examples) and one example (all steps).

    python benchmarks/bench_recording.py [--steps 64] [--rounds 3] [--threads 2]
"""

from __future__ import annotations


import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import bench_setup, fmt, timed_run
from oppsig.losses import get_loss
from oppsig.models import build_model
from oppsig.store import open_run, probe_losses
from oppsig.training import batch_rows, full_batch_backward


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    args, cfg, data, what = bench_setup(__doc__, steps=64)
    off, on = [], []
    keep = Path(tempfile.mkdtemp())
    for r in range(args.rounds):
        off.append(timed_run(cfg, data, args.steps, record=False))
        on.append(timed_run(cfg, data, args.steps, record=True, keep=keep))
    t_off, t_on = np.median(np.concatenate(off)), np.median(np.concatenate(on))
    print(f"recording every step: fc-tanh, CE, full-batch GD, {what}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.steps} steps (median)")
    print(f"  step without recording   {fmt(t_off)}")
    print(f"  step with recording      {fmt(t_on)}")
    print(f"  ratio                    {t_on / t_off:8.3f}   (target <= 1.03)")

    # probe recording (SGD/Adam) against one SGD step
    torch.manual_seed(0)
    train_set = data[0]
    model = build_model("mlp", (3, 32, 32), 10, widths=(200, 200), activation="tanh")
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loss_fn = get_loss("ce")
    sgd, probe = [], []
    for s in range(12):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        full_batch_backward(model, train_set.x, train_set.y, loss_fn, 128,
                            rows=batch_rows(s, len(train_set), 128, 0, "cpu"))
        opt.step()
        sgd.append(time.perf_counter() - t)
        t = time.perf_counter()
        probe_losses(model, train_set, loss_fn, batch_size=args.n)
        probe.append(time.perf_counter() - t)
    ps, pp = np.median(sgd[2:]), np.median(probe[2:])
    print(f"probe recording (no-grad forward over {len(train_set)} examples) vs one SGD step (batch 128):")
    print(f"  SGD step {fmt(ps)}   probe {fmt(pp)}   ratio {pp / ps:6.1f}  "
          f"(with record.every=k it adds {pp / ps:.1f}/k steps' worth)")

    # store size and reads
    rd = keep / "bench"
    r = open_run(rd)
    values = r.rows * len(r.index)
    size = du(rd / "store.zarr")
    print(f"store: {r.rows} steps x {len(r.index)} examples, {size / 1e6:.2f} MB on disk "
          f"= {size / values * 1e6 / 1e6:.2f} MB per million (step, example) values (float32 loss + bool correct)")
    reps = 20
    t = time.perf_counter()
    for i in range(reps):
        np.asarray(r.losses[i % r.rows])
    t_step = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for j in range(reps):
        np.asarray(r.losses[:, (j * 97) % len(r.index)])
    t_ex = (time.perf_counter() - t) / reps
    print(f"  read one step (all examples) {fmt(t_step)}   read one example (all steps) {fmt(t_ex)}")
    import shutil

    shutil.rmtree(keep, ignore_errors=True)



if __name__ == "__main__":
    main()
