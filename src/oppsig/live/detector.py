"""The online spike detector: :func:`trend_baseline` and :func:`spike_test` (its arithmetic on a history of
log-losses), :class:`SpikeDetector` (history, refractory gap) and its verdict :class:`SpikeCheck`.

The detector works on ``y_t = log(loss_t)``. Its baseline at step t is the
median of the previous ``window`` values moved forward along their robust slope
(difference of the two halves' medians), so a downward trend does not lift the baseline, but never
below the same line through the latest ``max(5, window // 4)`` values alone: after a step down (an lr drop) the
whole window's slope would carry the line below the level the loss now holds. Its scale is
1.4826 x the median absolute deviation of the past residuals (of those values
around their robust line until ``window`` residuals exist): mini-batch noise and
edge-of-stability oscillation set the scale. Step t is a spike when its residual exceeds both ``z`` scales
and ``log(1 + min_rise)``. One event per spike: the spike lasts until the loss falls back to within half
that threshold of the baseline it had at the spike's first step (its decaying tail stays part of it), or, after
``window`` steps, until it no longer rises above its own last ``window`` values (a new level, from which the
baseline restarts; a divergence keeps rising and stays one event); the detector then stays quiet for ``gap``
steps. A spike's steps enter the baseline's window as the baseline they rose from, so neither its height
nor its fall tilts the line after it.
It starts firing once it holds ``window`` values and ``window`` residuals
(after ``2 * window`` steps).

Example:
    >>> import numpy as np
    >>> det = SpikeDetector(LiveConfig(window=11))
    >>> rng = np.random.default_rng(0)
    >>> loss = np.exp(-np.arange(60) / 40) * (1 + 0.01 * rng.standard_normal(60))
    >>> loss[50] *= 2.0  # the detector fires from step 2 * window = 22 on
    >>> [t for t, v in enumerate(loss) if det.update(t, float(v)) is not None]
    [50]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import LiveConfig
from ..signals.tuning import MAD_TO_SD

LIVE_SCALE_FLOOR = 1e-6
"""Smallest robust scale of the live detector's log-loss residuals (a flat loss has none)."""


RECENT_MIN = 5
"""Fewest latest values whose own line can hold up the baseline (:func:`trend_baseline`): fewer follow a rise."""


def _median(v: list[float]) -> float:
    """The median of a short list of floats, exactly as :func:`numpy.median` gives it (the mean of the middle two
    for an even length), at a twentieth of its cost on the detector's windows: it runs at every training step."""
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _floats(y) -> list[float]:
    return np.asarray(y, dtype=np.float64).tolist() if isinstance(y, np.ndarray) else [float(v) for v in y]


def _slope(y: list[float]) -> float:
    h = len(y) // 2
    if h < 1:
        return 0.0
    return (_median(y[-h:]) - _median(y[:h])) / (len(y) - h)


def robust_slope(y: np.ndarray) -> float:
    """Slope of a noisy series (w,): the difference of the medians of its two halves over their distance."""
    return _slope(_floats(y))


def _line(v: list[float]) -> float:
    """The median of ``v`` moved forward to the next step along its slope, when it falls (a rise is what the
    detector looks for, not a trend to follow)."""
    return _median(v) + min(_slope(v), 0.0) * (len(v) + 1) / 2


