"""In-memory data sets with stable example indices.

Every data set in oppsig is an :class:`ArrayDataset`: tensors ``x`` (N, ...),
``y`` (N,) and ``index`` (N,), where ``index[i]`` is the example's stable id in
its source (e.g. its row in the CIFAR-10 batch files), so that per-example
records stay meaningful across subsets, resumed runs and processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import DataFormatError


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A labelled data set held as tensors.

    Attributes:
        x: inputs, float32 (N, ...) (standardised images, or token ids for text).
        y: integer targets, int64 (N,) (or (N, T) for text).
        index: stable example ids, int64 (N,).
        classes: class names, ``len(classes)`` is the number of classes.
        raw: optional uint8 images (N, C, H, W) before standardisation, for
            describing and drawing examples.
        groups: optional ground-truth group id per example (N,), ``-1`` for none
            (synthetic data with planted opposing signals).
        name: a short description of where the data came from.
        meta: free-form facts about the data (e.g. standardisation constants).
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    classes: tuple[str, ...]
    raw: torch.Tensor | None = None
    groups: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.y.shape[0] != n or self.index.shape[0] != n:
            raise DataFormatError(
                f"data set {self.name!r}: x has {n} rows but y has {self.y.shape[0]} and index {self.index.shape[0]}"
            )
        if self.raw is not None and self.raw.shape[0] != n:
            raise DataFormatError(f"data set {self.name!r}: raw has {self.raw.shape[0]} rows, expected {n}")
        if self.groups is not None and len(self.groups) != n:
            raise DataFormatError(f"data set {self.name!r}: groups has {len(self.groups)} rows, expected {n}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``(index, x, y)`` of row ``i``."""
        return int(self.index[i]), self.x[i], self.y[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Consecutive ``(index, x, y)`` slices of at most ``batch_size`` rows (views, no copy)."""
        n = len(self)
        bs = n if batch_size is None or batch_size <= 0 else batch_size
        for s in range(0, n, bs):
            yield self.index[s : s + bs], self.x[s : s + bs], self.y[s : s + bs]

    def take(self, rows: torch.Tensor | np.ndarray | list[int]) -> "ArrayDataset":
        """The rows ``rows`` (positions, not ids) as a new data set."""
        rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return replace(
            self,
            x=self.x[rows_t],
            y=self.y[rows_t],
            index=self.index[rows_t],
            raw=None if self.raw is None else self.raw[rows_t],
            groups=None if self.groups is None else self.groups[rows_t.numpy()],
        )

    def by_ids(self, ids: np.ndarray | Sequence[int]) -> "ArrayDataset":
        """The examples whose stable ids are ``ids``, in that order (itself when they already match).

        Raises:
            DataFormatError: when some ids are not in this data set (the message counts them and names a few).
        """
        ids = np.asarray(ids, dtype=np.int64)
        own = self.index.cpu().numpy()
        if len(ids) == len(own) and np.array_equal(ids, own):
            return self
        pos = {int(v): i for i, v in enumerate(own)}
        missing = [int(v) for v in ids if int(v) not in pos]
        if missing:
            raise DataFormatError(f"the data set lacks {len(missing)} of the run's examples (ids {missing[:5]}...); "
                                  "pass the data set the run was trained on")
        return self.take(np.fromiter((pos[int(v)] for v in ids), dtype=np.int64, count=len(ids)))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "ArrayDataset":
        """A copy with ``x``, ``y`` on ``device`` (and ``x`` cast to ``dtype`` if floating)."""
        x = self.x.to(device)
        if dtype is not None and x.is_floating_point():
            x = x.to(dtype)
        return replace(self, x=x, y=self.y.to(device))


def subset_rows(
    labels: np.ndarray, n: int | None = None, per_class: int | None = None, seed: int = 0
) -> np.ndarray:
    """Row positions of a subset: the first ``n`` rows, or ``per_class`` rows of each class drawn with ``seed``.

    Rows come back in ascending order, so the subset keeps the source order.

    Raises:
        DataFormatError: when a class has fewer than ``per_class`` rows or ``n`` exceeds the data.
    """
    labels = np.asarray(labels)
    if per_class is not None:
        rng = np.random.default_rng(seed)
        rows = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            if len(idx) < per_class:
                raise DataFormatError(f"class {c} has {len(idx)} examples, fewer than per_class={per_class}")
            rows.append(rng.choice(idx, size=per_class, replace=False))
        out = np.sort(np.concatenate(rows))
        if n is not None:
            out = out[:n]
        return out
    if n is None:
        return np.arange(len(labels))
    if n > len(labels):
        raise DataFormatError(f"asked for {n} examples but the data has only {len(labels)}")
    return np.arange(n)


def channel_stats(x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    x = x_uint8.to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return mean.float(), std.clamp_min(1e-8).float()


def standardise(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x/255 - mean) / std per channel, float32."""
    x = x_uint8.to(torch.float32) / 255.0
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
