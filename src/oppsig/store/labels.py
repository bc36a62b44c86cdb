"""The training examples' labels and class names, kept with a run that has no oppsig config (``labels.npz``).

A callback or :class:`~oppsig.store.Recorder` run on a user's own data cannot be rebuilt
from a config; with the labels it was given, ``oppsig detect`` and ``oppsig report`` still
name groups by class. The file holds three arrays::

    ids      int64 (N,)   stable example ids
    labels   int64 (N,)   each example's class
    classes  str   (C,)   class names (empty: classes are named by number)

written atomically (:func:`~oppsig.store.format.atomic_write`) and read without pickle.

Example:
    >>> write_labels(tmp_path, [10, 11, 12], [0, 1, 1], ["cat", "dog"])
    >>> lab = read_labels(tmp_path)
    >>> lab.of([12, 10]).tolist(), lab.classes
    ([1, 0], ('cat', 'dog'))
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StoreError
from .format import atomic_write

LABELS = "labels.npz"


@dataclass(frozen=True)
class Labels:
    """Each example's class by stable id: ``ids`` (N,), ``labels`` (N,), ``classes`` names."""

    ids: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def of(self, ids) -> np.ndarray:
        """The labels of examples ``ids`` (M,), in that order.

        Raises:
            StoreError: for an id that has no stored label.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        order = np.argsort(self.ids, kind="stable")
        pos = np.searchsorted(self.ids, ids, sorter=order)
        pos = np.minimum(pos, len(order) - 1)
        rows = order[pos] if len(order) else pos
        bad = ~np.isin(ids, self.ids)
        if bad.any():
            raise StoreError(f"{int(bad.sum())} example ids have no stored label (e.g. {ids[bad][:3].tolist()})")
        return self.labels[rows]


def write_labels(run_dir: str | os.PathLike, ids, labels, classes=None) -> None:
    """Write ``labels.npz`` into ``run_dir``: ``labels`` (N,) of examples ``ids`` (N,), and the class names.

    Raises:
        StoreError: when the sizes differ, a label is not a whole number, or a label has no class name.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if len(lab) != len(ids):
        raise StoreError(f"labels has {len(lab)} entries for {len(ids)} examples; pass one label per example")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        if not np.array_equal(lab, np.round(lab.astype(np.float64))):
            raise StoreError(f"labels must be class numbers (integers); got {lab.dtype} values such as {lab[:3]}")
    lab = lab.astype(np.int64)
    names = tuple(str(c) for c in (classes or ()))
    if names and lab.size and (lab.min() < 0 or lab.max() >= len(names)):
        raise StoreError(f"labels run {lab.min()}..{lab.max()} but {len(names)} class names were given; "
                         "pass one name per class")
    buf = io.BytesIO()
    np.savez(buf, ids=ids, labels=lab, classes=np.asarray(names, dtype=str))
    atomic_write(Path(run_dir) / LABELS, buf.getvalue())


def read_labels(run_dir: str | os.PathLike) -> Labels | None:
    """The run's stored labels, or None when it has none.

    Raises:
        StoreError: when ``labels.npz`` is unreadable.
    """
    p = Path(run_dir) / LABELS
    if not p.exists():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return Labels(z["ids"].astype(np.int64), z["labels"].astype(np.int64),
                          tuple(str(c) for c in z["classes"]))
    except (OSError, ValueError, KeyError) as e:
        raise StoreError(f"{p} is unreadable ({e}); remove it to name groups by example id only") from None
