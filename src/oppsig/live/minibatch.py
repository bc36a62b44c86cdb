"""The groups of a mini-batch spike, named within a step of it, from the probe measured at kept states.

A mini-batch run sees each example once an epoch, so the per-step co-movement that names groups under
full-batch GD (:func:`~oppsig.live.attribution.online_groups`) is not in its record. At a spike, live
attribution therefore measures a fixed probe set (the record's probe, or a seeded sample) at each
state it kept over the last ``live.replay_window`` steps (:class:`~oppsig.live.states.StateRing`, one every
``live.state_every`` steps) and at the current parameters: the probe's losses at the same parameters, from
before the onset to the spike. On those rows:

- :func:`probe_window`: the probe's losses (k, m) at the kept states and now;
- :func:`probe_groups`: the onset (the kept step of lowest mean probe loss before the spike and not before
  the previous spike's peak), each
  probed example's part of the rise (its loss at the spike minus at the onset), and the rising group and
  the one opposing it among the probed examples (co-movement of their per-step changes, as under GD);
- :func:`extend_members`: each group extended from its probed members to every example, by the
  membership model of offline detection (:func:`~oppsig.signals.extend.predict_group`: the class and
  the input direction of the probed members, cross-validated on the probe; precision and recall kept).

Example:
    >>> rng = np.random.default_rng(0)
    >>> L = 1.0 + 0.01 * rng.standard_normal((7, 40))
    >>> L[1] -= 0.05                                                     # the onset
    >>> L[2:, :5] += np.array([0.3, 0.1, 0.6, 0.4, 2.0])[:, None]        # five examples swing up ...
    >>> L[2:, 5:10] -= np.array([0.3, 0.1, 0.6, 0.4, 0.9])[:, None]      # ... as five swing down
    >>> g = probe_groups(L, np.arange(7))
    >>> int(g.onset), sorted(g.rise.tolist()), sorted(g.opposing.tolist())
    (1, [0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..signals.extend import BatchView, predict_group
from ..signals.result import Extension
from .attribution import corr_rows, online_groups
from .states import StateRing

LOG_FLOOR = 1e-4  # added to losses before their log, as the offline extension does


def probe_window(replayer, model, optimizer, states: StateRing, probe_ids: np.ndarray,
                 step: int) -> tuple[np.ndarray, np.ndarray]:
    """``(steps (k,), losses (k, m))``: the probe's losses at each kept state of a step ``<= step``, and last at
    ``model``'s current parameters (theta_{step+1}, after the update of ``step``).

    Each kept state is loaded into the replayer's scratch copy of ``(model, optimizer)``; the training model
    is not changed.
    """
    from ..training.actions import restore_state

    steps = [s for s in states.steps() if s <= step]
    sm, so = replayer.scratch(model, optimizer)
    rows = []
    for s in steps:
        restore_state(sm, so, states.get(int(s)))
        rows.append(replayer.losses(sm, probe_ids))
    rows.append(replayer.losses(model, probe_ids))
    return np.array([*steps, step + 1], dtype=np.int64), np.stack(rows)


@dataclass(frozen=True)
class ProbeGroups:
    """What the probe's rows say about one spike (positions are columns of the probe)."""

    onset: int  # row of the onset
    contrib: np.ndarray  # (m,) each probed example's loss at the spike minus at the onset
    rise: np.ndarray  # positions of the rising group, largest part of the rise first
    opposing: np.ndarray  # positions of the group opposing it


