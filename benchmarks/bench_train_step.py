"""Full-batch GD step of ``oppsig train`` against a plain PyTorch loop doing the same step.

fc-tanh 3072-200-200-10, cross-entropy, full-batch GD (lr 0.1) on the first 5k
CIFAR-10 images (synthetic images when CIFAR-10 is absent). Both loops run in
this process, interleaved in rounds so that machine load hits both alike; the
figure is the median per-step wall time, and the target is a ratio <= 1.1.

    python benchmarks/bench_train_step.py [--steps 30] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import bench_setup, fmt, timed_run
from oppsig.models import build_model


def plain_loop(x, y, steps: int) -> np.ndarray:
    torch.manual_seed(0)
    model = build_model("mlp", (3, 32, 32), 10, widths=(200, 200), activation="tanh")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        float(loss.detach())
        times.append(time.perf_counter() - t)
    return np.asarray(times[2:])


def main() -> None:
    args, cfg, data, what = bench_setup(__doc__, steps=30)
    x, y = data[0].x, data[0].y
    plain, ours = [], []
    for r in range(args.rounds):
        plain.append(plain_loop(x, y, args.steps))
        ours.append(timed_run(cfg, data, args.steps, record=False))
    p, o = np.median(np.concatenate(plain)), np.median(np.concatenate(ours))
    print(f"full-batch GD step, fc-tanh 3072-200-200-10, CE, {what}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.steps} steps (median)")
    print(f"  plain PyTorch loop      {fmt(p)}")
    print(f"  oppsig train (no record){fmt(o)}")
    print(f"  ratio oppsig / plain    {o / p:8.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
