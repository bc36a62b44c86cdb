"""Pair: groups whose losses move in anti-phase, tested with a permutation null of the same procedure.

Near the edge of stability every example's loss oscillates along the top
Hessian direction with some sign, so *any* examples split by the sign of their
co-movement give anti-correlated halves: anti-correlation alone is no evidence,
and neither is a large swing (the groups were chosen because they swing).
Opposing signals are groups that share an input feature (Rosenfeld & Risteski,
arXiv 2311.04163). The test therefore asks whether the groups that the
detection found are more alike in their inputs than the same procedure finds
on data where the loss record carries no information about the inputs beyond
the class.

**The null is the same procedure.** Grouping and pairing look only at the loss
record and the class labels (:mod:`~oppsig.signals.group`), so running the whole
group -> pair pipeline on the loss matrix with its columns permuted within each
class gives the *same* groups, made of other examples of the same classes. The
null distribution of a group's input coherence is therefore exact and cheap:
random groups with the group's class counts, drawn without replacement.

**Statistic** (:class:`CoherenceTest`): a Hotelling-type ``m * ||mean of the
members' whitened within-class features||^2``, over the input descriptors and
the leading principal components of the inputs, each example taken minus its
class mean and whitened with the pooled within-class covariance.

**p-values and the error controlled.** Each permutation draw permutes the
examples within every class at once, so it is one run of the whole pipeline on
data without input-loss structure; all the groups that enter a tested pair get
their statistic on each of ``n`` draws, and a group's p-value is the
single-step max-T adjusted ``(1 + #{draws whose largest statistic over the
groups >= its own}) / (n + 1)`` (Westfall & Young 1993): rejecting the groups
with adjusted p <= ``alpha`` controls the **family-wise error rate** at
``alpha`` over all groups tested. The resolution is ``1 / (n + 1)``; ``n`` is at
least ``2 / alpha - 1``. A pair's p-value is the larger of its two groups'
(both groups must be coherent: an intersection-union test), so the chance that
any reported pair holds a group without input structure is at most ``alpha``.

**Gates after the test** (:func:`select_pairs`): a pair that passes must also be
more anti-phase than random examples of its sizes split by their co-movement,
as it is or beyond the leading oscillation (:class:`~oppsig.signals.antiphase.AntiPhaseNull`; without
``anti_phase_gate`` such a pair is only flagged ``weak``), differ visibly from
its classes, and not be the run's leading oscillation itself (:func:`failed_checks`).
They can only remove pairs, so the family-wise error rate holds whatever their levels.

**Partners** (:func:`match_pairs`): of the pairs that pass the test and the gates, a
pair is *stronger* than another when it is more anti-phase: a lower ``corr`` in its own
view (raw or relative; both are past the anti-phase gate, i.e. anti-phase beyond what
the leading oscillation gives random splits). Every group's strongest pair is reported,
and no reported pair leaves a stronger partner of one of its groups unreported
(:func:`best_partner_pairs`); a group can be in several pairs. Swing does not choose
partners: a loud group weakly opposed to a quiet one does not take it from the partner
it opposes most. This too only removes pairs.

Example:
    >>> rng = np.random.default_rng(0)
    >>> feats = rng.standard_normal((400, 5)); labels = np.arange(400) % 4
    >>> feats[:20, 0] += 3.0          # 20 examples share a feature
    >>> t = CoherenceTest(feats, labels)
    >>> p, _ = maxt_pvalues(t, [np.arange(20), np.arange(100, 120)], 999, rng)
    >>> bool(p[0] <= 0.001), bool(p[1] > 0.05)
    (True, True)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .result import Coherence, Pair, SignalsError


def pair_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two series (0 when either is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def anti_phase_candidates(means: np.ndarray, swings: np.ndarray, max_pair_corr: float) -> list[tuple[int, int, float]]:
    """Pairs of groups whose mean loss changes correlate at most ``max_pair_corr``.

    Args:
        means: (T, G) group-mean loss changes.
        swings: (G,) each group's swing; each pair is given as (larger swing, smaller swing).

    Returns:
        ``(a, b, corr)`` for every such pair.
    """
    g = means.shape[1]
    if g < 2:
        return []
    sd = means.std(axis=0)
    c = np.corrcoef(means.T) if (sd > 0).all() else np.array(
        [[pair_correlation(means[:, i], means[:, j]) for j in range(g)] for i in range(g)])
    out = []
    for i in range(g):
        for j in range(i + 1, g):
            if c[i, j] <= max_pair_corr:
                out.append((i, j, float(c[i, j])) if swings[i] >= swings[j] else (j, i, float(c[i, j])))
    return out


class CoherenceTest:
    """Within-class permutation test of a group's input coherence.

    Args:
        features: (N, F) input features of every example (e.g. descriptors and
            leading principal components of the inputs).
        labels: (N,) classes, or ``None`` (one class).
        ridge: directions of the within-class covariance with variance below
            ``ridge`` times the largest are dropped before whitening.

    Raises:
        SignalsError: for sizes that disagree or fewer than 2 examples.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray | None = None, ridge: float = 1e-6) -> None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise SignalsError(f"features must be (N >= 2, F), got shape {f.shape}")
        f = (f - f.mean(axis=0)) / np.maximum(f.std(axis=0), 1e-12)  # one scale, so the ridge below is relative
        lab = np.zeros(len(f), dtype=np.int64) if labels is None or np.ndim(labels) != 1 else np.asarray(labels)
        if len(lab) != len(f):
            raise SignalsError(f"labels has {len(lab)} entries, features {len(f)} rows")
        _, self.labels = np.unique(lab, return_inverse=True)
        counts = np.bincount(self.labels)
        sums = np.zeros((len(counts), f.shape[1]))
        np.add.at(sums, self.labels, f)
        w = f - (sums / counts[:, None])[self.labels]
        cov = w.T @ w / max(1, len(f) - len(counts))
        ev, evec = np.linalg.eigh(cov) if f.shape[1] else (np.zeros(0), np.zeros((0, 0)))
        keep = ev > ridge * max(float(ev.max()) if len(ev) else 0.0, 1e-300)
        self.white = w @ (evec[:, keep] / np.sqrt(ev[keep]))  # (N, F'): within-class whitened
        self.by_class = [np.flatnonzero(self.labels == c) for c in range(len(counts))]

    @property
    def dims(self) -> int:
        """Whitened feature dimensions used by the statistic."""
        return int(self.white.shape[1])

    def statistic(self, rows: np.ndarray) -> float:
        """``m * ||mean of the members' whitened within-class features||^2`` (about ``dims`` for a random group)."""
        rows = np.asarray(rows, dtype=np.int64)
        return float(len(rows) * (self.white[rows].mean(axis=0) ** 2).sum())

    def permuted_statistics(self, groups: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, G) statistics of the groups under ``n`` random within-class permutations of the examples.

        Each draw permutes the examples within every class at once, as if the loss
        columns had been shuffled among the examples of each class before the whole
        pipeline ran: the groups keep their columns (and class counts) and get other
        examples' inputs.
        """
        sizes = np.array([len(g) for g in groups], dtype=np.float64)
        member = group_matrix(groups, len(self.labels))
        out = np.empty((n, len(groups)))
        for i, perm in enumerate(within_class_permutations(self.labels, n, rng)):
            sums = member @ self.white[perm]
            out[i] = (sums**2).sum(axis=1) / sizes
        return out


def group_matrix(groups: list[np.ndarray], n_examples: int, mean: bool = False):
    """(G, n_examples) sparse membership of ``groups`` (rows of examples): ones, or ``1 / size`` with ``mean``, so
    that ``matrix @ values`` sums (averages) each group's rows of ``values``."""
    from scipy.sparse import csr_matrix

    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    cols = np.concatenate([np.asarray(g, dtype=np.int64) for g in groups])
    weights = np.repeat(1.0 / np.maximum(sizes, 1), sizes) if mean else np.ones(len(cols))
    return csr_matrix((weights, (np.repeat(np.arange(len(groups)), sizes), cols)), shape=(len(groups), n_examples))