def probe_groups(L: np.ndarray, steps: np.ndarray, max_size: int = 200, min_corr: float = 0.5,
                 after: int | None = None) -> ProbeGroups:
    """The onset, the parts of the rise and the two groups of a spike at the last row of ``L`` (k, m).

    The onset is the row of lowest mean loss before the last, among the rows of ``steps`` at or after ``after``
    (the previous spike's peak: one spike's rise is not counted again in the next one's; all rows where none
    is); the groups come from :func:`~oppsig.live.attribution.online_groups` on the per-step changes from the
    window's start.
    """
    L = np.asarray(L, dtype=np.float64)
    if len(L) < 2:
        z = np.zeros(0, np.int64)
        return ProbeGroups(0, np.zeros(L.shape[1]), z, z)
    rows = np.arange(len(L) - 1)
    if after is not None and (np.asarray(steps)[:-1] >= after).any():
        rows = rows[np.asarray(steps)[:-1] >= after]
    onset = int(rows[np.argmin(L[rows].mean(axis=1))])
    contrib = L[-1] - L[onset]
    if len(L) < 4:  # too few steps for co-movement: the largest parts of the rise, no opposing group
        pos = np.maximum(contrib, 0)
        order = np.argsort(-pos, kind="stable")
        k = int(np.searchsorted(np.cumsum(pos[order]), 0.5 * pos.sum())) + 1 if pos.sum() > 0 else 0
        return ProbeGroups(onset, contrib, order[: min(k, max_size)], np.zeros(0, np.int64))
    d = np.diff(L, axis=0)
    rise, opp = online_groups(contrib, d, max_size, min_corr)
    return ProbeGroups(onset, contrib, _grow(rise, contrib, d, max_size, min_corr),
                       _grow(opp, -d.sum(axis=0), d, max_size, min_corr))


def _grow(core: np.ndarray, weight: np.ndarray, d: np.ndarray, max_size: int, min_corr: float) -> np.ndarray:
    """``core`` and the examples whose changes ``d`` (h, m) follow its mean change (correlation above
    ``min_corr``) with at least a quarter of its median ``weight`` (at most ``max_size``, largest first).

    The core holds the fewest examples that carry the rise; a group's other members move with it, less."""
    if len(core) == 0:
        return core
    corr = corr_rows(d, d[:, core].mean(axis=1))
    floor = 0.25 * float(np.median(weight[core]))
    more = np.flatnonzero((corr > min_corr) & (weight >= floor) & ~np.isin(np.arange(d.shape[1]), core))
    more = more[np.argsort(-weight[more], kind="stable")][: max(0, max_size - len(core))]
    return np.concatenate([core, more]).astype(np.int64)


def extend_members(probe_cols: np.ndarray, member_pos: np.ndarray, L: np.ndarray, steps: np.ndarray,
                   index: np.ndarray, labels: np.ndarray | None, inputs: np.ndarray | None,
                   seed: int = 0) -> tuple[np.ndarray, Extension | None]:
    """Every example's membership of a group found on the probe: ``(ids, extension)``.

    Args:
        probe_cols: (m,) record columns (positions in ``index``) of the probed examples.
        member_pos: positions (into the probe) of the group's probed members.
        L: (k, m) the probe's losses at ``steps``.
        index: (N,) stable ids of the record's columns; ``labels`` (N,) and ``inputs`` (N, ...) where known.

    Returns:
        the ids of the probed members and of the examples the membership model adds, probed (its completion)
        or not (probed members only, and None, when there are no labels or inputs to learn membership from).
    """
    members = np.asarray(probe_cols, dtype=np.int64)[np.asarray(member_pos, dtype=np.int64)]
    own = np.asarray(index)[members]
    if labels is None and inputs is None:
        return own, None
    n = len(index)
    # one visit per example: the follow feature is flat, membership is learnt from class and input
    Lb, Sb = np.ones((1, n)), np.zeros((1, n), dtype=np.int64)
    view = BatchView.build(probe_cols, Lb, Sb, np.log(np.asarray(L) + LOG_FLOOR), steps, index, labels=labels,
                           inputs=inputs)
    ext, named = predict_group(view, members, seed=seed)
    if not (ext.ids or ext.added):
        return own, ext
    # every probed member stays: a spike's group is what moved, and its replay leaves all of it out
    return np.union1d(own, np.asarray(ext.ids + ext.added, dtype=np.int64)), ext
