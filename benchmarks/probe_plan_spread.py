"""How much the probe's plan moves from run to run: the forward share planned many times on one model.

``oppsig train`` plans a mini-batch run's probe from the cost of a probe forward per example over a training step
per example (``oppsig.training.build.forward_share``), rounded up to a grid of factors of 2^(1/4). Timing noise
that crosses a grid step changes the plan (how many examples, how many rows). This script plans ``--plans`` times
on the config's model and data, in one process, in turn with the simpler rule of the fastest of two timings of
each (after a warm-up call), so that both see the same load; ``--load`` runs a BLAS loop and a Python loop beside
it for the whole measurement, as a busy machine would.

Usage:
    OPPSIG_DATA=/path/to/data python benchmarks/probe_plan_spread.py configs/fc-tanh-ce-sgd-cifar5k.yaml --plans 25
    OPPSIG_DATA=/path/to/data python benchmarks/probe_plan_spread.py configs/fc-tanh-ce-sgd-cifar5k.yaml --load
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time

import torch

from oppsig.config import load_config
from oppsig.data import build_datasets
from oppsig.losses import get_loss
from oppsig.models import build_from_config
from oppsig.store.probe_plan import quantize_share
from oppsig.training.build import forward_share, share_calls

LOAD = ("import torch, time\ntorch.set_num_threads(1)\na = torch.randn(800, 800)\nt = time.time()\n"
        "while time.time() - t < {s}: a @ a\n",
        "import time\nt = time.time()\nwhile time.time() - t < {s}: pass\n")


def fastest_of_two(model, loss_fn, train_set, cfg) -> float:
    """The simpler rule: the fastest of two timings of the probe and of a step, each after one untimed call."""
    probe, step, p, b = share_calls(model, loss_fn, train_set, cfg)

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    return quantize_share(best(probe) / p / (best(step) / b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--plans", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--load", action="store_true", help="a BLAS loop and a Python loop beside the measurement")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config, a.set)
    train_set, _ = build_datasets(cfg.data)
    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes, torch.device("cpu"),
                              torch.float32)
    loss_fn = get_loss(cfg.train.loss)
    busy = [subprocess.Popen([sys.executable, "-c", code.format(s=3600)]) for code in LOAD] if a.load else []
    try:
        counts = {"fastest of two of each": collections.Counter(),
                  "nine rounds, fastest of each": collections.Counter()}
        spent = dict.fromkeys(counts, 0.0)
        for _ in range(a.plans):
            for name, fn in zip(counts, (fastest_of_two, forward_share)):
                t0 = time.perf_counter()
                counts[name][round(fn(model, loss_fn, train_set, cfg), 3)] += 1
                spent[name] += time.perf_counter() - t0
    finally:
        for p in busy:
            p.kill()
    print(f"{a.config}: {a.plans} plans each, {a.threads} threads{', under load' if a.load else ''}")
    for name, c in counts.items():
        shares = ", ".join(f"{k:g} in {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))
        print(f"  {name:<30} {shares}   ({spent[name] / a.plans:.2f} s a plan)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
