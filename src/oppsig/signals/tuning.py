"""The search's fixed tuning constants (those outside :class:`~oppsig.config.SignalsConfig`), the robust scale
and the derivation of per-item random generators.

Each constant says where its value comes from. The seeds of the search all start at ``SignalsConfig.seed``;
:func:`derived_rng` gives an item (e.g. a pair) a generator of its own from that seed.

Example:
    >>> float(robust_scale(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), floor=1e-9))
    1.4826
    >>> bool(derived_rng(0, 3, 5).integers(100) == derived_rng(0, 3, 5).integers(100))
    True
"""

from __future__ import annotations

import numpy as np

MIN_ROWS = 8
"""Fewest recorded steps the search accepts (it needs several loss changes to correlate).
Chosen by hand: the smallest record whose loss changes still give a correlation and a trend."""

WORKING_COPIES = 10
"""A streamed block of B rows costs about this many times its float32 size at once (the block, its changes,
their float64 copies and products); the block height is chosen so that this stays within the memory budget.
Counted from the temporaries of the block kernels (:mod:`~oppsig.signals.matrix`)."""

MAD_TO_SD = 1.4826
"""Median absolute deviation to standard deviation of a normal distribution (``1 / Phi^-1(3/4)``)."""

POOL = 2000
"""Random examples whose loss changes the anti-phase null draws from (more when a pair needs more).
Calibrated with it: docs/findings.md, detection's calibration (never shrunk below a pair's size)."""

NULL_HALF = 20
"""Size of each half of the random splits whose mean correlation is the run's generic anti-phase
(``SignalsResult.null_corr``). Chosen by hand: the size of a typical planted group."""
NULL_HALF_DRAWS = 50
"""Random splits behind ``SignalsResult.null_corr`` (a summary figure, not a test). Chosen by hand."""
ANTI_PHASE_MIN_DRAWS = 199
"""Fewest draws of the anti-phase null per pair (more when its level needs them to resolve).
Calibrated with it: docs/findings.md, detection's calibration."""

MERGE_CORR = 0.9
"""Groups whose mean loss changes correlate at least this are one group that two seeds split.
Chosen by hand on planted synthetic records; calibrated with it: docs/findings.md, detection's calibration."""

SPARSE_SHARE = 0.1
"""A component is *sparse* when its participation ratio is at most this share of the examples.
Chosen by hand on planted synthetic records; calibrated with it: docs/findings.md, detection's calibration."""
SPARSE_Z = 6.0
"""Robust z-score (median, :data:`MAD_TO_SD` x MAD) an example's weight in the sparse subspace must reach.
Chosen by hand on planted synthetic records; calibrated with it: docs/findings.md, detection's calibration."""
SPARSE_COS = 0.6
"""Smallest cosine between a member's sparse-subspace coordinates and its group's mean coordinates.
Chosen by hand on planted synthetic records; calibrated with it: docs/findings.md, detection's calibration."""

RELATIVE_FLOOR = 1e-4
"""Relative changes are the changes of ``log(L + floor)``, ``floor`` this share of the median first-row loss:
a float32 loss far below its start is mostly rounding, and the floor keeps its log from amplifying it.
Calibrated with it: docs/findings.md, quiet planted groups and the relative view."""

SPIKE_SCALE_FLOOR = 1e-9
"""Smallest robust scale of the log total-loss residual in spike detection (a flat loss has none)."""
SPARSE_SCALE_FLOOR = 1e-12
"""Smallest robust scale of an example's weight in the sparse subspace."""


def robust_scale(x: np.ndarray, floor: float, axis: int | None = None) -> np.ndarray | float:
    """:data:`MAD_TO_SD` times the median absolute deviation of ``x`` (along ``axis``), at least ``floor``.

    Example:
        >>> float(robust_scale(np.zeros(5), floor=1e-9))
        1e-09
    """
    med = np.median(x, axis=axis)
    if axis is not None:
        med = np.expand_dims(med, axis)
    mad = MAD_TO_SD * np.median(np.abs(x - med), axis=axis)
    return np.maximum(mad, floor) if axis is not None else max(mad, floor)


def derived_rng(seed: int, *keys: int) -> np.random.Generator:
    """The generator of the item ``keys`` (e.g. a pair's two group ids) under the search's ``seed``:
    ``default_rng([seed, *keys])``, or ``default_rng(seed)`` without keys."""
    return np.random.default_rng([seed, *keys] if keys else seed)

PROBE_CANDIDATES = 2000
"""On a mini-batch run's probe subset, the examples clustered for group seeds: every one among the per-step
extremes at least once, up to this many (most energetic first), where a full-batch record clusters only the
examples among them at least ``min_recurrence`` times. Between probe rows k steps apart the extremes of one
row are mostly mini-batch noise, so recurrence says little there; a probe of up to this many columns costs
one ``pdist`` of at most 2,000 columns (measured on the 1,024-example probe of
``configs/fc-tanh-ce-sgd-cifar5k.yaml``: benchmarks/minibatch_families.py)."""

