"""The pair test without inputs: replication in time, for a run searched from its record alone.

The input test of :mod:`oppsig.signals.pair` needs the examples' inputs. Without them (a callback's or the
``Recorder``'s run on a user's own data, :func:`~oppsig.store.dataset.record_dataset`), a test of the groups'
loss coherence on the record they were found in is circular: they were chosen because they move together.
:class:`ReplicationTest` splits the loss changes in time instead:

1. *Selection rows*: alternating blocks of :data:`BLOCK` loss changes go to the selection part A and the
   held-out part B, with :data:`GUARD` change left out at each switch (adjacent changes share a recorded row).
2. *Selection*: the same group -> candidate stages run on A alone (its changes summed into a loss matrix):
   groups and anti-phase candidates that depend on A only.
3. *Test on B*: each A candidate's statistic is how much its groups still move together and apart on B
   (:class:`HeldOutChanges`: the variance of the difference of the two groups' mean standardised changes, in
   the candidate's view, raw or relative, beyond B's leading time profile: any split of the examples by their
   sign along it persists in time, opposing or not). The null is random groups of the same sizes and class
   counts on B: one within-class permutation of the examples per draw, applied to every candidate at once (a
   group found on A keeps its columns and gets other examples of its classes on B). The p-values are
   single-step max-T adjusted, ``(1 + #{draws whose largest standardised statistic >= the candidate's}) / (n + 1)``
   (Westfall & Young 1993; each log statistic standardised by its own null draws), Bonferroni over the
   two views: rejecting those at ``alpha`` controls the family-wise error rate over A's candidates at
   ``alpha``, the level of the input test.
4. *Both ways*: steps 2-3 again with the parts' roles swapped (select on B, test on A); each direction's
   p-values are doubled (Bonferroni over the :data:`DIRECTIONS`).
5. *The pairs reported*: a candidate of the whole record passes when, in one direction, each of its groups is
   mostly one group of the selection part (Jaccard index above :data:`MIN_JACCARD`) and those two form a
   candidate that replicated on the held-out part. A pair that passes still meets the anti-phase and leading
   gates after the test and the ``"beyond"`` gate (:func:`~oppsig.signals.pair.failed_checks`); the visible
   gate needs inputs and is skipped (``Pair.tested_on == "record"`` says so).

Under the null that a pair's groups are chosen by noise, their anti-phase does not carry over to rows they
were not chosen on. A structure that persists in time without opposing inputs does replicate: the leading
oscillation, whose split by sign the statistic projects out, and what else persists is left to the anti-phase
and leading gates, as after the input test. Measured false-pair rate on null records: docs/findings.md
(``benchmarks/record_only_null.py``).

Example:
    >>> rng = np.random.default_rng(0)
    >>> load = rng.standard_normal(600)        # every example follows one oscillation, with its own sign
    >>> d = 0.1 * rng.standard_normal((40, 600)) + 0.2 * rng.standard_normal((40, 1)) * load
    >>> w = rng.standard_normal(40)
    >>> d[:, :40] += 0.1 * w[:, None]; d[:, 40:80] -= 0.1 * w[:, None]   # a real anti-phase pair
    >>> by_sign = np.argsort(load[80:]) + 80                                # the oscillation split by sign
    >>> p = HeldOutChanges(d, np.arange(600) % 3).adjusted(
    ...     [(np.arange(40), np.arange(40, 80)), (by_sign[-40:], by_sign[:40]), (np.arange(200, 240),
    ...      np.arange(300, 340))], 199, rng)
    >>> bool(p[0] <= 0.01), bool(p[1] > 0.05), bool(p[2] > 0.05)
    (True, True, True)

Known limit: a pair that is itself the held-out rows' leading time profile (it dominates every other
structure of the record) is projected out with it: without inputs it cannot be told from the split of the
leading oscillation by sign.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import SignalsConfig
from .detect import coherent_components, scan_losses
from .group import find_groups, relative_view
from .matrix import LossMatrix
from .pair import draws_needed, group_matrix, within_class_permutations
from .pairing import candidate_views, split_columns
from .result import Coherence, Pair
from .tuning import MIN_ROWS

BLOCK = 4
"""Loss changes per block of the selection / held-out split. Chosen by hand: long enough to hold a few
periods of a step-to-step oscillation, short enough that both parts span the whole run."""
GUARD = 1
"""Loss changes left out at each switch between the parts (two adjacent changes share a recorded row)."""
DIRECTIONS = 2
"""Directions of the split tried: select on A and test on B, then the reverse (each at ``alpha / 2``)."""
MIN_JACCARD = 0.5
"""A group of the whole record is the group of the selection rows it shares more than this Jaccard index with
(the share the group stage calls "mostly the same")."""


def split_changes(n_changes: int, block: int = BLOCK, guard: int = GUARD) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)``: indices of the selection and held-out loss changes, alternating blocks with guards between.

    Example:
        >>> [a.tolist() for a in split_changes(12, block=2, guard=1)]
        [[0, 1, 6, 7], [3, 4, 9, 10]]
    """
    pos = np.arange(n_changes) % (2 * (block + guard))
    return np.flatnonzero(pos < block), np.flatnonzero((pos >= block + guard) & (pos < 2 * block + guard))


