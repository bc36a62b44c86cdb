"""The loss matrix: row-block access to an (R, N) per-example loss record, in memory, streamed or on Dask.

Every pass of the search over the loss changes ``D = L[1:] - L[:-1]`` goes through
:meth:`LossMatrix.map_blocks`, so its result does not depend on where the blocks were computed.

Example:
    >>> lm = LossMatrix(np.ones((10, 3)))
    >>> lm.shape, lm.in_memory
    ((10, 3), True)
"""

from __future__ import annotations

import functools
from typing import Any, Iterator

import numpy as np

from .result import SignalsError
from .tuning import MIN_ROWS, WORKING_COPIES


class LossMatrix:
    """Row-block access to an (R, N) loss matrix, checked for shape and finite values.

    Every pass over the matrix goes through :meth:`map_blocks`: a pure function of
    one block of rows ``L[t0 : t0 + B + 1]`` (the loss changes ``D[t0 : t0 + B]``
    and the rows they join), with the blocks at ``t0 = 0, B, 2B, ...``. The partial
    results come back in block order and are combined in that order, so the result
    does not depend on where the blocks were computed: in memory, streamed from
    the store one block at a time, or on a Dask cluster (``scheduler``).

    Args:
        losses: array-like (R, N) with ``.shape`` and row slicing (numpy, zarr, a run's lazy array).
        block_rows: rows per block B, at most (a streamed matrix may use fewer, see ``max_memory_mb``).
        max_memory_mb: the memory budget of the loss matrix. A matrix of at most this
            size (float32) is read once into memory; a larger one is streamed, in blocks
            small enough that one block's working set (about :data:`~oppsig.signals.tuning.WORKING_COPIES` copies
            of the block) fits in it. Peak memory then follows this budget, not the run's size.
        scheduler: ``None``: blocks are computed here, one after another. Otherwise a
            Dask scheduler (``"threads"``, ``"synchronous"``, ``"processes"``, or a
            ``distributed.Client``): each block is read from the store and reduced by a
            Dask task (needs ``pip install oppsig[dask]``); the matrix is never held here.
        stream: read ``losses`` block by block even when it would fit the budget (a view
            derived from a matrix that already holds the budget, :meth:`mapped`).

    Raises:
        SignalsError: for a matrix that is not 2-D, has fewer than :data:`~oppsig.signals.tuning.MIN_ROWS`
            rows or fewer than 2 columns, or holds NaN or infinite values (the
            message names the first bad row and column).

    Example:
        >>> lm = LossMatrix(np.ones((10, 3)))
        >>> lm.shape, sum(len(b) for _, b in lm.diff_blocks())
        ((10, 3), 9)
    """

    def __init__(self, losses: Any, block_rows: int = 256, max_memory_mb: float = 2048.0,
                 scheduler: Any = None, stream: bool = False) -> None:
        shape = getattr(losses, "shape", None)
        if shape is None:
            losses = np.asarray(losses, dtype=np.float32)
            shape = losses.shape
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2:
            raise SignalsError(f"losses must be 2-D (steps, examples), got shape {shape}")
        r, n = shape
        if r < MIN_ROWS:
            raise SignalsError(f"losses has {r} recorded steps; need at least {MIN_ROWS} to measure loss changes")
        if n < 2:
            raise SignalsError(f"losses has {n} example column(s); need at least 2")
        self.shape = (r, n)
        self.block_rows = max(2, int(block_rows))
        self.max_memory_mb = float(max_memory_mb)
        self.scheduler = scheduler
        self._src = losses
        self._mem: np.ndarray | None = None
        if scheduler is None and not stream and (isinstance(losses, np.ndarray) or r * n * 4 <= max_memory_mb * 2**20):
            self._mem = np.empty((r, n), dtype=np.float32)
            for s, blk in self._read_blocks():
                self._mem[s : s + len(blk)] = blk
        else:
            fit = int(max_memory_mb * 2**20 / (WORKING_COPIES * 4 * n))
            self.block_rows = max(2, min(self.block_rows, fit))

    @property
    def in_memory(self) -> bool:
        return self._mem is not None

    def _read_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        r = self.shape[0]
        for s in range(0, r, self.block_rows):
            yield s, _read_rows(self._src, s, min(r, s + self.block_rows), self.shape[1])

    def _block(self, t0: int) -> np.ndarray:
        """``L[t0 : t0 + B + 1]`` (fewer rows at the end), float32, checked."""
        e = min(self.shape[0], t0 + self.block_rows + 1)
        if self._mem is not None:
            return self._mem[t0:e]
        return _read_rows(self._src, t0, e, self.shape[1])

    def block_starts(self) -> range:
        """The first change row ``t0`` of each block: ``0, B, 2B, ... < R - 1``."""
        return range(0, self.shape[0] - 1, self.block_rows)

    def map_blocks(self, fn) -> list:
        """``[fn(t0, L[t0 : t0 + B + 1]) for t0 in block_starts()]``, in block order.

        ``fn`` must be a pure function of its arguments (it may run in another
        thread or process under Dask); ``np.diff`` of the block gives the changes
        ``D[t0 : t0 + B]``. Its results should be small (copies, not views of the block).
        """
        return list(self.iter_blocks(fn))

    def iter_blocks(self, fn, batch: int = 16) -> Iterator:
        """:meth:`map_blocks` as an iterator: here one block at a time; under Dask ``batch`` blocks per compute,
        so that only that many partial results are held at once."""
        starts = self.block_starts()
        if self.scheduler is None:
            for t0 in starts:
                yield fn(t0, self._block(t0))
            return
        try:
            import dask
        except ImportError:
            raise SignalsError("a Dask scheduler needs dask: pip install 'oppsig[dask]'") from None
        r, n = self.shape
        src, f = dask.delayed(self._src, pure=True), dask.delayed(fn, pure=True)
        scheduler = self.scheduler
        if not isinstance(scheduler, str):  # a distributed.Client
            scheduler = getattr(scheduler, "get", scheduler)
        starts = list(starts)
        for i in range(0, len(starts), batch):
            parts = [dask.delayed(_block_task, pure=True)(f, src, t0, min(r, t0 + self.block_rows + 1), n)
                     for t0 in starts[i : i + batch]]
            yield from dask.compute(*parts, scheduler=scheduler)

    def row_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, L[first_row : first_row + b])`` for consecutive blocks, float32 (read here)."""
        if self._mem is not None:
            for s in range(0, self.shape[0], self.block_rows):
                yield s, self._mem[s : s + self.block_rows]
        else:
            yield from self._read_blocks()

    def diff_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(t0, D[t0 : t0 + B])`` of the loss changes ``D = L[1:] - L[:-1]`` (R-1, N), float32 (read here)."""
        for t0 in self.block_starts():
            yield t0, np.diff(self._block(t0), axis=0)

    def row(self, i: int) -> np.ndarray:
        """Losses of row ``i``: (N,) float32."""
        if self._mem is not None:
            return self._mem[i]
        return np.asarray(self._src[i : i + 1], dtype=np.float32)[0]

    def diff_columns(self, cols: np.ndarray) -> np.ndarray:
        """Loss changes of the columns ``cols``: (R-1, len(cols)) float32."""
        cols = np.asarray(cols, dtype=np.int64)
        if self._mem is not None:
            return np.diff(self._mem[:, cols], axis=0)
        parts = self.map_blocks(functools.partial(_diff_columns_block, cols=cols))
        return np.concatenate(parts) if parts else np.zeros((0, len(cols)), np.float32)

    def columns(self, cols: np.ndarray) -> np.ndarray:
        """Losses of the columns ``cols``: (R, len(cols)) float32."""
        cols = np.asarray(cols, dtype=np.int64)
        if self._mem is not None:
            return self._mem[:, cols]
        parts = self.map_blocks(functools.partial(_columns_block, cols=cols))
        return np.concatenate([p[:-1] for p in parts[:-1]] + [parts[-1]])

    def mapped(self, fn) -> "LossMatrix":
        """The matrix ``fn(L)`` of an elementwise ``fn`` (float32 in, float32 out), read the same way: computed
        once here when this matrix and its copy fit the memory budget together, else block by block from this
        matrix or its source (``fn`` must then be picklable for a Dask scheduler, e.g. a module-level function
        or a ``functools.partial`` of one)."""
        if self._mem is not None and 2 * self._mem.nbytes <= self.max_memory_mb * 2**20:
            out = np.empty(self.shape, dtype=np.float32)
            for s in range(0, self.shape[0], self.block_rows):
                out[s : s + self.block_rows] = fn(self._mem[s : s + self.block_rows])
            return LossMatrix(out, self.block_rows, self.max_memory_mb)
        src = self._mem if self._mem is not None else self._src
        return LossMatrix(_Mapped(src, fn), self.block_rows, self.max_memory_mb, self.scheduler, stream=True)

    def sum_blocks(self, fn) -> np.ndarray:
        """``sum_b fn(t0_b, L_b)`` over the blocks, in block order, float64 (e.g. ``D^T B`` products)."""
        out = None
        for p in self.iter_blocks(fn):
            out = np.array(p, dtype=np.float64) if out is None else out + p
        return out


