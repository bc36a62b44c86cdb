"""Live spike attribution: while training runs, say which examples and groups carry each loss spike.

At every step the running (total or mini-batch) loss goes through an online
spike detector; at a spike, within the step, the per-example losses of that step
are compared with each example's loss at the spike's onset, and the rise is
split over the examples and over groups: groups of an earlier ``oppsig detect``
(``signals.json`` of this or another run), or groups estimated online from the
recent per-example loss changes. The result is one line, e.g.::

    step 655: loss +201% over trend (z 14.2); 58% of the rise from group 0 (43 frogs, bright background)
    vs group 12 (142 frogs, dark background); sharpness 31.2 / 2/lr 20

and an event in ``<run>/events.jsonl`` (and TensorBoard when asked).

Pieces (pure functions first, then two small stateful objects):

- :func:`trend_baseline`, :func:`spike_test`: the detector's arithmetic on a
  history of log-losses;
- :func:`rise_contributions`, :func:`group_shares`, :func:`online_groups`,
  :func:`describe_rows`: attribution;
- :class:`SpikeDetector`: the online detector (history, refractory gap);
- :class:`LiveAttribution`: detector + per-example history + groups + event log;
  what the training hook, the framework callbacks and ``Recorder(live=...)`` use.

The detector works on ``y_t = log(loss_t)``. Its baseline at step t is the
median of the previous ``window`` values moved forward along their robust slope
(difference of the two halves' medians), so a downward trend does not lift the baseline, its scale
1.4826 x the median absolute deviation of the past residuals (of those values
around their robust line until ``window`` residuals exist): mini-batch noise and
edge-of-stability oscillation set the scale. Step t is a spike when its residual exceeds both ``z`` scales
and ``log(1 + min_rise)``; the detector then stays quiet until the residual
falls back below the threshold (one event per spike), and for ``gap`` steps.
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

import json
import math
import os
import sys
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import LiveConfig

EVENTS = "events.jsonl"


# ----------------------------------------------------------------------------- pure functions


def robust_slope(y: np.ndarray) -> float:
    """Slope of a noisy series (w,): the difference of the medians of its two halves over their distance."""
    y = np.asarray(y, dtype=np.float64)
    h = len(y) // 2
    if h < 1:
        return 0.0
    return float(np.median(y[-h:]) - np.median(y[:h])) / (len(y) - h)


def trend_baseline(log_history: np.ndarray) -> float:
    """Baseline of the next log-loss from the previous ones, (w,) -> float.

    The median of the window, moved forward along its :func:`robust_slope` by
    ``(w + 1) / 2`` steps (from the window's middle to the next step) when the
    slope is negative; a rising window keeps its median (a rise is what the
    detector looks for, not a trend to follow).
    """
    y = np.asarray(log_history, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    # only a falling trend moves the baseline: a rising loss is what the detector looks for
    return float(np.median(y)) + min(robust_slope(y), 0.0) * (len(y) + 1) / 2


def spike_test(value: float, log_history: np.ndarray, s: LiveConfig,
               residuals: np.ndarray | None = None) -> tuple[float, float, float]:
    """``(residual, scale, threshold)`` of the log-loss ``log(value)`` against its history (w,).

    ``residual = log(value) - trend_baseline(history)``. ``scale`` is 1.4826 x the
    median absolute deviation of the past ``residuals`` when there are at least
    ``w`` of them, else of the history around its own robust line (median plus
    slope): the step-to-step noise either way. It is a spike when
    ``residual > threshold = max(z * scale, log(1 + min_rise))``.
    """
    y = np.asarray(log_history, dtype=np.float64)
    r = math.log(max(value, 1e-12)) - trend_baseline(y)
    if residuals is not None and len(residuals) >= len(y):
        dev = np.asarray(residuals, dtype=np.float64)
    else:
        dev = y - (np.median(y) + robust_slope(y) * (np.arange(len(y)) - (len(y) - 1) / 2))
    scale = max(1.4826 * float(np.median(np.abs(dev - np.median(dev)))), 1e-6)
    return r, scale, max(s.z * scale, math.log1p(s.min_rise))


def rise_contributions(now: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each example's part of the rise: ``now - ref`` (NaN where either is unknown), (n,)."""
    return np.asarray(now, dtype=np.float64) - np.asarray(ref, dtype=np.float64)


def group_shares(contrib: np.ndarray, groups: dict[Any, np.ndarray]) -> dict[Any, float]:
    """Share of the net rise carried by each group, ``{group: sum_g c / sum c}``.

    Args:
        contrib: (n,) rise contributions of the observed examples (NaN: not observed).
        groups: ``{group: (m,) column positions into contrib}``.

    When the net rise is not positive (possible on a mini-batch), shares are of
    the positive part instead.
    """
    c = np.nan_to_num(np.asarray(contrib, dtype=np.float64), nan=0.0)
    total = c.sum()
    if total <= 0:
        c = np.maximum(c, 0)
        total = c.sum()
    if total <= 0:
        return {g: 0.0 for g in groups}
    return {g: float(c[np.asarray(cols, dtype=np.int64)].sum() / total) for g, cols in groups.items()}


def _corr_rows(d: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Correlation of each column of ``d`` (h, n) with ``ref`` (h,)."""
    dc = d - d.mean(0, keepdims=True)
    rc = ref - ref.mean()
    num = rc @ dc
    den = np.sqrt((dc**2).sum(0) * (rc**2).sum()) + 1e-12
    return num / den


def _main_cluster(d: np.ndarray, cols: np.ndarray, weight: np.ndarray, min_corr: float) -> np.ndarray:
    """The cluster of ``cols`` (average linkage on 1 - correlation of their changes ``d[:, cols]``, cut at
    ``1 - min_corr``) with the largest total ``weight``; ``cols`` itself when fewer than 4."""
    if len(cols) < 4:
        return cols
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    x = d[:, cols]
    x = x - x.mean(0, keepdims=True)
    nrm = np.sqrt((x**2).sum(0)) + 1e-12
    c = (x.T @ x) / np.outer(nrm, nrm)
    dist = np.clip(1.0 - c, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    lab = fcluster(linkage(squareform(dist, checks=False), "average"), t=1.0 - min_corr, criterion="distance")
    w = weight[cols]
    best = max(np.unique(lab), key=lambda k: w[lab == k].sum())
    return cols[lab == best]


def online_groups(
    contrib: np.ndarray, deltas: np.ndarray, max_size: int = 200, min_corr: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate, from the recent loss changes alone, the group that carries a rise and the one opposing it.

    The rise group: among the fewest examples, largest contribution first, that
    carry half the positive rise (at most ``max_size``), the cluster of examples
    whose loss changes before the spike step move together (average linkage on
    correlation, cut at ``min_corr``) that carries the most of the rise. The
    opposing group: among the examples whose changes before the spike step
    correlate below ``-min_corr`` with the rise group's mean change and swing at
    least a quarter as much (at most ``max_size``, largest swing first), the
    cluster that moves together with the largest total swing.

    Args:
        contrib: (n,) rise contributions (NaN: unknown).
        deltas: (h, n) recent one-step loss changes of the same examples, the
            last row being the spike step's (h >= 3).
        max_size: largest group.
        min_corr: correlation for membership.

    Returns:
        ``(rise, opposing)``: column positions, largest contribution (swing) first.
    """
    c = np.nan_to_num(np.asarray(contrib, dtype=np.float64), nan=-np.inf)
    d = np.nan_to_num(np.asarray(deltas, dtype=np.float64), nan=0.0)
    pos = np.where(np.isfinite(c) & (c > 0), c, 0.0)
    if pos.sum() <= 0 or d.shape[0] < 3:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(-pos, kind="stable")
    k = int(np.searchsorted(np.cumsum(pos[order]), 0.5 * pos.sum())) + 1
    top = order[: max(3, min(k, max_size))]
    top = top[pos[top] > 0]
    if d.shape[0] >= 4:  # co-movement before the spike step: the oscillation that led to it
        d = d[:-1]
    rise = _main_cluster(d, top, pos, min_corr)
    rise = rise[np.argsort(-pos[rise], kind="stable")]
    corr_all = _corr_rows(d, d[:, rise].mean(1))
    amp = d.std(0)
    cand = np.flatnonzero((corr_all < -min_corr) & (amp >= 0.25 * float(np.median(amp[rise]))))
    cand = cand[np.argsort(corr_all[cand] * amp[cand], kind="stable")][:max_size]
    opp = _main_cluster(d, cand, amp, min_corr)
    opp = opp[np.argsort(-amp[opp], kind="stable")]
    return rise.astype(np.int64), opp.astype(np.int64)


def plural(name: str) -> str:
    """English plural of a class name (``frog`` -> ``frogs``, ``class`` -> ``classes``)."""
    if not name or not name[-1].isalpha():
        return name
    if name.endswith(("s", "x", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and len(name) > 1 and name[-2] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def describe_rows(class_counts: dict[str, int], words: tuple[str, ...] | list[str] = (), max_words: int = 2) -> str:
    """A group in words: ``43 frogs, bright background`` or ``60 examples (frog 31, deer 20), dark``."""
    n = int(sum(class_counts.values()))
    items = sorted(class_counts.items(), key=lambda kv: -kv[1])
    if items and items[0][1] >= 0.7 * n:
        head = f"{n} {plural(str(items[0][0])) if n != 1 else items[0][0]}"
    elif items:
        head = f"{n} examples (" + ", ".join(f"{k} {v}" for k, v in items[:3]) + ")"
    else:
        head = f"{n} examples"
    return ", ".join([head, *list(words)[:max_words]])


def _class_counts(labels: np.ndarray | None, classes, rows: np.ndarray) -> dict[str, int]:
    if labels is None or len(rows) == 0:
        return {"example": len(rows)} if len(rows) else {}
    lab = np.asarray(labels)[rows]
    if lab.ndim > 1:  # sequences: no class per example
        return {"example": len(rows)}
    vals, counts = np.unique(lab, return_counts=True)
    names = list(classes) if classes is not None else None
    out = {}
    for v, c in sorted(zip(vals.tolist(), counts.tolist()), key=lambda t: -t[1]):
        out[names[v] if names and 0 <= v < len(names) else str(v)] = int(c)
    return out


# ----------------------------------------------------------------------------- stateful pieces


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
    divergence check handles them).
    """

    def __init__(self, settings: LiveConfig = LiveConfig()) -> None:
        self.s = settings
        self.logs: deque[float] = deque(maxlen=settings.window)
        self.residuals: deque[float] = deque(maxlen=4 * settings.window)
        self.in_spike = False
        self.quiet_until = -1
        self.last_step: int | None = None

    def update(self, step: int, loss: float) -> SpikeCheck | None:
        if not math.isfinite(loss) or loss <= 0:
            return None
        out = None
        if len(self.logs) >= self.s.window:
            r, scale, thr = spike_test(loss, np.array(self.logs), self.s, np.array(self.residuals))
            quiet = step <= self.quiet_until  # the aftermath of a spike neither fires nor sets the scale
            warm = len(self.residuals) >= self.s.window  # enough residuals for the scale
            if r > thr and not quiet and warm:
                if not self.in_spike:
                    out = SpikeCheck(step, loss, loss / math.exp(r), math.expm1(r), r / scale)
                self.in_spike = True
            elif r <= thr:
                if self.in_spike:
                    self.quiet_until = step + self.s.gap - 1
                self.in_spike = False
            if not self.in_spike and not quiet:
                self.residuals.append(r)
        self.logs.append(math.log(loss))
        self.last_step = step
        return out

    def state_dict(self) -> dict:
        return {"logs": list(self.logs), "residuals": list(self.residuals), "in_spike": self.in_spike,
                "quiet_until": self.quiet_until, "last_step": self.last_step}

    def load_state_dict(self, d: dict) -> None:
        self.logs.clear()
        self.logs.extend(d.get("logs", []))
        self.residuals.clear()
        self.residuals.extend(d.get("residuals", []))
        self.in_spike = bool(d.get("in_spike", False))
        self.quiet_until = int(d.get("quiet_until", -1))
        self.last_step = d.get("last_step")


@dataclass
class GroupInfo:
    """A known group: its column positions in the record and its name in words."""

    id: Any
    cols: np.ndarray
    name: str
    opposite: Any = None  # id of the group it is paired with, if any


@dataclass
class SpikeEvent:
    """What :class:`LiveAttribution` says about one spike (one line of ``events.jsonl``)."""

    step: int
    loss: float
    baseline: float
    rise: float
    z: float
    onset_step: int | None
    examples: list[int]  # ids of the examples carrying most of the rise, largest first
    example_share: float  # their share of the net rise
    groups: list[dict] = field(default_factory=list)  # [{id, name, share, source, size}]
    sharpness: float | None = None
    threshold: float | None = None
    message: str = ""
    kind: str = "spike"

    def to_json(self) -> dict:
        return asdict(self)


def format_message(ev: SpikeEvent) -> str:
    """The one-line message of a spike event."""
    parts = [f"step {ev.step}: loss {ev.rise * 100:+.0f}% over trend (z {ev.z:.1f})"]
    if ev.groups:
        g0 = ev.groups[0]
        txt = f"{g0['share'] * 100:.0f}% of the rise from {g0['label']} ({g0['name']})"
        if len(ev.groups) > 1:
            g1 = ev.groups[1]
            txt += f" vs {g1['label']} ({g1['name']})"
        parts.append(txt)
    elif ev.examples:
        parts.append(f"{ev.example_share * 100:.0f}% of the rise from {len(ev.examples)} examples "
                     f"(ids {', '.join(map(str, ev.examples[:5]))}{', ...' if len(ev.examples) > 5 else ''})")
    if ev.sharpness is not None and ev.threshold is not None:
        parts.append(f"sharpness {ev.sharpness:.3g} / 2/lr {ev.threshold:.3g}")
    return "; ".join(parts)


def load_groups(signals_json: str | os.PathLike, index: np.ndarray) -> list[GroupInfo]:
    """Groups of an earlier ``oppsig detect`` (its ``signals.json``), mapped onto the record's columns.

    Members are matched by stable id, so the groups may come from another run
    on the same data. Paired groups (significant pairs first) know their opposite.

    Raises:
        DataFormatError: the file is not a signals file this version reads.
        FileNotFoundError: no such file.
    """
    from .result import read_signals_json

    res = read_signals_json(signals_json)
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    pairs = sorted(res.pairs, key=lambda p: (not p.significant, -p.strength))
    opp: dict[int, int] = {}
    for p in pairs:
        opp.setdefault(p.a, p.b)
        opp.setdefault(p.b, p.a)
    out = []
    for g in res.groups:
        ids = np.asarray(g.ids, dtype=np.int64)
        pos = np.searchsorted(index[order], ids)
        ok = (pos < len(index)) & (index[order][np.minimum(pos, len(index) - 1)] == ids)
        cols = order[pos[ok]]
        out.append(GroupInfo(g.id, cols, describe_rows(dict(g.class_counts), g.shared), opp.get(g.id)))
    return out


class LiveAttribution:
    """The online detector plus attribution, with an event log in a run directory.

    Args:
        settings: detector and attribution thresholds.
        groups: known groups: a ``signals.json`` path (of this or another run on
            the same data), a list of :class:`GroupInfo`, or None to estimate
            groups online from the recent per-example losses (needs the same
            examples at every observed step: full-batch or a probe set).
        labels: (n,) class of each recorded example (record order), to name groups.
        classes: class names.
        describe: optional ``rows -> tuple of words`` (e.g. shared input
            descriptors) used for online groups.
        print_fn: where the one-line message goes (default: stderr); None: silent.
        tensorboard: a ``SummaryWriter`` to also log events to, or None.

    Call :meth:`bind` once the record's example ids are known, then
    :meth:`observe` at every step with the step's per-example losses.

    Example:
        >>> import numpy as np, tempfile
        >>> live = LiveAttribution(LiveConfig(window=5, history=8, context=3), print_fn=None)
        >>> live.bind(tempfile.mkdtemp(), np.arange(4))
        >>> for t in range(12):
        ...     _ = live.observe(t, np.arange(4), np.full(4, 1.0 - 0.01 * t))
        >>> ev = live.observe(12, np.arange(4), np.array([0.86, 0.86, 5.0, 0.86]))
        >>> ev.examples[0], round(ev.example_share, 1)
        (2, 1.0)
    """

    def __init__(
        self,
        settings: LiveConfig = LiveConfig(),
        groups: str | os.PathLike | list[GroupInfo] | None = None,
        labels: np.ndarray | None = None,
        classes=None,
        describe: Callable[[np.ndarray], tuple[str, ...]] | None = None,
        print_fn: Callable[[str], None] | None = "stderr",  # type: ignore[assignment]
        tensorboard=None,
    ) -> None:
        self.s = settings
        self.detector = SpikeDetector(settings)
        self._groups_src = groups
        self.groups: list[GroupInfo] = []
        self.labels = labels
        self.classes = classes
        self.describe = describe
        self.print_fn = (lambda m: print(m, file=sys.stderr, flush=True)) if print_fn == "stderr" else print_fn
        self.tb = tensorboard
        self.run_dir: Path | None = None
        self.index: np.ndarray | None = None
        self.events: list[SpikeEvent] = []
        self.sharpness: float | None = None
        self.threshold: float | None = None
        self._pending: tuple[int, np.ndarray, np.ndarray] | None = None
        self._fired_at: int | None = None

    # -------------------------------------------------------------- setup
    def bind(self, run_dir: str | os.PathLike | None, index: np.ndarray) -> None:
        """Attach to a run directory (None: no event file) and the record's example ids (n,)."""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        n = len(self.index)
        self._order = np.argsort(self.index, kind="stable")
        self._sorted = self.index[self._order]
        self.rows = np.full((self.s.history, n), np.nan, dtype=np.float32)  # ring buffer of per-example losses
        self.row_steps = np.full(self.s.history, -1, dtype=np.int64)
        self.row_loss = np.full(self.s.history, np.nan)
        self.last_seen = np.full(n, np.nan, dtype=np.float32)
        self._head = 0
        src = self._groups_src
        if isinstance(src, (str, os.PathLike)):
            self.groups = load_groups(src, self.index)
        elif src is not None:
            self.groups = list(src)

    def columns(self, ids) -> np.ndarray:
        """Positions of example ids in the record.

        Raises:
            StoreError: for ids the record does not hold.
        """
        from ..errors import StoreError

        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(self._sorted, ids)
        pos = np.minimum(pos, len(self._sorted) - 1)
        if not (self._sorted[pos] == ids).all():
            bad = ids[self._sorted[pos] != ids][:5].tolist()
            raise StoreError(f"example ids {bad} are not in the record's index (ids 0..{len(self._sorted) - 1}?)")
        return self._order[pos]

    def set_sharpness(self, sharpness: float | None, threshold: float | None) -> None:
        """The latest sharpness and its stability threshold (2/lr for GD), shown in messages."""
        if sharpness is not None and math.isfinite(sharpness):
            self.sharpness, self.threshold = float(sharpness), (float(threshold) if threshold is not None else None)

    # -------------------------------------------------------------- per step
    def observe(self, step: int, ids, losses, loss: float | None = None) -> SpikeEvent | None:
        """The per-example ``losses`` (b,) of examples ``ids`` (b,) at ``step``; a spike event or None.

        ``loss`` is the step's running loss (default: the mean of ``losses``).
        Several calls for the same step add to it (the last call's verdict counts).
        """
        if self.index is None:
            raise RuntimeError("LiveAttribution.bind(run_dir, index) must be called before observe()")
        step = int(step)
        cols = self.columns(ids)
        vals = np.asarray(losses, dtype=np.float32).reshape(-1)
        if self._pending is not None and self._pending[0] != step:
            self._commit()
        if self._pending is not None:
            cols = np.concatenate([self._pending[1], cols])
            vals = np.concatenate([self._pending[2], vals])
        merging = self._pending is not None
        self._pending = (step, cols, vals)
        value = float(np.mean(vals)) if loss is None else float(loss)
        if merging:  # the detector takes one value per step: replace this step's earlier value
            self.detector.load_state_dict(self._before)
        else:
            self._before = self.detector.state_dict()
        check = self.detector.update(step, value)
        if check is None or self._fired_at == step:
            return None
        self._fired_at = step
        ev = self._attribute(check, cols, vals)
        self._emit(ev)
        return ev

    def _commit(self) -> None:
        step, cols, vals = self._pending
        h = self._head % self.s.history
        self.rows[h] = np.nan
        self.rows[h, cols] = vals
        self.row_steps[h] = step
        self.row_loss[h] = float(np.mean(vals))
        self.last_seen[cols] = vals
        self._head += 1
        self._pending = None

    def flush(self) -> None:
        """Complete the current step (call at the end of training)."""
        if self._pending is not None:
            self._commit()

    def _ordered_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(self._head, self.s.history)
        idx = [(self._head - k + i) % self.s.history for i in range(k)]
        return self.rows[idx], self.row_steps[idx], self.row_loss[idx]

    def _attribute(self, check: SpikeCheck, cols: np.ndarray, vals: np.ndarray) -> SpikeEvent:
        rows, steps, row_loss = self._ordered_rows()
        n = len(self.index)
        now = np.full(n, np.nan)
        now[cols] = vals
        ref = self.last_seen.astype(np.float64).copy()
        onset = None
        if len(rows):
            ctx = slice(max(0, len(rows) - self.s.context), len(rows))
            j = ctx.start + int(np.nanargmin(row_loss[ctx])) if np.isfinite(row_loss[ctx]).any() else None
            if j is not None:
                onset = int(steps[j])
                at_onset = rows[j].astype(np.float64)
                ref = np.where(np.isfinite(at_onset), at_onset, ref)
        ref = np.where(np.isfinite(ref), ref, check.baseline)
        contrib = np.full(n, np.nan)
        contrib[cols] = rise_contributions(vals, ref[cols])
        c = np.nan_to_num(contrib, nan=0.0)
        pos = np.maximum(c, 0)
        order = np.argsort(-pos, kind="stable")
        k = int(np.searchsorted(np.cumsum(pos[order]), 0.5 * pos.sum())) + 1 if pos.sum() > 0 else 0
        top = order[: min(k, self.s.max_share_examples)]
        net = c.sum() if c.sum() > 0 else pos.sum()
        share = float(c[top].sum() / net) if net > 0 else 0.0
        ev = SpikeEvent(step=check.step, loss=check.loss, baseline=check.baseline, rise=check.rise, z=check.z,
                        onset_step=onset, examples=self.index[top].tolist(), example_share=share,
                        sharpness=self.sharpness, threshold=self.threshold)
        ev.groups = self._group_part(contrib, rows, cols)
        ev.message = format_message(ev)
        return ev

    def _group_part(self, contrib: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> list[dict]:
        if self.groups:
            shares = group_shares(contrib, {g.id: g.cols for g in self.groups})
            by_id = {g.id: g for g in self.groups}
            lead = max(self.groups, key=lambda g: shares[g.id])
            out = [{"id": lead.id, "label": f"group {lead.id}", "name": lead.name, "share": shares[lead.id],
                    "size": int(len(lead.cols)), "source": "signals.json"}]
            other = by_id.get(lead.opposite)
            if other is None:
                rest = [g for g in self.groups if g.id != lead.id]
                other = max(rest, key=lambda g: shares[g.id]) if rest else None
            if other is not None:
                out.append({"id": other.id, "label": f"group {other.id}", "name": other.name,
                            "share": shares[other.id], "size": int(len(other.cols)), "source": "signals.json",
                            "paired": other.id == lead.opposite})
            return out
        # online estimate: needs the same examples at every recent step (full batch or a probe set)
        if len(rows) < 4:
            return []
        now = np.full(rows.shape[1], np.nan)
        now[cols] = self._pending[2]
        series = np.vstack([rows.astype(np.float64), now])
        if np.isfinite(series).all(0).mean() < 0.9:
            return []  # a mini-batch record sees each example once an epoch: no online groups
        rise, opp = online_groups(contrib, np.diff(series, axis=0), self.s.max_share_examples)
        if len(rise) == 0:
            return []
        shares = group_shares(contrib, {"rise": rise, "opposing": opp})
        out = [self._online_group("rise", rise, shares["rise"])]
        if len(opp):
            out.append(self._online_group("opposing", opp, shares["opposing"]))
        return out

    def _online_group(self, role: str, cols: np.ndarray, share: float) -> dict:
        words = tuple(self.describe(cols)) if self.describe is not None else ()
        name = describe_rows(_class_counts(self.labels, self.classes, cols), words)
        return {"id": role, "label": "a rising group" if role == "rise" else "an opposing group", "name": name,
                "share": share, "size": int(len(cols)), "source": "online", "ids": self.index[cols].tolist()}

    # -------------------------------------------------------------- output
    def _emit(self, ev: SpikeEvent) -> None:
        self.events.append(ev)
        if self.print_fn is not None:
            self.print_fn(ev.message)
        self.log_event(ev.to_json())
        if self.tb is not None:
            self.tb.add_scalar("live/spike_rise", ev.rise, ev.step)
            self.tb.add_text("live/spike", ev.message, ev.step)

    def log_event(self, event: dict) -> None:
        """Append one event (a JSON object with ``kind`` and ``step``) to ``<run>/events.jsonl``."""
        if self.run_dir is None:
            return
        with open(self.run_dir / EVENTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=_json_default) + "\n")

    def state_dict(self) -> dict:
        return {"detector": self.detector.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.detector.load_state_dict(d.get("detector", {}))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_events(run_dir: str | os.PathLike) -> list[dict]:
    """The events of a run (``events.jsonl``), oldest first; [] when there are none."""
    p = Path(run_dir) / EVENTS
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
