"""Spikes of the total loss: :func:`detect_spikes`, the one spike window (:func:`spike_window`,
:func:`spike_rows`) and the one spike share (:func:`rise_shares`).

Example:
    >>> t = np.arange(300.0)
    >>> loss = 2.0 * np.exp(-t / 150) + 0.1
    >>> loss[200] *= 1.8
    >>> [s.row for s in detect_spikes(loss)]
    [200]
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

from ..config import SignalsConfig
from .result import SignalsError, Spike
from .tuning import MIN_ROWS, SPIKE_SCALE_FLOOR, robust_scale


def detect_spikes(
    total_loss: np.ndarray,
    steps: np.ndarray | None = None,
    config: SignalsConfig = SignalsConfig(),
    sharpness: np.ndarray | None = None,
) -> list[Spike]:
    """Spikes of the total loss over its slow (e.g. downward) trend.

    The trend is a rolling median of ``log(total_loss)`` over
    ``config.spike_window`` rows; a spike is a local maximum of the residual
    that exceeds both ``config.spike_z`` robust standard deviations (:func:`~oppsig.signals.tuning.robust_scale`:
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
            :data:`~oppsig.signals.tuning.MIN_ROWS` values, or holds non-finite or negative values.
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
    scale = robust_scale(res, SPIKE_SCALE_FLOOR)
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
