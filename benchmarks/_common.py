"""Shared pieces of the benchmarks: data choice and a step timer hook."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
import time
from pathlib import Path

import numpy as np


def data_overrides(n: int = 5000) -> tuple[list[str], str]:
    """Config overrides for the benchmark data: the first n CIFAR-10 images when found, else synthetic."""
    from oppsig.data.cifar import find_cifar10

    if find_cifar10() is not None:
        return ["data.name=cifar10", f"data.n={n}"], f"CIFAR-10, first {n} images"
    return ["data.name=synthetic", f"data.n={n}"], f"synthetic ({n} images; CIFAR-10 not found)"


@contextmanager
def batch_record_time():
    """Inside the block, time spent in the per-batch record (``BatchWriter.append`` and ``flush``): yields ``[s]``."""
    from oppsig.store import batches as B

    spent = [0.0]
    orig = B.BatchWriter.append, B.BatchWriter.flush

    def timed(fn):
        def wrapper(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                spent[0] += time.perf_counter() - t
        return wrapper

    B.BatchWriter.append, B.BatchWriter.flush = timed(orig[0]), timed(orig[1])
    try:
        yield spent
    finally:
        B.BatchWriter.append, B.BatchWriter.flush = orig


class StepTimer:
    """A hook recording the wall time between consecutive step starts (the whole loop body per step)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_step_start(self, state) -> None:
        self.starts.append(time.perf_counter())

    def per_step(self, skip: int = 2) -> np.ndarray:
        return np.diff(np.asarray(self.starts))[skip:]


def fmt(x: float) -> str:
    return f"{x * 1000:8.1f} ms"


def timed_run(cfg, data, steps: int, record: bool, keep: Path | None = None, hooks=()) -> np.ndarray:
    """Per-step wall times of ``oppsig.train`` for ``steps`` steps (recording on or off), in a temporary run dir,
    with ``hooks`` (before the timer's)."""
    from oppsig.training import train

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as d:
        out = keep if keep is not None else Path(d)
        c = cfg.replace([f"train.steps={steps + 1}", f"record.enabled={str(record).lower()}", f"out_dir={out}"])
        train(c, hooks=[*hooks, timer], progress=False, data=data, overwrite=True)
    return timer.per_step()


def bench_setup(doc: str, steps: int, extra: list[str] = ()):
    """Parse the common benchmark arguments, set the threads, and build the fc-tanh / CE / full-batch GD config
    and data.

    Returns:
        ``(args, cfg, data, what)``: parsed arguments, the config, (train, test) data, a description of the data.
    """
    import argparse

    import torch

    from oppsig.config import load_config
    from oppsig.data import build_datasets

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ov, what = data_overrides(args.n)
    cfg = load_config(None, ov + ["name=bench", "optim.name=gd", "optim.lr=0.1", "train.loss=ce",
                                  f"train.physical_batch_size={args.n}", "train.checkpoint_every=0",
                                  "model.widths=[200, 200]", "model.activation=tanh", *extra])
    return args, cfg, build_datasets(cfg.data, seed=0), what


def channel_stats(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images (N, 3, H, W)."""
    r64 = raw.reshape(len(raw), 3, -1).astype(np.float64)
    return r64.mean(axis=(0, 2)), r64.std(axis=(0, 2))


def planted_dataset(ds, raw: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    """``ds`` with the images ``raw`` (uint8, N x 3 x 32 x 32), standardised per channel as the data set is (by
    ``mean`` and ``std``, e.g. those a planted run stored, else :func:`channel_stats` of ``raw``)."""
    import dataclasses

    import torch

    if mean is None or std is None:
        mean, std = channel_stats(raw)
    mean, std = np.asarray(mean), np.asarray(std)
    x = ((raw.astype(np.float32) - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)
    return dataclasses.replace(ds, raw=torch.from_numpy(raw), x=torch.from_numpy(x))
