"""Proof by replay: did the named groups' examples cause the spike, or was it the optimiser's state?

At a spike, the updates up to its peak are done again from a state kept at or before its onset (by default the
onset's; ``live.replay_lead`` steps before it, :func:`~oppsig.live.proof.replay_start`, takes out what the
momentum carries into the onset too) with :class:`~oppsig.training.rerun.StepReplayer` (the same
batches, order, learning rates and optimiser state, each replay from a copy of it): once as trained, once
with the named groups' examples dropped from every batch in between, and once with each of a few random
controls of the same size and class mix dropped instead (and, recorded beside, each named group dropped alone).
Each ends around the peak's parameters, where the mean loss of a fixed probe set (which holds the named groups'
probed members) is measured. So the answer is what the updates did, not the arithmetic of leaving the groups'
own losses out.

- :func:`control_ids`: the random control;
- :func:`replay_check`: the replays and the share of the rise each removal takes away;
- :func:`verdict`: *data*, *optimiser state* or *undetermined*, from those shares.

Example:
    >>> verdict(rise=0.4, removed=0.7, removed_control=0.05)[0]
    'data'
    >>> verdict(rise=0.4, removed=0.05, removed_control=0.02)[0]
    'optimiser state'
"""

from __future__ import annotations

import time
import dataclasses
from dataclasses import asdict, dataclass

import numpy as np

from ..training.actions import restore_state

DATA_REMOVED = 0.5
"""A removal of the named groups that takes away at least this share of the rise, ..."""
CONTROL_REMOVED = 0.2
"""... while the control changes the rise by at most this share, either way (the median of :data:`CONTROLS`): the
verdict is *data*. A control that makes the rise larger by more than that shows a replay too sensitive to the
batches to tell the named groups' part."""
CONTROLS = 3
"""Random controls replayed per spike."""
STATE_REMOVED = 0.2
"""A removal of the named groups that takes away less than this share: the rise survives it (*optimiser state*)."""


