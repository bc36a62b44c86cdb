"""Checking a store against its own bookkeeping: rows committed, chunks present, steps in order.

``progress.json`` says how many rows are complete; every chunk of every array
that covers those rows must then exist on disk (the writer writes empty chunks
too, so an absent chunk file means lost data, not a default value), and the
``steps`` of those rows must be strictly increasing. A chunk that is absent
would otherwise read as the fill value (NaN losses, ``False`` correctness,
step -1) and give silently wrong numbers.

:func:`find_gaps` lists what is missing as :class:`Gap` ranges (rows and
columns, with the steps they cover), which readers turn into errors that name
the exact range. :func:`record_extent` says up to which step a record holds
every row it should, which is where a run may resume.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Gap:
    """Rows ``[row_lo, row_hi)`` x columns ``[col_lo, col_hi)`` of one array whose chunk files are absent."""

    array: str
    row_lo: int
    row_hi: int
    col_lo: int | None = None
    col_hi: int | None = None

    def overlaps(self, rows: np.ndarray | slice, cols: np.ndarray | slice | None = None) -> bool:
        if not _hits(rows, self.row_lo, self.row_hi):
            return False
        return self.col_lo is None or cols is None or _hits(cols, self.col_lo, self.col_hi)

    def describe(self, steps: np.ndarray | None = None) -> str:
        """E.g. ``loss rows 0..31 (steps 0..31), examples 0..1023``."""
        text = f"{self.array} rows {self.row_lo}..{self.row_hi - 1}"
        if steps is not None and len(steps) >= self.row_hi and np.all(np.asarray(steps[self.row_lo:self.row_hi]) >= 0):
            text += f" (steps {int(steps[self.row_lo])}..{int(steps[self.row_hi - 1])})"
        if self.col_lo is not None:
            text += f", columns {self.col_lo}..{self.col_hi - 1}"
        return text


def _hits(sel, lo: int, hi: int) -> bool:
    if isinstance(sel, slice):
        start, stop, step = sel.start, sel.stop, sel.step or 1
        if step == 1:
            return start < hi and stop > lo
        sel = np.arange(start, stop, step)
    sel = np.asarray(sel).reshape(-1)
    return bool(np.any((sel >= lo) & (sel < hi)))


def _chunk_key(array, coords: tuple[int, ...]) -> str:
    """The file of a chunk below the array's folder, e.g. ``c/1/0``."""
    return array.metadata.chunk_key_encoding.encode_chunk_key(coords)