class HeldOutChanges:
    """Within-class permutation test of candidate pairs on held-out loss changes.

    A pair's statistic is the variance over time of the difference of its two groups' mean *standardised*
    changes (each example's held-out changes scaled to mean 0 and variance 1, so that a loud example counts
    as much as a quiet one, then the leading time profile of all of them projected out): about
    ``coh_a + coh_b - 2 cross`` for the members' mean correlation within each group and across the two, i.e.
    large when each group still moves together and the two move apart. The projection is the same for every
    permutation (it does not depend on the groups), so the null is exact.

    Args:
        changes: (T, N) loss changes of every example on the held-out rows.
        labels: (N,) classes (one class when all equal).
    """

    def __init__(self, changes: np.ndarray, labels: np.ndarray) -> None:
        d = np.asarray(changes, dtype=np.float64)
        sd = d.std(axis=0)
        z = np.where(sd > 0, (d - d.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)  # (T, N)
        if z.size:  # beyond the leading time profile, which every split of the examples by its sign follows
            u = np.linalg.svd(z, full_matrices=False)[0][:, :1]
            z = z - u @ (u.T @ z)
        self.z = z
        _, self.labels = np.unique(np.asarray(labels), return_inverse=True)

    @staticmethod
    def _contrast(means: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """Variance over time of ``means[a] - means[b]`` (``means``: (G, T)) for each ``(a, b)`` row of ``pairs``."""
        return (means[pairs[:, 0]] - means[pairs[:, 1]]).var(axis=1)

    def adjusted(self, pairs: list[tuple[np.ndarray, np.ndarray]], n: int, rng: np.random.Generator
                 ) -> np.ndarray:
        """Family-wise adjusted p-values (single-step max-T over ``n`` draws) of each pair's statistic.

        Returns:
            (K,) adjusted p-values, the smallest ``1 / (n + 1)``.
        """
        return self.test(pairs, n, rng)[0]

    def test(self, pairs: list[tuple[np.ndarray, np.ndarray]], n: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
        """``(adjusted p-values (K,), statistics over their null means (K,))`` (see :meth:`adjusted`)."""
        if not pairs:
            return np.zeros(0), np.zeros(0)
        groups = [np.asarray(g, dtype=np.int64) for pair in pairs for g in pair]
        index = np.arange(len(groups)).reshape(-1, 2)
        member = group_matrix(groups, self.z.shape[1], mean=True)
        zt = self.z.T  # (N, T)
        obs = self._contrast(member @ zt, index)
        null = np.empty((n, len(pairs)))
        for i, perm in enumerate(within_class_permutations(self.labels, n, rng)):
            null[i] = self._contrast(member @ zt[perm], index)
        # max-T over the candidates, each log statistic standardised by its own null (a discrete min-P over
        # many candidates would floor at the chance that some candidate's draw is its largest)
        lo, ln = np.log(np.maximum(obs, 1e-300)), np.log(np.maximum(null, 1e-300))
        mu, sd = ln.mean(axis=0), np.maximum(ln.std(axis=0), 1e-12)
        mx = ((ln - mu) / sd).max(axis=1)
        adjusted = (1 + (mx[:, None] >= ((lo - mu) / sd)[None, :]).sum(axis=0)) / (n + 1)
        return adjusted, obs / np.maximum(null.mean(axis=0), 1e-300)


@dataclass
class _Part:
    """The detection's view of the selection rows (what :func:`~oppsig.signals.pairing.candidate_views` reads)."""

    lm: LossMatrix
    comps: Any
    total: np.ndarray
    relative: Any


def _selection(lm: LossMatrix, rows: np.ndarray, config: SignalsConfig):
    """``(part, groups, series)`` of the selection rows: the loss changes ``rows`` summed from the first row."""
    d = lm.diff_columns(np.arange(lm.shape[1]))[rows].astype(np.float64)
    levels = np.concatenate([lm.row(0)[None].astype(np.float64), lm.row(0)[None] + np.cumsum(d, axis=0)])
    sub = LossMatrix(levels.astype(np.float32), config.block_rows, config.max_memory_mb)
    scan = scan_losses(sub, config.k)
    part = _Part(sub, coherent_components(sub, scan, config), scan.total, relative_view(sub, config))
    groups = find_groups(sub, scan, part.comps, config, part.relative)
    series = split_columns(sub.diff_columns(np.concatenate(groups)), groups) if groups else []
    return part, groups, series


def _match(group: np.ndarray, others: list[np.ndarray]) -> int | None:
    """The index of the group in ``others`` that is mostly ``group`` (Jaccard above :data:`MIN_JACCARD`)."""
    best, best_j = None, MIN_JACCARD
    s = set(group.tolist())
    for i, o in enumerate(others):
        inter = len(s.intersection(o.tolist()))
        j = inter / (len(s) + len(o) - inter)
        if j > best_j:
            best, best_j = i, j
    return best


@dataclass
class ReplicationTest:
    """The record-only pair test (see the module docstring): candidates of the selection rows, tested on the
    held-out rows; :meth:`assess` then passes the whole record's candidates their matched p-values."""

    labels: np.ndarray

    def replicated(self, det, config: SignalsConfig, sel: np.ndarray, held_rows: np.ndarray,
                   rng: np.random.Generator) -> tuple[list[np.ndarray], dict, int]:
        """``(groups of the selection changes sel, {(a, b): (adjusted p, statistic over its null mean)}, draws)``
        for their candidates (both orders), tested on the changes ``held_rows``."""
        part, groups, series = _selection(det.lm, sel, config)
        cands = candidate_views(part, groups, series, config) if groups else None
        if cands is None or not cands.pairs:
            return groups, {}, 0
        n = draws_needed(config.n_null, config.alpha)
        names = sorted({v.name for v in cands.view_of})
        out = {}
        for name in names:
            view = det.lm if name == "raw" else (det.relative[0] if det.relative is not None else None)
            idx = [i for i, v in enumerate(cands.view_of) if v.name == name]
            if view is None:
                continue
            held = HeldOutChanges(view.diff_columns(np.arange(view.shape[1]))[held_rows], self.labels)
            p, stat = held.test([(groups[cands.pairs[i][0]], groups[cands.pairs[i][1]]) for i in idx], n, rng)
            for i, pi, si in zip(idx, np.minimum(1.0, p * len(names)), stat):  # Bonferroni over the views
                a, b, _ = cands.pairs[i]
                out[(a, b)] = out[(b, a)] = (float(pi), float(si))
        return groups, out, n

    def pvalues(self, det, rows: list[np.ndarray], config: SignalsConfig) -> tuple[list[dict], int]:
        """For each direction of the split (select on A, test on B; then the reverse), ``{(a, b): (p, statistic)}``
        keyed by the whole record's groups (matched by :func:`_match`), with p Bonferroni over the directions."""
        a_rows, b_rows = split_changes(det.lm.shape[0] - 1)
        if min(len(a_rows), len(b_rows)) + 1 < MIN_ROWS:
            return [], 0
        rng = np.random.default_rng(config.seed)
        out, n = [], 0
        for sel, held in ((a_rows, b_rows), (b_rows, a_rows))[:DIRECTIONS]:
            groups, found, n_dir = self.replicated(det, config, sel, held, rng)
            n = max(n, n_dir)
            match = [_match(g, groups) for g in rows]
            idx = {(i, j): k for (i, j) in itertools.permutations(range(len(rows)), 2)
                   if (k := (match[i], match[j])) in found}
            out.append({ij: (min(1.0, found[k][0] * DIRECTIONS), found[k][1]) for ij, k in idx.items()})
        return out, n

    def assess(self, det, rows: list[np.ndarray], cands, ratio: np.ndarray, shares: list[float],
               config: SignalsConfig) -> list[Pair]:
        """Every candidate of the whole record (``cands``: ``(a, b, corr)``) with its replication test: the
        smaller p-value of the two directions (each Bonferroni-adjusted), and that direction's statistic."""
        found, n = self.pvalues(det, rows, config)
        res = 1.0 / (n + 1) if n else float("nan")
        pairs = []
        for (a, b, c), share in zip(cands, shares):
            p, stat = min((f[(a, b)] for f in found if (a, b) in f), default=(1.0, float("nan")))
            passed = bool(p <= config.alpha and c <= config.max_pair_corr)
            sw = float(np.sqrt(ratio[a] * ratio[b]))
            coherence = Coherence(statistic=stat, p_value=p, threshold=config.alpha, n_null=n, resolution=res)
            pairs.append(Pair(a, b, corr=c, strength=-c * sw, swing=sw, spike_share=float(share),
                              significant=passed, failed=() if passed else ("test",), coherence=coherence,
                              tested_on="record"))
        return pairs

    def description(self, det, config: SignalsConfig) -> dict:
        """The changes to :func:`~oppsig.signals.pairing.test_description` for this test."""
        a_rows, b_rows = split_changes(det.lm.shape[0] - 1)
        return {
            "method": "replication in time, from the record alone (no inputs): groups and anti-phase candidates "
                      f"found on {len(a_rows)} of the loss changes (blocks of {BLOCK}), each candidate's "
                      f"co-movement tested on {len(b_rows)} held-out changes against random groups of its sizes "
                      "and class counts (within-class permutations), and the same with the parts swapped",
            "error": "family-wise error rate over the candidate pairs of both selections (single-step max-T within "
                     "each, Bonferroni over the views and the two directions)",
            "tested_on": "record",
            "features": 0,
            "skipped_gates": ["visible"],
        }

