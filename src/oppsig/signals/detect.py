"""Detect: loss spikes, per-step extremes, recurring examples and coherent components.

The input is a loss matrix ``L`` of shape (R, N): row ``r`` holds every
example's loss at recorded step ``steps[r]``. Its loss changes
``D = L[1:] - L[:-1]`` (R-1, N) are what everything here looks at. The matrix
may be a numpy array or a lazy array (zarr, or a run's ``losses``); it is read
in blocks of rows, and held in memory only when it is small enough.

Main entry points:

- :func:`detect_spikes`: spikes of the total loss over its slow trend.
- :func:`scan_losses`: one pass over the matrix giving per-step top-k extremes,
  per-example statistics and the total loss.
- :func:`coherent_components`: examples that swing together in a principal
  component of the standardised loss changes, even when none is extreme alone.

Example:
    >>> import numpy as np
    >>> t = np.arange(300.0)
    >>> loss = 2.0 * np.exp(-t / 150) + 0.1
    >>> loss[200] *= 1.8
    >>> [s.row for s in detect_spikes(loss)]
    [200]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from scipy.ndimage import median_filter

from .config import SignalsConfig
from .result import SignalsError, Spike

MIN_ROWS = 8
"""Fewest recorded steps the search accepts (it needs several loss changes to correlate)."""


# ----------------------------------------------------------------------------- reading


WORKING_COPIES = 10
"""A streamed block of B rows costs about this many times its float32 size at once (the block, its changes,
their float64 copies and products); the block height is chosen so that this stays within the memory budget."""


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
            small enough that one block's working set (about :data:`WORKING_COPIES` copies
            of the block) fits in it. Peak memory then follows this budget, not the run's size.
        scheduler: ``None``: blocks are computed here, one after another. Otherwise a
            Dask scheduler (``"threads"``, ``"synchronous"``, ``"processes"``, or a
            ``distributed.Client``): each block is read from the store and reduced by a
            Dask task (needs ``pip install oppsig[dask]``); the matrix is never held here.
        stream: read ``losses`` block by block even when it would fit the budget (a view
            derived from a matrix that already holds the budget, :meth:`mapped`).

    Raises:
        SignalsError: for a matrix that is not 2-D, has fewer than :data:`MIN_ROWS`
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


# ----------------------------------------------------------------------------- spikes


def detect_spikes(
    total_loss: np.ndarray,
    steps: np.ndarray | None = None,
    config: SignalsConfig = SignalsConfig(),
    sharpness: np.ndarray | None = None,
) -> list[Spike]:
    """Spikes of the total loss over its slow (e.g. downward) trend.

    The trend is a rolling median of ``log(total_loss)`` over
    ``config.spike_window`` rows; a spike is a local maximum of the residual
    that exceeds both ``config.spike_z`` robust standard deviations (1.4826 x
    median absolute deviation of the residual) and ``log(1 + spike_min_height)``.
    Peaks closer than ``min_spike_gap`` rows are merged. Working in log space
    makes the test the same early (loss ~2) and late (loss ~0.1) in training.

    Args:
        total_loss: (R,) total (mean) training loss per recorded step, positive.
        steps: (R,) training step of each row (default ``arange(R)``).
        config: thresholds (see :class:`SignalsConfig`).
        sharpness: optional (R,) sharpness per row (NaN where not measured); a
            spike gets the measurement nearest its peak when it lies within
            ``config.spike_context`` rows, else none.

    Returns:
        The spikes, by row (top-k fields empty; :func:`find_signals` fills them).

    Raises:
        SignalsError: for a series that is not 1-D, has fewer than
            :data:`MIN_ROWS` values, or holds non-finite or negative values.
    """
    y = np.asarray(total_loss, dtype=np.float64)
    if y.ndim != 1:
        raise SignalsError(f"total_loss must be 1-D (steps,), got shape {y.shape}")
    if len(y) < MIN_ROWS:
        raise SignalsError(f"total_loss has {len(y)} values; need at least {MIN_ROWS}")
    if not np.isfinite(y).all():
        raise SignalsError(f"total_loss holds non-finite values at rows {np.flatnonzero(~np.isfinite(y))[:5].tolist()}")
    if (y < 0).any():
        raise SignalsError(f"total_loss must be >= 0; row {int(np.argmin(y))} is {y.min()}")
    steps = np.arange(len(y)) if steps is None else np.asarray(steps)
    ly = np.log(np.maximum(y, 1e-12))
    w = min(config.spike_window, len(y) | 1)
    trend = median_filter(ly, size=w, mode="nearest")
    res = ly - trend
    mad = 1.4826 * np.median(np.abs(res - np.median(res)))
    scale = max(mad, 1e-9)
    thr = max(config.spike_z * scale, np.log1p(config.spike_min_height))
    above = np.flatnonzero(res > thr)
    peaks: list[int] = []
    for i in above[np.argsort(-res[above], kind="stable")]:
        if all(abs(i - p) >= config.min_spike_gap for p in peaks):
            peaks.append(int(i))
    out = []
    for p in sorted(peaks):
        lo = max(0, p - config.spike_context)
        onset = lo + int(np.argmin(y[lo : p + 1]))
        sh = sh_step = None
        if sharpness is not None:
            s = np.asarray(sharpness, dtype=np.float64)
            ok = np.flatnonzero(np.isfinite(s))
            if len(ok):
                near = int(ok[np.argmin(np.abs(ok - p))])
                if abs(near - p) <= config.spike_context:  # a distant measurement says nothing of this spike
                    sh, sh_step = float(s[near]), int(steps[near])
        out.append(
            Spike(
                row=p,
                step=int(steps[p]),
                onset_row=onset,
                onset_step=int(steps[onset]),
                loss=float(y[p]),
                trend=float(np.exp(trend[p])),
                height=float(np.expm1(res[p])),
                z=float(res[p] / scale),
                sharpness=sh,
                sharpness_step=sh_step,
            )
        )
    return out


def spike_window(spike: Spike, n_changes: int, context: int) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of the loss-change matrix that belong to ``spike``: the one spike window.

    Change row ``t`` is ``L[t + 1] - L[t]``. The window runs from ``context`` rows
    before the spike's onset (the growing oscillation) through the rise to the
    change out of the peak (the fall), i.e. ``[onset_row - context, row + 1)``,
    clipped to ``[0, n_changes)``.

    Example:
        >>> s = Spike(row=50, step=50, onset_row=45, onset_step=45, loss=2.0, trend=1.0, height=1.0, z=9.0)
        >>> spike_window(s, 100, context=12)
        (33, 51)
    """
    return max(0, spike.onset_row - context), min(n_changes, spike.row + 1)