def _present(array_dir: Path) -> set[str]:
    out = set()
    for root, _dirs, files in os.walk(array_dir):
        rel = os.path.relpath(root, array_dir)
        for f in files:
            out.add(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return out


def find_gaps(store_dir: str | os.PathLike, array, name: str, rows: int) -> list[Gap]:
    """The chunks of ``array`` (stored under ``store_dir/name``) that cover its first ``rows`` rows but are absent.

    Adjacent missing chunks are merged: one :class:`Gap` per run of row chunks with the same missing columns.
    """
    if rows <= 0:
        return []
    present = _present(Path(store_dir) / name)
    cs = tuple(int(c) for c in array.chunks)
    shape = tuple(int(s) for s in array.shape)
    grid_rest = [range(math.ceil(s / c)) for s, c in zip(shape[1:], cs[1:])]
    n_rest = [len(g) for g in grid_rest]
    gaps: list[Gap] = []
    prev = None  # (col chunk set) of the previous row chunk, with its gap list start
    for i in range(math.ceil(min(rows, shape[0]) / cs[0])):
        missing_cols = []
        for rest in np.ndindex(*n_rest) if n_rest else [()]:
            if _chunk_key(array, (i,) + tuple(rest)) not in present:
                missing_cols.append(rest[0] if rest else None)
        lo, hi = i * cs[0], min((i + 1) * cs[0], rows)
        if not missing_cols:
            prev = None
            continue
        cols = sorted(set(missing_cols), key=lambda c: -1 if c is None else c)
        ranges = _col_ranges(cols, cs[1] if len(cs) > 1 else None, shape[1] if len(shape) > 1 else None)
        if prev is not None and prev[0] == ranges:
            for k in range(prev[1], len(gaps)):
                g = gaps[k]
                gaps[k] = Gap(g.array, g.row_lo, hi, g.col_lo, g.col_hi)
        else:
            start = len(gaps)
            gaps += [Gap(name, lo, hi, c0, c1) for c0, c1 in ranges]
            prev = (ranges, start)
    return gaps


def _col_ranges(chunk_cols: list, width: int | None, n: int | None) -> list[tuple[int | None, int | None]]:
    if width is None or chunk_cols == [None]:
        return [(None, None)]
    out: list[list[int]] = []
    for c in chunk_cols:
        if out and out[-1][1] == c:
            out[-1][1] = c + 1
        else:
            out.append([c, c + 1])
    full = math.ceil(n / width)
    if len(out) == 1 and out[0] == [0, full]:
        return [(None, None)]  # every column
    return [(a * width, min(b * width, n)) for a, b in out]


def record_extent(steps: np.ndarray, gaps: list[Gap], first_step: int, every: int) -> tuple[int, str]:
    """``(limit, why)``: the record holds every step it should before ``limit``; ``why`` it stops there.

    Args:
        steps: int (R,) the step of each complete row (``Run.steps``).
        gaps: the absent chunks of the per-example arrays (``Run.losses.gaps + Run.correct.gaps``).
        first_step: the run's first step; the rows hold steps ``s0, s0 + every, ...`` where ``s0`` is
            the first multiple of ``every`` from ``first_step`` on.
        every: the record's step interval (``record.every``).

    Example:
        >>> record_extent(np.array([0, 2, 4, 8]), [], first_step=0, every=2)
        (6, 'row 3 holds step 8')
        >>> record_extent(np.array([0, 1, 2, 3]), [Gap("loss", 2, 4)], first_step=0, every=1)
        (2, 'chunk files of rows from 2 are missing')
        >>> record_extent(np.array([4, 5]), [], first_step=4, every=1)
        (6, 'it ends after 2 rows')
    """
    s0 = -(-first_step // every) * every  # the first step that is recorded
    bad = np.flatnonzero(steps != s0 + every * np.arange(len(steps)))
    k, why = (int(bad[0]), f"row {int(bad[0])} holds step {int(steps[bad[0]])}") if len(bad) else (len(steps), "")
    gap = min((g.row_lo for g in gaps), default=None)
    if gap is not None and gap < k:
        k, why = gap, f"chunk files of rows from {gap} are missing"
    if k == len(steps):
        why = f"it ends after {len(steps)} rows"
    return s0 + every * k, why


def read_metric_steps(path: str | os.PathLike) -> np.ndarray | None:
    """int (K,) the ``step`` of each readable row of a ``metrics.jsonl`` (None when the file is missing)."""
    import json

    p = Path(path)
    if not p.exists():
        return None
    steps = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn or damaged line
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            steps.append(row["step"])
    return np.asarray(steps, dtype=np.int64)


def metrics_extent(steps: np.ndarray | None, first_step: int) -> tuple[int, str]:
    """``(limit, why)``: ``metrics.jsonl`` (one row per step) holds every step from ``first_step`` before ``limit``.

    Example:
        >>> metrics_extent(np.array([0, 1, 2, 4]), 0)
        (3, 'it lacks step 3')
        >>> metrics_extent(None, 0)
        (0, 'metrics.jsonl is missing')
    """
    if steps is None:
        return first_step, "metrics.jsonl is missing"
    have = set(steps.tolist())
    limit = first_step
    while limit in have:
        limit += 1
    return limit, (f"it lacks step {limit}" if any(s > limit for s in have) else f"it ends after step {limit - 1}")


def metrics_shortfall(metric_steps: np.ndarray | None, record_steps: np.ndarray) -> str | None:
    """Why ``metrics.jsonl`` does not cover the recorded steps (None when it does): for a reader's warning.

    Example:
        >>> metrics_shortfall(np.array([0, 1]), np.array([0, 1, 2, 3]))
        'metrics.jsonl lacks 2 of the 4 recorded steps (2..3)'
    """
    if not len(record_steps):
        return None
    if metric_steps is None:
        return "metrics.jsonl is missing"
    lost = np.setdiff1d(record_steps, metric_steps)
    if not len(lost):
        return None
    return (f"metrics.jsonl lacks {len(lost)} of the {len(record_steps)} recorded steps "
            f"({int(lost[0])}..{int(lost[-1])})")