def within_class_permutations(labels: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` random permutations of the examples within each class of ``labels`` (each a (N,) index array)."""
    labels = np.asarray(labels)
    by_class = np.argsort(labels, kind="stable")  # rows sorted by class
    for _ in range(n):
        perm = np.empty(len(labels), dtype=np.int64)
        perm[by_class] = np.lexsort((rng.random(len(labels)), labels))  # a random order within each class
        yield perm


def draws_needed(n_null: int, alpha: float) -> int:
    """Permutations: at least ``n_null``, and enough that the resolution ``1 / (n + 1)`` is at most ``alpha / 2``."""
    return max(int(n_null), math.ceil(2 / alpha) - 1)


def maxt_pvalues(test: CoherenceTest, groups: list[np.ndarray], n: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Family-wise adjusted p-values of the groups' coherence (single-step max-T, Westfall & Young 1993).

    The statistic of every group is computed on ``n`` within-class permutations
    of the examples; a group's adjusted p-value is ``(1 + #{permutations whose
    largest statistic over all groups >= its own}) / (n + 1)``. Rejecting the
    groups with adjusted p <= alpha controls the family-wise error rate at alpha
    over all the groups tested. The statistic is about chi-square with ``dims``
    degrees of freedom for a random group of any size, so the maximum treats
    the groups alike.

    Returns:
        ``(adjusted p-values (G,), observed statistics (G,))``.
    """
    obs = np.array([test.statistic(g) for g in groups])
    if not groups:
        return np.zeros(0), obs
    mx = test.permuted_statistics(groups, n, rng).max(axis=1)
    return (1 + (mx[None, :] >= obs[:, None]).sum(axis=1)) / (n + 1), obs


def assess_pairs(
    candidates: list[tuple[int, int, float]],
    group_rows: list[np.ndarray],
    swing_ratio: np.ndarray,
    spike_share: list[float],
    test: CoherenceTest,
    alpha: float = 0.01,
    n_null: int = 999,
    seed: int = 0,
    max_pair_corr: float = -0.3,
) -> list[Pair]:
    """Test every candidate pair against the within-class permutation null (see the module docstring).

    Args:
        candidates: ``(a, b, corr)`` from :func:`anti_phase_candidates`.
        group_rows: rows of each group.
        swing_ratio: (G,) each group's swing over the total loss's swing.
        spike_share: per candidate pair, its share of the spike-window |loss change|
            over its share of the examples (NaN when there is no spike).
        test: the :class:`CoherenceTest` of the data set.
        alpha: family-wise level over the groups that enter a tested pair.
        n_null: fewest within-class permutations (see :func:`draws_needed`).
        max_pair_corr: a pair's anti-phase must be at least this strong to count.

    Returns:
        Every tested pair, in the order of ``candidates``; ``significant`` when it
        passes the test (``p_value <= alpha`` and ``corr <= max_pair_corr``), else
        ``failed == ("test",)``. The gates after the test and the matching of each
        group to one partner are :func:`select_pairs`'.
    """
    rng = np.random.default_rng(seed)
    tested = sorted({i for a, b, _ in candidates for i in (a, b)})
    n = draws_needed(n_null, alpha)
    adj, obs = maxt_pvalues(test, [group_rows[g] for g in tested], n, rng)
    pvals = dict(zip(tested, adj))
    stats = dict(zip(tested, obs))
    pairs = []
    for (a, b, c), share in zip(candidates, spike_share):
        p = max(pvals[a], pvals[b])
        sw = float(np.sqrt(swing_ratio[a] * swing_ratio[b]))
        passed = bool(p <= alpha and c <= max_pair_corr)
        coherence = Coherence(statistic=float(0.5 * (stats[a] + stats[b]) / max(1, test.dims)), p_value=float(p),
                              threshold=alpha, p_a=float(pvals[a]), p_b=float(pvals[b]), n_null=n,
                              resolution=1.0 / (n + 1))
        pairs.append(Pair(a, b, corr=c, strength=-c * sw, swing=sw, spike_share=float(share), significant=passed,
                          failed=() if passed else ("test",), coherence=coherence))
    return pairs


GATES = ("anti-phase", "visible", "leading")
"""The checks after the test, in the order :func:`failed_checks` names them; each can only remove pairs."""

BEYOND_CORR = -0.3
"""The ``"beyond"`` gate of a pair found from the record alone: its groups' correlation once the leading
oscillation is taken out of both (``anti_phase.beyond_corr``) must be at most this, the candidates' default
``max_pair_corr`` (the replication test measures co-movement beyond the leading profile too)."""


def failed_checks(p: Pair, anti_phase_level: float, min_direction_ratio: float, max_leading_corr: float,
                  gates: tuple[str, ...] = GATES) -> tuple[str, ...]:
    """The gates after the test that ``p`` fails (of those named in ``gates``).

    - ``"anti-phase"``: its anti-phase is not beyond that of random examples of its
      sizes split by their co-movement, neither as it is nor with the leading oscillation
      projected out (:class:`~oppsig.signals.antiphase.AntiPhaseNull`): ``anti_phase.p > anti_phase_level``
      (or not computed);
    - ``"visible"``: a group's mean input differs from its classes' by less than
      ``min_direction_ratio`` of a typical example's distance from its class mean;
    - ``"leading"``: the difference of the group means is the run's leading oscillation
      itself: ``|leading_corr| >= max_leading_corr`` (any examples split by their sign
      along the top direction give that), and the pair has no anti-phase of its own beyond it:
      ``p_beyond > anti_phase_level / 2`` (the beyond half of the Bonferroni pair of
      :class:`~oppsig.signals.antiphase.AntiPhaseNull`; NaN: none). A planted pair that
      carries the run's largest oscillation is that oscillation, and is still anti-phase
      once it is projected out;
    - ``"beyond"`` (not in :data:`GATES`: the gate of a pair found from the record alone,
      :mod:`~oppsig.signals.replication`): its groups are not anti-phase once the leading oscillation is
      taken out of both: ``anti_phase.beyond_corr > BEYOND_CORR`` (or not computed). Without inputs, any
      examples split by their sign along the leading oscillation pass the other gates when the split takes
      nearly all of them.

    A gate after a test that controls the family-wise error can only remove pairs,
    so the error rate holds whatever the gates' levels.

    Example:
        >>> from oppsig.signals.result import AntiPhase, Pair
        >>> p = Pair(0, 1, corr=-0.5, strength=1.0, swing=1.0, spike_share=1.0, significant=True,
        ...          anti_phase=AntiPhase(p=0.2, leading_corr=0.3), direction_ratio=0.5)
        >>> failed_checks(p, 0.01, 0.3, 0.9), failed_checks(p, 0.01, 0.3, 0.9, gates=("visible",))
        (('anti-phase',), ())
        >>> lead = dataclasses.replace(p, anti_phase=AntiPhase(p=0.004, leading_corr=-0.95, p_beyond=0.02))
        >>> failed_checks(lead, 0.01, 0.3, 0.9)
        ('leading',)
        >>> own = dataclasses.replace(lead, anti_phase=AntiPhase(p=0.005, leading_corr=-0.95, p_beyond=0.0025))
        >>> failed_checks(own, 0.01, 0.3, 0.9)
        ()
    """
    out = []
    if "anti-phase" in gates and not (p.anti_phase.p <= anti_phase_level):  # NaN fails: no evidence
        out.append("anti-phase")
    if "visible" in gates and not (p.direction_ratio >= min_direction_ratio):
        out.append("visible")
    own = p.anti_phase.p_beyond <= anti_phase_level / 2  # NaN: no evidence of its own
    if "leading" in gates and not (abs(p.anti_phase.leading_corr) < max_leading_corr or own):
        out.append("leading")
    if "beyond" in gates and not (p.anti_phase.beyond_corr <= BEYOND_CORR):  # NaN fails: no evidence
        out.append("beyond")
    return tuple(out)


def select_pairs(pairs: list[Pair], anti_phase_level: float, min_direction_ratio: float, max_leading_corr: float,
                 gates: tuple[str, ...] = GATES) -> list[Pair]:
    """Apply the gates after the test and keep the pairs that are their groups' best (:func:`match_pairs`).

    Args:
        pairs: from :func:`assess_pairs` (with ``anti_phase_p``, ``leading_corr`` and
            ``direction_ratio`` filled in for the pairs that passed the test).
        anti_phase_level, min_direction_ratio, max_leading_corr: the gates' levels
            (:func:`failed_checks`).
        gates: the gates applied (all by default; the calibration harness switches each on and off).

    Returns:
        Every pair, significant ones first, then by strength (``-corr`` times the
        geometric mean swing ratio); ``significant`` when it passed the test and the
        gates and is chosen by :func:`match_pairs`; ``failed`` names what it failed.
    """
    out = []
    for p in pairs:
        failed = ("test",) if "test" in p.failed else failed_checks(
            p, anti_phase_level, min_direction_ratio, max_leading_corr, gates)
        out.append(dataclasses.replace(p, significant=not failed, failed=failed))
    return match_pairs(out)


def anti_phase_order(p: Pair) -> float:
    """How strongly a pair is anti-phase, for choosing partners (lower: stronger): ``corr``, the correlation of
    its group-mean loss changes in its own view (raw, or relative for a relative pair)."""
    return float(p.corr)


def best_partner_pairs(edges: list[tuple[int, int, float]]) -> list[int]:
    """Which of the eligible pairs ``(a, b, order)`` to report (lower ``order``: more anti-phase).

    A pair is *stronger* than another when its ``order`` is lower (ties: the earlier in
    ``edges``). Each group's strongest pair is reported, and so is every pair stronger
    than a reported pair of either of its groups, until no reported pair leaves a stronger
    partner of one of its groups unreported. A group can be in several reported pairs
    (a weaker partner whose own best it is); a pair left out has, for each of its groups,
    a stronger reported partner.

    Returns:
        Indices into ``edges`` of the pairs to report, strongest first.

    Example:
        >>> best_partner_pairs([(0, 2, -0.7), (1, 3, -0.5), (0, 1, -0.9)])  # 2 and 3 keep their only partners
        [2, 0, 1]
        >>> best_partner_pairs([(0, 1, -0.9), (0, 2, -0.7), (1, 2, -0.8)])  # 2's best is 1
        [0, 2]
    """
    order = sorted(range(len(edges)), key=lambda i: (edges[i][2], i))
    rank = {i: r for r, i in enumerate(order)}
    best: dict[int, int] = {}
    for i in order:
        for g in edges[i][:2]:
            best.setdefault(g, i)  # each group's strongest pair
    keep = set(best.values())
    while True:  # close: every pair stronger than a reported pair of one of its groups
        weakest: dict[int, int] = {}
        for i in keep:
            for g in edges[i][:2]:
                weakest[g] = max(weakest.get(g, -1), rank[i])
        more = {i for i in order if i not in keep and any(rank[i] < weakest.get(g, -1) for g in edges[i][:2])}
        if not more:
            return sorted(keep, key=rank.get)
        keep |= more


def match_pairs(pairs: list[Pair]) -> list[Pair]:
    """Report, of the pairs that passed the test and the gates, those :func:`best_partner_pairs` chooses.

    *Stronger* is more anti-phase beyond the leading oscillation, in the pair's own view
    (:func:`anti_phase_order`), among pairs that passed the test and the gates: every group's
    strongest such pair is reported, and no reported pair has a group with a stronger such
    partner left unreported. The others are marked not significant, ``failed`` ending in
    ``"partner"`` (each of their groups has a stronger reported partner).

    Returns:
        The pairs, significant first, then by strength.
    """
    sig = [i for i, p in enumerate(pairs) if p.significant]
    keep = {sig[j] for j in best_partner_pairs([(pairs[i].a, pairs[i].b, anti_phase_order(pairs[i])) for i in sig])}
    out = [p if i in keep or not p.significant else
           dataclasses.replace(p, significant=False, failed=p.failed + ("partner",)) for i, p in enumerate(pairs)]
    out.sort(key=lambda p: (not p.significant, -p.strength))
    return out