def control_ids(named: np.ndarray, index: np.ndarray, labels: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """A random set of examples of ``index`` outside ``named``, of the same size and class mix (per class, as
    many as ``named`` has, drawn from that class's other examples; from any class where those run out)."""
    rng = np.random.default_rng(seed)
    named = np.asarray(named, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    free = ~np.isin(index, named)
    if labels is None or np.asarray(labels).ndim != 1:
        pool = index[free]
        return np.sort(rng.choice(pool, size=min(len(named), len(pool)), replace=False))
    labels = np.asarray(labels)
    lab_of = dict(zip(index.tolist(), labels.tolist()))
    out: list[int] = []
    short = 0
    for c, k in zip(*np.unique([lab_of.get(int(i), -1) for i in named], return_counts=True)):
        pool = index[free & (labels == c)]
        take = min(int(k), len(pool))
        out.extend(rng.choice(pool, size=take, replace=False).tolist())
        short += int(k) - take
    if short:
        pool = np.setdiff1d(index[free], np.asarray(out, dtype=np.int64))
        out.extend(rng.choice(pool, size=min(short, len(pool)), replace=False).tolist())
    return np.sort(np.asarray(out, dtype=np.int64))


@dataclass(frozen=True)
class ReplayCheck:
    """The replays of one spike (one entry of its event)."""

    start_step: int  # the kept step the replays start from (live.replay_lead before the onset)
    peak_step: int
    probe_size: int
    rise: float  # largest mean probe loss around the peak, replayed as trained, minus at the onset (recorded)
    drift: float  # |replayed - recorded| mean probe loss at the peak (0: the replay is exact)
    removed: float  # share of the rise taken away by dropping the named groups' examples (all of them)
    removed_control: float  # ... by dropping a random control of the same size and class mix (median of controls)
    controls: tuple[float, ...]  # each control's share
    dropped: int  # examples dropped from every batch (each control drops as many)
    removals: dict  # each named group dropped alone: {group id: share of the rise taken away}
    steps: int  # updates replayed, per replay
    around: int  # the height is the largest loss over steps peak - around .. peak + around
    seconds: float  # wall time of the replays
    verdict: str
    reason: str
    curves: dict = dataclasses.field(default_factory=dict)  # the probe's mean loss at each step of peak - around ..
    # peak + around, per replay: {"steps", "trained", "without", "controls": [one per control], "alone": {group id}}

    def to_json(self) -> dict:
        """The check as an event's ``replay`` entry (without its wall time, so that a resumed run writes the same
        events as an uninterrupted one)."""
        d = asdict(self)
        d.pop("seconds")
        d["controls"] = list(self.controls)
        return d


def verdict(rise: float, removed: float, removed_control: float) -> tuple[str, str]:
    """``(verdict, reason)`` from the share of the rise a removal and its control take away."""
    if not np.isfinite(rise) or rise <= 0:
        return "undetermined", "the probe's loss did not rise between the onset and the peak (the spike is in " \
                               "this step's batch alone)"
    if removed >= DATA_REMOVED and abs(removed_control) <= CONTROL_REMOVED:
        return "data", f"dropping the named groups removes {removed:.0%} of the rise, the control {removed_control:.0%}"
    if removed_control < -CONTROL_REMOVED:
        return "undetermined", f"dropping a random control makes the rise {-removed_control:.0%} larger: the " \
                               f"replay is too sensitive to the batches here (the named groups: {removed:.0%} removed)"
    if removed < STATE_REMOVED:
        return "optimiser state", f"the rise survives dropping the named groups ({removed:.0%} removed)"
    return "undetermined", f"dropping the named groups removes {removed:.0%} of the rise, the control " \
                           f"{removed_control:.0%}"


def replay_check(replayer, model, optimizer, start_state: dict, start: int, peak: int, named: np.ndarray,
                 controls: list[np.ndarray], probe_ids: np.ndarray, recorded: tuple[float, float],
                 alone: dict | None = None, around: int = 0, how: str = "zero") -> ReplayCheck:
    """Replay the updates from ``start_state`` (the state kept at step ``start``, at or before the spike's onset):
    as trained, without the examples
    ``named``, without each control in ``controls``, and without each group of ``alone`` (``{id: ids}``); the
    spike's height in each is the probe's largest mean loss over the parameters of steps
    ``peak - around .. peak + around`` (after ``start``); its rise is measured from the onset's recorded loss.

    With ``around`` > 0 the replays run past the peak (a seeded run's later batches are known): near the edge
    of stability a change of the batches can move an oscillation's peak by a few steps without removing it,
    and a loss at one fixed step would count the move as a removal.
    The group whose loss rises and the one that opposes it act through each other: dropping one leaves the
    other's pull on their shared feature unopposed, so the verdict drops both (``named``); each alone is
    recorded too (``removals``). The control's share is the median over several controls (each recorded).

    Args:
        replayer: a :class:`~oppsig.training.rerun.StepReplayer` of the run.
        model, optimizer: the training model and optimiser (copied once into the replayer's scratch; untouched).
        start_state: the state kept at ``start`` (``{"model", "optimizer"}`` state dicts; left as it is).
        recorded: the probe's mean loss at the onset and at the peak as measured on the kept states.
        how: how a replay leaves examples out (``live.replay_drop``): ``"zero"`` takes out their loss terms and
            keeps each batch's divisor, so the other examples' updates are as trained and only the removed
            examples' gradients are missing; ``"mean"`` averages over the examples left, which also scales every
            other example's update up by the batch's share removed (near the edge of stability a larger step).
    """
    t0 = time.perf_counter()
    sm, so = replayer.scratch(model, optimizer)
    first, last = max(start + 1, peak - around), peak + around

    curves: dict = {"steps": list(range(first, last + 1))}

    def replay(drop) -> tuple[float, float, list[float]]:  # (height over the window, loss at the peak, curve)
        restore_state(sm, so, start_state)
        replayer.run(sm, so, start, first, drop=drop, how=how)
        seen = {}
        for s in range(first, last + 1):
            if s > first:
                replayer.run(sm, so, s - 1, s, drop=drop, how=how)
            seen[s] = float(replayer.losses(sm, probe_ids).mean())
        return max(seen.values()), seen[peak], [round(v, 6) for v in seen.values()]

    full, full_at_peak, curves["trained"] = replay(None)
    at_onset, at_peak = recorded
    rise = full - at_onset

    def share(r: tuple) -> float:  # of the rise, taken away
        return (full - r[0]) / rise if rise > 0 else float("nan")

    r = replay(named)
    removed, curves["without"] = share(r), r[2]
    rs = [replay(c) for c in controls]
    ctl, curves["controls"] = tuple(share(r) for r in rs), [r[2] for r in rs]
    removed_control = float(np.median(ctl)) if ctl else float("nan")
    ra = {str(k): replay(v) for k, v in (alone or {}).items()}
    removals, curves["alone"] = {k: share(r) for k, r in ra.items()}, {k: r[2] for k, r in ra.items()}
    v, why = verdict(rise, removed, removed_control)
    return ReplayCheck(int(start), int(peak), len(probe_ids), rise, abs(full_at_peak - at_peak), removed,
                       removed_control, ctl, int(len(named)), removals, int(last - start), around,
                       time.perf_counter() - t0, v, why, curves)
