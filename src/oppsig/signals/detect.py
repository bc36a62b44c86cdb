"""Detect: per-step extremes, recurring examples and coherent components of the loss changes.

The input is a :class:`~oppsig.signals.matrix.LossMatrix` ``L`` of shape (R, N): row ``r`` holds every
example's loss at recorded step ``steps[r]``. Its loss changes ``D = L[1:] - L[:-1]`` (R-1, N) are
what everything here looks at, read in blocks of rows. Spikes of the total loss are
:mod:`~oppsig.signals.spikes`'.

Main entry points:

- :func:`scan_losses`: one pass over the matrix giving per-step top-k extremes,
  per-example statistics and the total loss.
- :func:`coherent_components`: examples that swing together in a principal
  component of the standardised loss changes, even when none is extreme alone.
- :func:`extremes`: the examples whose loss rose and fell most into one row.

Example:
    >>> import numpy as np
    >>> from oppsig.signals.matrix import LossMatrix
    >>> scan = scan_losses(LossMatrix(np.cumsum(np.eye(10, 6), axis=0)), k=1)
    >>> scan.top_up.shape, scan.total.shape
    ((9, 1), (10,))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import SignalsConfig
from .matrix import LossMatrix
from .result import SignalsError


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
    inv = inverse_std(scan)
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


def inverse_std(scan: Scan) -> np.ndarray:
    """(N,) float32 ``1 / std`` of each example's loss changes, 0 where they are constant: it standardises them."""
    return np.where(scan.std > 1e-12, 1.0 / np.maximum(scan.std, 1e-30), 0.0).astype(np.float32)


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
