"""Data sets with stable example indices: CIFAR-10, synthetic opposing signals, character text.

``build_datasets(cfg.data, seed)`` returns the training set (and an optional
test set) of a run; each is an :class:`ArrayDataset` whose rows are
``(index, x, y)`` with ``index`` stable across subsets and processes.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import ArrayDataset, channel_stats, standardise, subset_rows
from .cifar import RestrictedUnpickler, cifar10, download_cifar10, find_cifar10, safe_load_pickle
from .synthetic import PlantedPair, opposing_signals
from .text import char_dataset

TEST_SEED_OFFSET = 10_000
"""The synthetic test set is drawn with seed ``seed + TEST_SEED_OFFSET``: other examples than the training set's."""


def build_datasets(cfg, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset | None]:
    """The (train, test-or-None) data sets of a :class:`~oppsig.config.DataConfig`.

    Raises:
        DataNotFoundError: when the data is not found (the message says how to get it).
        ConfigError: for an unknown data set name.
    """
    if cfg.name == "cifar10":
        train = cifar10(cfg.dir, n=cfg.n, per_class=cfg.per_class, seed=seed, standardize=cfg.standardize)
        test = None
        if cfg.test_n:
            stats = None
            if cfg.standardize:
                import torch

                stats = (torch.tensor(train.meta["mean"]), torch.tensor(train.meta["std"]))
            test = cifar10(cfg.dir, n=cfg.test_n, train=False, standardize=cfg.standardize, stats=stats)
        return train, test
    if cfg.name == "synthetic":
        s = cfg.synthetic
        pairs = tuple(PlantedPair(f, a, b) for f, a, b in s.pairs)
        n = cfg.n or 5000
        kw = dict(num_classes=s.num_classes, pairs=pairs, magnitude=s.magnitude, frequency=s.frequency,
                  signal=s.signal, standardize=cfg.standardize)
        train = opposing_signals(n, seed=seed, **kw)
        if cfg.per_class:
            train = train.take(subset_rows(train.y.numpy(), per_class=cfg.per_class, seed=seed))
        test = opposing_signals(cfg.test_n, seed=seed + TEST_SEED_OFFSET, **kw) if cfg.test_n else None
        return train, test
    if cfg.name == "text":
        train = char_dataset(cfg.path, cfg.dir, block_size=cfg.block_size, n=cfg.n)
        return train, None
    raise ConfigError(f"unknown data set {cfg.name!r}; valid: cifar10, synthetic, text")


__all__ = [
    "ArrayDataset",
    "build_datasets",
    "cifar10",
    "download_cifar10",
    "find_cifar10",
    "opposing_signals",
    "PlantedPair",
    "char_dataset",
    "RestrictedUnpickler",
    "safe_load_pickle",
    "subset_rows",
    "channel_stats",
    "standardise",
]