def spike_rows(spikes: list[Spike] | tuple[Spike, ...], n_changes: int, context: int) -> np.ndarray:
    """Rows of the loss-change matrix inside any :func:`spike_window`, ascending."""
    mask = np.zeros(n_changes, dtype=bool)
    for s in spikes:
        lo, hi = spike_window(s, n_changes, context)
        mask[lo:hi] = True
    return np.flatnonzero(mask)


def rise_shares(changes: np.ndarray, total: np.ndarray, spikes, n_examples: int) -> list[float]:
    """Share of each spike's net total-loss rise (onset to peak) carried by some examples: the one spike share.

    Args:
        changes: (R-1, m) loss changes of the examples (``L[1:] - L[:-1]`` of their columns).
        total: (R,) total (mean) loss.
        spikes: :class:`~oppsig.signals.result.Spike` objects.
        n_examples: N (the total loss is a mean over N examples).

    Returns:
        One share per spike: ``sum_i (L[peak, i] - L[onset, i]) / N`` over the
        examples, divided by ``total[peak] - total[onset]`` (NaN when the total did not rise).

    Example:
        >>> L = np.array([[1.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
        >>> s = Spike(row=2, step=2, onset_row=1, onset_step=1, loss=2.0, trend=1.0, height=1.0, z=9.0)
        >>> rise_shares(np.diff(L, axis=0)[:, :1], L.mean(axis=1), [s], 2)
        [1.0]
    """
    out = []
    for s in spikes:
        rise = float(total[s.row] - total[s.onset_row])
        part = float(np.asarray(changes)[s.onset_row : s.row].sum(dtype=np.float64)) / n_examples
        out.append(part / rise if rise > 0 else float("nan"))
    return out


