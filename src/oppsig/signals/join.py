"""Join the groups a mini-batch run's probe split: after each group is extended
(:mod:`oppsig.signals.extend`), two groups are one when the examples their membership models name overlap and
their members move together (:func:`merge_extended`), or when they are halves of one class that oppose the same
group (:func:`join_split_partners`). Joining only takes groups together: it never adds a pair.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .result import Extension

MOVES_CORR = 0.6
"""Two groups the probe split move together: their mean log-loss changes correlate at least this (the probe's
own membership threshold, ``SignalsConfig.probe_min_corr``)."""


MERGE_SHARE = 0.5
"""Two groups are one group the probe split when more than this share of the smaller one's examples, as their
membership models name them, belong to the other's too."""


def merge_extended(groups, pairs, rejected, named: list[set[int]] | None = None, moves: Moves | None = None):
    """Join groups the probe split: those where more than :data:`MERGE_SHARE` of the smaller one's examples are
    also the other's, as ``named`` (per group: the ids its membership model names, :func:`predict_group`)
    or else their :attr:`~oppsig.signals.result.Group.all_ids` say, and, where ``moves`` is given, whose found
    members move together (:class:`Moves`): a group its model completed to many examples does not swallow
    another whose losses follow their own course. The first stays, with the other's probed members and
    extension added. Groups are renumbered in order; a pair between two joined groups is dropped, and of pairs
    that became the same pair the first (strongest) stays. Returns ``(groups, pairs, rejected)``."""
    sets = [set(g.all_ids) | (named[i] if named is not None else set()) for i, g in enumerate(groups)]
    parent = list(range(len(groups)))
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            inter = len(sets[i] & sets[j])
            if (inter and inter / min(len(sets[i]), len(sets[j])) > MERGE_SHARE
                    and (moves is None or moves.together(groups[i], groups[j]))):
                _union(parent, i, j)
    return _join(groups, pairs, rejected, parent)


@dataclass(frozen=True)
class Moves:
    """The probe's log-loss changes ``changes`` (R-1, n) and each stable id's column ``col``: whether two groups'
    probed members move together (their mean changes correlate at least ``min_corr``)."""

    changes: np.ndarray
    col: dict[int, int]
    min_corr: float = MOVES_CORR

    def mean(self, g) -> np.ndarray:
        return self.changes[:, [self.col[int(i)] for i in g.ids if int(i) in self.col]].mean(axis=1)

    def corr(self, a, b) -> float:
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.corrcoef(self.mean(a), self.mean(b))[0, 1])

    def together(self, a, b) -> bool:
        c = self.corr(a, b)
        return bool(np.isfinite(c) and c >= self.min_corr)


def join_split_partners(groups, pairs, rejected, changes: np.ndarray, col: dict[int, int]):
    """Join groups the probe split in two halves that oppose the same group: two groups each reported in a pair
    with one partner, of the same largest class, whose probed members' mean loss changes correlate positively
    (``changes``: (R-1, n) the probe's loss changes; ``col``: stable id -> its column). Each half's own pair
    passed the test; joining them adds no pair and only takes halves together. Returns ``(groups, pairs,
    rejected)`` as :func:`merge_extended` does."""
    partners: dict[int, list[int]] = {}
    for p in pairs:
        partners.setdefault(p.a, []).append(p.b)
        partners.setdefault(p.b, []).append(p.a)
    pos = {g.id: i for i, g in enumerate(groups)}
    parent = list(range(len(groups)))

    moves = Moves(changes, col)

    def top_class(g):
        return max(g.class_counts, key=g.class_counts.get) if g.class_counts else None

    for halves in partners.values():
        for k, a in enumerate(halves):
            for b in halves[k + 1:]:
                ga, gb = groups[pos[a]], groups[pos[b]]
                if b in partners.get(a, ()) or top_class(ga) != top_class(gb):
                    continue
                if moves.corr(ga, gb) > 0:
                    _union(parent, pos[a], pos[b])
    return _join(groups, pairs, rejected, parent, "that oppose the same group")


def _union(parent: list[int], i: int, j: int) -> None:
    ri, rj = _root(parent, i), _root(parent, j)
    if ri != rj:
        parent[max(ri, rj)] = min(ri, rj)


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i


def _joined_extension(ext: Extension, parts, ids: tuple[int, ...], note: str) -> Extension:
    """The extension of the group joined from ``parts`` (found members ``ids``): every example one part's
    model names is in, a found member is dropped only when no part names it."""
    named = {x for p in parts for x in p.all_ids}
    found = set(ids)
    return dataclasses.replace(
        ext, note=(ext.note + "; " if ext.note else "") + note,
        ids=tuple(dict.fromkeys(x for p in parts if p.extension for x in p.extension.ids if x not in found)),
        added=tuple(dict.fromkeys(x for p in parts if p.extension for x in p.extension.added if x not in found)),
        dropped=tuple(x for x in ids if x not in named))


def _join(groups, pairs, rejected, parent: list[int], why: str = "the probe split it into"):
    """Groups joined by the forest ``parent`` (the first of each tree stays, with the others' probed members and
    extension added), renumbered; pairs within a joined group dropped, repeated pairs kept once."""
    def root(i: int) -> int:
        return _root(parent, i)

    if all(root(i) == i for i in range(len(groups))):
        return tuple(groups), tuple(pairs), tuple(rejected)
    new_id, out = {}, []
    for i, g in enumerate(groups):
        if root(i) != i:
            continue
        parts = [groups[j] for j in range(len(groups)) if root(j) == i]
        members = tuple(dict.fromkeys(m for p in parts for m in p.members))
        ids = tuple(dict.fromkeys(x for p in parts for x in p.ids))
        ext = next((q.extension for q in parts if q.extension is not None), None)
        if ext is not None and len(parts) > 1:
            ext = _joined_extension(ext, parts, ids, f"joined with {len(parts) - 1} group(s) {why}")
        counts = g.class_counts
        if len(parts) > 1 and sum(len(q.ids) for q in parts) == len(ids):  # disjoint parts: their counts add up
            counts = dict(sum((Counter(q.class_counts) for q in parts), Counter()))
        new_id.update({groups[j].id: len(out) for j in range(len(groups)) if root(j) == i})
        out.append(dataclasses.replace(g, id=len(out), members=members, ids=ids, extension=ext, class_counts=counts))

    def remap(ps):
        seen, kept = set(), []
        for p in ps:
            a, b = new_id[p.a], new_id[p.b]
            if a == b or frozenset((a, b)) in seen:
                continue
            seen.add(frozenset((a, b)))
            kept.append(dataclasses.replace(p, a=a, b=b))
        return tuple(kept)

    return tuple(out), remap(pairs), remap(rejected)