def trend_baseline(log_history: Sequence[float]) -> float:
    """Baseline of the next log-loss from the previous ones, (w,) -> float.

    The median of the window, moved forward along its :func:`robust_slope` by
    ``(w + 1) / 2`` steps (from the window's middle to the next step) when the
    slope is negative, but not below the same line drawn through the latest ``k = max(5, w // 4)`` values
    alone (their median moved forward ``(k + 1) / 2`` steps along their own slope): a step down inside the
    window (an lr drop) makes a steep slope that would carry the whole window's line below the level the
    loss holds now; that line never lifts the baseline above the window's median. On a straight line both
    give its next value. A rising window keeps its median (a rise is what the detector looks for, not a
    trend to follow).
    """
    y = _floats(log_history)
    if not y:
        return float("nan")
    # the latest values' line only stops a fall, never lifts the baseline above the window's median
    return max(_line(y), min(_median(y), _line(y[-max(RECENT_MIN, len(y) // 4):])))


def spike_test(value: float, log_history: Sequence[float], s: LiveConfig,
               residuals: Sequence[float] | None = None) -> tuple[float, float, float]:
    """``(residual, scale, threshold)`` of the log-loss ``log(value)`` against its history (w,).

    ``residual = log(value) - trend_baseline(history)``. ``scale`` is 1.4826 x the
    median absolute deviation of the past ``residuals`` when there are at least
    ``w`` of them, else of the history around its own robust line (median plus
    slope): the step-to-step noise either way. It is a spike when
    ``residual > threshold = max(z * scale, log(1 + min_rise))``.
    """
    y = _floats(log_history)
    r = math.log(max(value, 1e-12)) - trend_baseline(y)
    if residuals is not None and len(residuals) >= len(y):
        dev = _floats(residuals)
    else:
        med, slope, mid = _median(y), _slope(y), (len(y) - 1) / 2
        dev = [v - (med + slope * (i - mid)) for i, v in enumerate(y)]
    m = _median(dev)
    scale = max(MAD_TO_SD * _median([abs(d - m) for d in dev]), LIVE_SCALE_FLOOR)
    return r, scale, max(s.z * scale, math.log1p(s.min_rise))


@dataclass
class SpikeCheck:
    """The detector's verdict at one step."""

    step: int
    loss: float
    baseline: float  # exp of the log baseline
    rise: float  # loss / baseline - 1
    z: float  # residual over the noise scale


class SpikeDetector:
    """Online spike detector on a running loss (see the module docstring).

    ``update(step, loss)`` returns a :class:`SpikeCheck` at the first step of a
    spike and None otherwise. Non-finite losses are ignored (the loop's own
    divergence check handles them). ``state_dict`` holds everything the verdicts depend on: a detector
    loaded from it gives the verdicts the saved one would have given.
    """

    def __init__(self, settings: LiveConfig = LiveConfig()) -> None:
        self.s = settings
        self.logs: deque[float] = deque(maxlen=settings.window)  # the baseline's window (a spike's steps: its ref)
        self.raw: deque[float] = deque(maxlen=settings.window)  # the log-losses themselves
        self.residuals: deque[float] = deque(maxlen=4 * settings.window)
        self.in_spike = False
        self.quiet_until = -1
        self.last_step: int | None = None
        self.ref: float | None = None  # log baseline at the first step of the current spike
        self.onset: int | None = None  # that step

    def _spike_over(self, step: int, y: float, thr: float) -> bool:
        """Whether the current spike ended at this step (log-loss ``y``, threshold ``thr``)."""
        if y - self.ref <= thr / 2:  # back to the level it rose from (half the threshold: noise does not end it)
            return True
        # a new level: a whole window since the onset, and the loss neither above nor rising along it
        raw = list(self.raw)
        return step - self.onset >= self.s.window and y - trend_baseline(raw) <= thr and _slope(raw) <= 0

    def update(self, step: int, loss: float) -> SpikeCheck | None:
        if not math.isfinite(loss) or loss <= 0:
            return None
        out = None
        y = math.log(loss)
        if len(self.logs) >= self.s.window:
            r, scale, thr = spike_test(loss, list(self.logs), self.s, list(self.residuals))
            quiet = step <= self.quiet_until  # the aftermath of a spike neither fires nor sets the scale
            warm = len(self.residuals) >= self.s.window  # enough residuals for the scale
            if self.in_spike:
                if self._spike_over(step, y, thr):
                    if y - self.ref > thr / 2:  # a new level: the baseline restarts from it
                        self.logs.clear()
                        self.logs.extend(self.raw)
                    self.in_spike, self.ref, self.onset = False, None, None
                    self.quiet_until = step + self.s.gap - 1
            elif r > thr and not quiet and warm:
                out = SpikeCheck(step, loss, loss / math.exp(r), math.expm1(r), r / scale)
                self.in_spike, self.ref, self.onset = True, y - r, step
            if not self.in_spike and not quiet:
                self.residuals.append(r)
        self.logs.append(self.ref if self.in_spike else y)  # a spike does not move the baseline
        self.raw.append(y)
        self.last_step = step
        return out

    def state_dict(self) -> dict:
        return {"logs": list(self.logs), "raw": list(self.raw), "residuals": list(self.residuals),
                "in_spike": self.in_spike, "quiet_until": self.quiet_until, "last_step": self.last_step,
                "ref": self.ref, "onset": self.onset}

    def load_state_dict(self, d: dict) -> None:
        self.logs.clear()
        self.logs.extend(d.get("logs", []))
        self.raw.clear()
        self.raw.extend(d.get("raw", d.get("logs", [])))
        self.residuals.clear()
        self.residuals.extend(d.get("residuals", []))
        self.in_spike = bool(d.get("in_spike", False))
        self.quiet_until = int(d.get("quiet_until", -1))
        self.last_step = d.get("last_step")
        self.ref = d.get("ref")
        self.onset = d.get("onset")
        if self.in_spike and (self.ref is None or self.onset is None):  # a state saved without them
            self.ref = self.logs[-1] if self.logs else 0.0
            self.onset = self.last_step if self.last_step is not None else 0