def extremes(losses: Any, row: int, k: int = 20, window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` examples whose loss rose most and fell most into ``row``.

    Args:
        losses: (R, N) per-example losses (array-like; only two rows are read).
        row: the row the change ends at.
        k: examples per direction.
        window: the change is measured from ``row - window`` to ``row``.

    Returns:
        ``(up, down)``: (k,) columns, largest increase first / largest decrease first.

    Raises:
        SignalsError: when ``row - window`` or ``row`` lies outside the matrix, or ``k`` < 1.

    Example:
        >>> L = np.array([[1.0, 1.0, 1.0], [2.0, 0.5, 1.0]])
        >>> [a.tolist() for a in extremes(L, 1, k=1)]
        [[0], [1]]
    """
    shape = getattr(losses, "shape", None) or np.shape(losses)
    r, n = int(shape[0]), int(shape[1])
    if window < 1 or not (0 <= row - window and row < r):
        raise SignalsError(
            f"a change over {window} row(s) into row {row} needs rows {row - window}..{row} in 0..{r - 1}"
        )
    if k < 1:
        raise SignalsError(f"k must be >= 1, got {k}")
    k = min(k, n)
    d = np.asarray(losses[row], dtype=np.float64) - np.asarray(losses[row - window], dtype=np.float64)
    return np.argsort(-d, kind="stable")[:k], np.argsort(d, kind="stable")[:k]


# ----------------------------------------------------------------------------- one pass


@dataclass
class Scan:
    """What one pass over the loss changes gives.

    Attributes:
        total: (R,) mean loss per row.
        top_up, top_down: (R-1, k) columns of the k largest increases / decreases per change row.
        n_up, n_down: (N,) times each example is among them.
        mean, std: (N,) mean and standard deviation of each example's loss change.
        energy: (N,) sum of squared loss changes.
        alternation: (N,) minus the lag-1 autocorrelation of the loss changes.
        abs_row: (R-1,) sum over examples of the absolute loss change per row.
        top_share: (R-1,) share of ``abs_row`` carried by the 2k extremes.
    """

    total: np.ndarray
    top_up: np.ndarray
    top_down: np.ndarray
    n_up: np.ndarray
    n_down: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    energy: np.ndarray
    alternation: np.ndarray
    abs_row: np.ndarray
    top_share: np.ndarray


def _scan_block(t0: int, blk: np.ndarray, k: int) -> dict:
    """:func:`scan_losses`'s partial results for one block of rows ``L[t0 : t0 + b + 1]``."""
    d = np.diff(blk, axis=0)
    # copies, not views: a partial must not keep its block's (b, N) temporaries alive
    up = np.argpartition(-d, k - 1, axis=1)[:, :k].copy()
    dn = np.argpartition(d, k - 1, axis=1)[:, :k].copy()
    ad = np.abs(d)
    d64 = d.astype(np.float64)
    return {
        "total": blk.mean(axis=1, dtype=np.float64),
        "up": up, "down": dn,
        "abs_row": ad.sum(axis=1, dtype=np.float64),
        "top_abs": (np.take_along_axis(ad, up, 1).sum(1, dtype=np.float64)
                    + np.take_along_axis(ad, dn, 1).sum(1, dtype=np.float64)),
        "s1": d64.sum(0), "s2": (d64 * d64).sum(0), "lag": (d64[1:] * d64[:-1]).sum(0),
        "first": d64[0].copy(), "last": d64[-1].copy(),
    }


def scan_losses(lm: LossMatrix, k: int) -> Scan:
    """One pass over ``lm``: per-step top-k extremes and per-example statistics.

    The pass is :meth:`LossMatrix.map_blocks` of one block kernel, combined in
    block order: the same figures whether the blocks are computed in memory,
    streamed, or on a Dask cluster.

    Args:
        lm: the loss matrix (R, N).
        k: extremes per row and direction (clipped to N // 2).

    Returns:
        A :class:`Scan`.
    """
    r, n = lm.shape
    k = max(1, min(k, n // 2))
    t_n = r - 1
    total = np.empty(r)
    top_up = np.empty((t_n, k), dtype=np.int64)
    top_down = np.empty((t_n, k), dtype=np.int64)
    s1 = np.zeros(n)
    s2 = np.zeros(n)
    lag = np.zeros(n)
    abs_row = np.empty(t_n)
    top_abs = np.empty(t_n)
    prev = None
    for t0, p in zip(lm.block_starts(), lm.iter_blocks(functools.partial(_scan_block, k=k))):
        b = len(p["up"])
        total[t0 : t0 + b + 1] = p["total"]
        top_up[t0 : t0 + b] = p["up"]
        top_down[t0 : t0 + b] = p["down"]
        abs_row[t0 : t0 + b] = p["abs_row"]
        top_abs[t0 : t0 + b] = p["top_abs"]
        s1 += p["s1"]
        s2 += p["s2"]
        if prev is not None:
            lag += prev * p["first"]
        lag += p["lag"]
        prev = p["last"]
    mean = s1 / t_n
    var = np.maximum(s2 / t_n - mean**2, 0.0)
    std = np.sqrt(var)
    if t_n > 1:
        ac = (lag / (t_n - 1) - mean**2) / np.where(var > 0, var, np.inf)
    else:
        ac = np.zeros(n)
    n_up = np.bincount(top_up.ravel(), minlength=n)
    n_down = np.bincount(top_down.ravel(), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        top_share = np.where(abs_row > 0, top_abs / abs_row, 0.0)
    return Scan(total, top_up, top_down, n_up, n_down, mean, std, s2, -ac, abs_row, top_share)


# ----------------------------------------------------------------------------- components


@dataclass
class Components:
    """Leading principal components of the standardised loss changes.

    Attributes:
        time: (R-1, c) unit time profiles (left singular vectors).
        values: (c,) singular values.
        loadings: (N, c) unit example loadings (right singular vectors).
    """

    time: np.ndarray
    values: np.ndarray
    loadings: np.ndarray


def coherent_components(lm: LossMatrix, scan: Scan, config: SignalsConfig) -> Components:
    """The leading principal components of the standardised loss changes.

    Each example's loss changes are standardised (zero mean, unit variance), so
    that a few dozen examples that move together form a component whatever
    their individual size; the leading components are found by a randomised
    SVD (two power iterations) that reads the matrix in row blocks: ``6`` passes
    with ``c + 10`` vectors, time ``O(R N (c + 10))``. The examples loading most
    on either side of a component seed the groups (:mod:`~oppsig.signals.group`).

    Args:
        lm: the loss matrix (R, N).
        scan: its :func:`scan_losses` statistics.
        config: ``n_components``, ``seed``.

    Returns:
        :class:`Components` (empty arrays when ``n_components`` is 0).
    """
    r, n = lm.shape
    t_n = r - 1
    c = min(config.n_components, t_n - 1, n - 1)
    if c <= 0:
        return Components(np.zeros((t_n, 0)), np.zeros(0), np.zeros((n, 0)))
    mu = scan.mean.astype(np.float32)
    inv = np.where(scan.std > 1e-12, 1.0 / np.maximum(scan.std, 1e-30), 0.0).astype(np.float32)
    rng = np.random.default_rng(config.seed)
    width = min(c + 10, t_n, n)

    def zt_times(b: np.ndarray) -> np.ndarray:  # Z^T b: (N, w)
        return lm.sum_blocks(functools.partial(_zt_block, mu=mu, inv=inv, b=b))

    def z_times(q: np.ndarray) -> np.ndarray:  # Z q: (R-1, w)
        parts = lm.map_blocks(functools.partial(_z_block, mu=mu, inv=inv, q32=q.astype(np.float32)))
        return np.concatenate(parts).astype(np.float64)

    omega = rng.standard_normal((t_n, width)).astype(np.float32)
    q, _ = np.linalg.qr(zt_times(omega))
    for _ in range(2):
        b, _ = np.linalg.qr(z_times(q))
        q, _ = np.linalg.qr(zt_times(b.astype(np.float32)))
    b = z_times(q)
    u, s, wt = np.linalg.svd(b, full_matrices=False)
    u, s = u[:, :c], s[:c]
    v = q @ wt[:c].T  # (N, c)
    return Components(u, s, v)


def _zt_block(t0: int, blk: np.ndarray, mu, inv, b) -> np.ndarray:
    """``Z[t0 : t0 + B]^T b[t0 : t0 + B]`` of the standardised changes of one block: (N, w) float64."""
    d = np.diff(blk, axis=0)
    return (((d - mu) * inv).T @ b[t0 : t0 + len(d)]).astype(np.float64)


def _z_block(t0: int, blk: np.ndarray, mu, inv, q32) -> np.ndarray:
    """``Z[t0 : t0 + B] q`` of one block: (B, w) float32."""
    return ((np.diff(blk, axis=0) - mu) * inv) @ q32


def recurring_examples(scan: Scan, min_recurrence: int) -> np.ndarray:
    """Examples (columns) among the per-step extremes at least ``min_recurrence`` times, most energetic first."""
    cnt = scan.n_up + scan.n_down
    idx = np.flatnonzero(cnt >= min_recurrence)
    return idx[np.argsort(-scan.energy[idx], kind="stable")]