class _Mapped:
    """Row slices of ``src`` through an elementwise ``fn`` (what :meth:`LossMatrix.mapped` streams)."""

    def __init__(self, src: Any, fn) -> None:
        self.src, self.fn, self.shape = src, fn, tuple(src.shape)

    def __getitem__(self, key):
        return self.fn(np.asarray(self.src[key], dtype=np.float32))


def _read_rows(src: Any, s: int, e: int, n: int) -> np.ndarray:
    """``src[s:e]`` as float32, checked for shape and finite values."""
    blk = np.asarray(src[s:e], dtype=np.float32)
    if blk.shape != (e - s, n):
        raise SignalsError(f"losses rows {s}.. read back with shape {blk.shape}, expected ({e - s}, {n})")
    bad = ~np.isfinite(blk)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise SignalsError(
            f"losses holds a non-finite value ({blk[i, j]}) at row {s + i}, column {j}; "
            "a diverged run cannot be analysed: cut the rows before the divergence"
        )
    return blk


def _block_task(fn, src: Any, s: int, e: int, n: int):
    """One Dask task: read ``L[s:e]`` from the store and reduce it with ``fn``."""
    return fn(s, _read_rows(src, s, e, n))


def _diff_columns_block(t0: int, blk: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.diff(blk[:, cols], axis=0)


def _columns_block(t0: int, blk: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return blk[:, cols]
