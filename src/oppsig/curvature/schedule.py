"""When to measure the sharpness: every ``k`` steps, or an adaptive schedule that spends products near the threshold.

:class:`FixedSchedule` measures at every multiple of ``every``. :class:`AdaptiveSchedule` measures at multiples of
``min_every`` only (its steps are a subset of the fixed schedule's at ``min_every``), at most ``max_every`` steps
apart, and after each measurement chooses the next from what it has seen (``l``: the sharpness, ``e``: its
certified absolute bound, ``tau``: the optimiser's threshold, ``s0, l0, e0``: the measurement before):

1. **Approaching the threshold**: the steps the sharpness would take to reach ``tau`` at the fastest speed the
   two measurements' bounds allow (below: ``((l + e) - (l0 - e0)) / (s - s0)``, above: ``((l0 + e0) - (l - e))
   / (s - s0)``), times ``safety``; at least ``min_every``, at most twice the last interval. Close to ``tau``
   this is every grid step.
2. **Moving away** (speed <= 0): twice the last interval, at least ``first``. After the first measurement (no
   speed yet): ``first``. Every interval is at most ``max_every``, and at most ``first`` **near the threshold**
   (``|l - tau| <= margin * tau + e``). Without a threshold (SAM, sign-SGD, Adam without ``precond_sharpness``)
   the relative change per step takes the speed's place: the interval over which it moves by ``margin`` of
   itself.
3. **Between measurements**, at every step and for free, while the sharpness was last seen below
   ``(1 + margin) tau``: any rise of the loss (a spike, an oscillation) moves the next measurement to the next
   grid step. Under plain gradient descent (no momentum, no weight decay, the full batch) a rise is evidence of
   a crossing: by Taylor's theorem with integral remainder, ``f(theta - lr g) - f(theta) = -lr |g|^2 +
   lr^2 / 2 * g^T Hbar g`` for a weighted mean ``Hbar`` of the Hessians on the segment, so a rise means
   ``g^T Hbar g / |g|^2 > 2 / lr``: the sharpness exceeded the threshold somewhere on that step. The same
   identity gives the curvature along the step ``d = theta_{t+1} - theta_t``, ``c = 2 (f_{t+1} - f_t +
   |d|^2 / lr) / |d|^2`` (at most the largest sharpness on the segment, up to the loss's rounding);
   :meth:`AdaptiveSchedule.observe_step` computes it when the hook passes ``|d|^2`` (plain GD), and
   ``c >= (1 - margin) tau`` triggers like a rise. Above the band, loss spikes draw no measurement: they are
   the edge of stability's own oscillation, and on fc-tanh CE they would triple the measurements.

Every value the hook records is a full certified solve; the schedule only chooses the steps. Its state is a
dict of numbers (:meth:`state_dict`), saved with the hook's, so a resumed run measures at the same steps.

Example:
    >>> s = AdaptiveSchedule(min_every=5, max_every=100, margin=0.1, safety=0.8, first=25)
    >>> s.observe_measurement(0, value=10.0, err=0.01, threshold=20.0)  # no speed yet: first
    25
    >>> s.due(20), s.due(25)
    (False, True)
    >>> s.observe_measurement(25, value=10.5, err=0.01, threshold=20.0)  # 0.8 * 9.5 / 0.0208 = 365: twice 25
    75
    >>> s.observe_measurement(75, value=16.0, err=0.01, threshold=20.0)  # 0.8 * 4 / 0.11 = 29 steps
    100
    >>> s.observe_measurement(100, value=18.5, err=0.01, threshold=20.0)  # 0.8 * 1.5 / 0.1 = 12 steps
    110
    >>> s.observe_measurement(110, value=19.7, err=0.01, threshold=20.0)  # 0.8 * 0.3 / 0.12 = 2: min_every
    115
"""

from __future__ import annotations

import math

from ..errors import OppsigError

__all__ = ["FixedSchedule", "AdaptiveSchedule", "make_schedule"]


class FixedSchedule:
    """Measure at every multiple of ``every`` (0: never).

    Example:
        >>> FixedSchedule(25).due(50), FixedSchedule(25).due(51)
        (True, False)
    """

    kind = "fixed"

    def __init__(self, every: int):
        self.every = int(every)

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def observe_measurement(self, step: int, value: float, err: float, threshold: float | None) -> int:
        return step + self.every

    def observe_step(self, step: int, loss: float | None, step_sq: float | None = None, lr: float | None = None):
        pass

    def state_dict(self) -> dict:
        return {"kind": self.kind}

    def load_state_dict(self, d: dict) -> None:
        pass


