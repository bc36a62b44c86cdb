"""Seeds from correlation neighbourhoods: small groups in records with few rows and many columns.

The component seeds of :mod:`oppsig.signals.group` see a group only when its share of the loss changes' variance
stands out of the noise. With ``R`` rows (loss changes) and ``N`` columns, the top eigenvalues of a correlation
matrix of pure noise reach about ``(1 + sqrt(N / R))^2`` (the Marchenko-Pastur edge), while a group of ``m``
members whose loss changes correlate ``rho`` pairwise adds one of about ``1 + (m - 1) rho``. On a mini-batch
run's probe (75 rows, 1,024 columns: edge 22) a planted group of 12 probed members at ``rho`` 0.5 (6.5) lies
inside the noise, though each member correlates with the group's mean at 0.7 and the group is plain to see
once one looks near one of its members.

:func:`neighbour_seeds` therefore looks near every example: its seed is the example and its ``size - 1`` most
correlated examples. A seed is kept when most of it holds together as a group must: the median of its
members' correlations with the seed's mean is at least ``min_corr``, and at most half of its members that reach
``min_corr`` (its core) are already held, by a group found before (``exclude``) or by the mean of a more coherent
seed kept before it (at ``min_corr``). The seeds then grow into groups like every
other seed (:func:`~oppsig.signals.group.grow_groups`), where each member must correlate with the group's mean at
least ``min_corr``: in noise a seed's mean does not hold its members and the seed dissolves. Only the loss
record is read, so a permutation of the columns permutes the seeds with it.

Cost: one pass over the ``N x N`` correlations in column blocks (``R N^2`` multiply-adds), and ``N`` seeds'
``size x size`` correlations; memory ``R x N`` plus a block of ``block x N``.

Example:
    >>> from oppsig.signals.detect import scan_losses
    >>> from oppsig.signals.matrix import LossMatrix
    >>> rng = np.random.default_rng(0)
    >>> d = rng.standard_normal((60, 800))
    >>> d[:, 100:112] += 1.2 * rng.standard_normal((60, 1))  # 12 examples in step, pairwise corr ~0.6
    >>> lm = LossMatrix(np.concatenate([np.zeros((1, 800)), d.cumsum(axis=0)]))
    >>> seeds = neighbour_seeds(lm, scan_losses(lm, 5), size=10, min_corr=0.6)
    >>> len(seeds), int(np.isin(seeds[0], np.arange(100, 112)).sum())
    (1, 10)
"""

from __future__ import annotations

import numpy as np

from .detect import Scan, inverse_std
from .matrix import LossMatrix

__all__ = ["neighbour_seeds"]


def _standardised(lm: LossMatrix, scan: Scan, broad: np.ndarray | None) -> np.ndarray:
    """Loss changes with zero mean and unit norm per column, less their part along ``broad`` (R-1, b) orthonormal
    time profiles (then scaled back to unit norm; constant columns stay zero)."""
    d = lm.diff_columns(np.arange(lm.shape[1])).astype(np.float32)
    d -= d.mean(axis=0)
    d *= inverse_std(scan)[None, :]
    if broad is not None and broad.shape[1]:
        q = broad.astype(np.float32)
        d -= q @ (q.T @ d)
    norm = np.linalg.norm(d, axis=0)
    return d * np.where(norm > 1e-6 * np.sqrt(d.shape[0]), 1.0 / np.maximum(norm, 1e-30), 0.0)[None, :]


def neighbour_seeds(lm: LossMatrix, scan: Scan, size: int, min_corr: float, max_seeds: int = 60,
                    block: int = 256, exclude: np.ndarray | None = None,
                    broad: np.ndarray | None = None) -> list[np.ndarray]:
    """Each example with its ``size - 1`` most correlated examples, kept when coherent (see the module docstring).

    Args:
        lm: the loss matrix (R, N).
        scan: its :func:`~oppsig.signals.detect.scan_losses` (per-example standard deviations).
        size: members of each seed (>= 2).
        min_corr: the member-to-mean correlation groups are held to; a seed's median member must reach it.
        max_seeds: at most this many seeds, the most coherent first.
        block: columns per block of the correlation pass.
        exclude: rows already in groups: a seed whose core lies mostly among them is not taken.
        broad: (R-1, b) orthonormal time profiles taken out of every column before the correlations (the shared
            oscillation that most examples follow, each with its own loading: without it, the examples of similar
            loading would seed slices of it).

    Returns:
        Rows of each seed (ascending), most coherent first; none when ``N < 2 size``.
    """
    n = lm.shape[1]
    if size < 2 or n < 2 * size or lm.shape[0] < 3:
        return []
    z = _standardised(lm, scan, broad)
    dead = np.linalg.norm(z, axis=0) == 0
    live = np.flatnonzero(~dead)
    nbrs = np.empty((n, size), dtype=np.int64)
    for s in range(0, n, block):
        c = z[:, s : s + block].T @ z  # (B, N) correlations
        rows = np.arange(c.shape[0])
        c[rows, s + rows] = np.inf  # the example itself first
        c[:, dead] = -np.inf
        nbrs[s : s + len(rows)] = np.argpartition(-c, size - 1, axis=1)[:, :size]
    nbrs = nbrs[live]
    zs = z[:, nbrs]  # (R-1, n_live, size)
    mean = zs.sum(axis=2)  # (R-1, n_live): each seed's summed series
    with np.errstate(invalid="ignore", divide="ignore"):
        fit = np.einsum("rik,ri->ik", zs, mean) / np.linalg.norm(mean, axis=0)[:, None]
    score = np.nan_to_num(np.median(fit, axis=1), nan=-1.0)  # the median member's correlation with its seed's mean
    order = np.argsort(-score, kind="stable")
    order = order[score[order] >= min_corr]
    out: list[np.ndarray] = []
    taken = np.zeros(n, dtype=bool) if exclude is None else np.isin(np.arange(n), exclude)
    for i in order:
        core = nbrs[i][fit[i] >= min_corr]  # the members that hold together
        if taken[core].sum() * 2 <= len(core):
            out.append(np.sort(nbrs[i]))
            m = mean[:, i] / np.linalg.norm(mean[:, i])
            taken |= z.T @ m >= min_corr  # every example this seed's mean would hold
            taken[nbrs[i]] = True
            if len(out) >= max_seeds:
                break
    return out