class AdaptiveSchedule:
    """The adaptive schedule of the module docstring.

    Args:
        min_every: the grid: every measured step is a multiple of it, and measurements near the threshold are
            this far apart.
        max_every: the longest interval (a multiple of ``min_every`` at most; rounded down to the grid).
        margin: the band around the threshold, as a fraction of it, in which every grid step is measured.
        safety: the share of the predicted steps to the threshold that the schedule waits.
        first: the interval after the first measurement (default ``min_every``).

    Raises:
        OppsigError: for a ``min_every`` < 1, ``max_every`` < ``min_every``, a ``margin`` outside [0, 1) or a
            ``safety`` outside (0, 1].
    """

    kind = "adaptive"

    def __init__(self, min_every: int, max_every: int, margin: float = 0.1, safety: float = 0.8,
                 first: int | None = None):
        if min_every < 1 or max_every < min_every:
            raise OppsigError(f"adaptive schedule needs 1 <= min_every <= max_every (got min_every={min_every}, "
                              f"max_every={max_every}); pass --curvature.min_every and a larger --curvature.every")
        if not (0 <= margin < 1 and 0 < safety <= 1):
            raise OppsigError(f"adaptive schedule needs margin in [0, 1) and safety in (0, 1] (got margin={margin}, "
                              f"safety={safety}); pass --curvature.margin=0.1")
        self.min_every, self.margin, self.safety = int(min_every), float(margin), float(safety)
        self.max_every = max(self.min_every, int(max_every) // self.min_every * self.min_every)
        self.next_step = 0
        self.last: tuple[int, float, float] | None = None  # (step, value, err) of the latest measurement
        self.interval = self.min_every
        self.first = self.min_every if first is None else max(self.min_every, min(int(first), self.max_every))
        self.below = True  # the sharpness was last seen below (1 + margin) tau (or never seen)
        self.threshold: float | None = None
        self.prev_loss: float | None = None
        self.pending: tuple[float, float] | None = None  # (|d|^2, lr) of the step after prev_loss's

    def due(self, step: int) -> bool:
        return step >= self.next_step and step % self.min_every == 0

    def _grid_after(self, step: int) -> int:
        return (step // self.min_every + 1) * self.min_every

    def _interval(self, step: int, value: float, err: float, threshold: float | None) -> int:
        near = threshold is not None and abs(value - threshold) <= self.margin * threshold + err
        longest = min(self.first, self.max_every) if near else self.max_every
        if self.last is None or self.last[0] >= step:
            return self.first  # no speed yet
        s0, v0, e0 = self.last
        dt = step - s0
        if threshold is None:
            rate = abs(value - v0) / dt / max(abs(value), 1e-12)
            dist = self.margin
        elif value < threshold:
            rate = ((value + err) - (v0 - e0)) / dt
            dist = threshold - (value + err)
        else:
            rate = ((v0 + e0) - (value - err)) / dt
            dist = (value - err) - threshold
        if rate <= 0 or not math.isfinite(rate):
            return min(max(2 * self.interval, self.first), longest)
        steps = self.safety * dist / rate
        return int(min(max(steps, self.min_every), longest, 2 * self.interval))

    def observe_measurement(self, step: int, value: float, err: float, threshold: float | None) -> int:
        """Take the measurement at ``step`` (value, its absolute bound, the threshold or None); return the next step."""
        interval = self._interval(step, value, err, threshold)
        interval = max(self.min_every, interval // self.min_every * self.min_every)
        self.interval = interval
        self.last = (int(step), float(value), float(err))
        self.threshold = None if threshold is None else float(threshold)
        self.below = threshold is None or value + err < (1 + self.margin) * threshold
        self.next_step = int(step) + interval
        return self.next_step

    def observe_step(self, step: int, loss: float | None, step_sq: float | None = None, lr: float | None = None):
        """The loss at ``step`` (at theta_step) and, under plain GD, ``|theta_{step+1} - theta_step|^2`` and the lr.

        With ``step_sq`` of the previous step, the curvature along it (module docstring, 3.) joins the triggers.
        """
        if loss is None or not math.isfinite(loss):
            self.prev_loss = self.pending = None
            return
        prev, pending = self.prev_loss, self.pending
        self.prev_loss = float(loss)
        self.pending = None if step_sq is None or lr is None or not step_sq > 0 else (float(step_sq), float(lr))
        if prev is None:
            return
        rise = (loss - prev) / max(abs(prev), 1e-12)
        near = False
        if pending is not None and self.threshold is not None:
            curvature = 2.0 * (loss - prev + pending[0] / pending[1]) / pending[0]
            near = curvature >= (1 - self.margin) * self.threshold
        if self.below and (rise > 1e-6 or near):  # 1e-6: above the rounding of a float32 mean
            self.next_step = min(self.next_step, self._grid_after(step))

    def state_dict(self) -> dict:
        return {"kind": self.kind, "next_step": self.next_step, "last": None if self.last is None else list(self.last),
                "interval": self.interval, "below": self.below, "threshold": self.threshold,
                "prev_loss": self.prev_loss, "pending": None if self.pending is None else list(self.pending)}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict`'s dict.

        Raises:
            OppsigError: when ``d`` is the state of another kind of schedule.
        """
        if d.get("kind") != self.kind:
            raise OppsigError(f"the checkpoint's sharpness schedule is {d.get('kind')!r}, this run's is adaptive; "
                              f"resume with --curvature.schedule={d.get('kind') or 'fixed'}")
        self.next_step, self.interval, self.below = int(d["next_step"]), int(d["interval"]), bool(d["below"])
        self.last = None if d["last"] is None else (int(d["last"][0]), float(d["last"][1]), float(d["last"][2]))
        self.threshold, self.prev_loss = d["threshold"], d["prev_loss"]
        self.pending = None if d.get("pending") is None else (float(d["pending"][0]), float(d["pending"][1]))


def make_schedule(cfg) -> FixedSchedule | AdaptiveSchedule:
    """The schedule a :class:`~oppsig.config.CurvatureConfig` asks for (``cfg.schedule``).

    Example:
        >>> from oppsig.config import CurvatureConfig
        >>> make_schedule(CurvatureConfig(every=25, schedule="adaptive")).max_every
        200
    """
    if cfg.schedule == "fixed":
        return FixedSchedule(cfg.every)
    longest = cfg.max_every or 8 * cfg.every
    return AdaptiveSchedule(cfg.min_every, longest, margin=cfg.margin, first=cfg.every)
