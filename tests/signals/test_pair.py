"""The pair test: calibration of the within-class permutation null, power, and the pair bookkeeping."""

import numpy as np
import pytest

from oppsig.signals.pair import (
    GATES,
    CoherenceTest,
    anti_phase_candidates,
    assess_pairs,
    best_partner_pairs,
    draws_needed,
    failed_checks,
    match_pairs,
    maxt_pvalues,
    pair_correlation,
    select_pairs,
)
from oppsig.signals.antiphase import AntiPhaseNull
from oppsig.signals.result import AntiPhase, Coherence, Pair, SignalsError

COH = Coherence(statistic=1.0, p_value=0.001, threshold=0.01)
NAN = float("nan")


def test_family_wise_error_holds_under_the_null():
    """Random groups in data without shared features: a rejection in at most alpha of the runs (+ sampling error)."""
    rng = np.random.default_rng(0)
    runs, alpha, hits, pvals = 200, 0.1, 0, []
    for _ in range(runs):
        feats = rng.standard_normal((300, 6))
        labels = rng.integers(0, 3, 300)
        groups = [rng.choice(300, 12, replace=False) for _ in range(4)]
        p, _ = maxt_pvalues(CoherenceTest(feats, labels), groups, 99, rng)
        hits += bool((p <= alpha).any())
        pvals.append(p[0])
    assert hits / runs <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)
    assert np.mean(np.array(pvals) <= 0.5) < 0.65  # the single-group p-values are not piled at 0


def test_coherent_group_found_and_class_structure_is_not_coherence():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((400, 5))
    labels = np.arange(400) % 4
    feats[labels == 2, 1] += 5.0       # a whole class differs: that is the class, not a group feature
    feats[:40:4, 0] += 2.0             # 10 examples of class 0 share a feature
    t = CoherenceTest(feats, labels)
    p, obs = maxt_pvalues(t, [np.arange(0, 40, 4), np.flatnonzero(labels == 2)[:10]], 499, rng)
    assert p[0] == 1 / 500 and p[1] > 0.05
    assert obs[0] > 4 * t.dims  # about m * shift^2 = 10 * 2^2 against about dims = 5 for a random group


def test_draws_resolve_the_level():
    assert draws_needed(19, 0.01) == 199 and draws_needed(999, 0.01) == 999


def test_candidates_and_assessment():
    t = np.arange(100.0)
    means = np.stack([np.sin(t), -np.sin(t) + 0.1 * np.cos(t), np.cos(t)], axis=1)
    cands = anti_phase_candidates(means, np.array([1.0, 2.0, 1.0]), -0.3)
    assert [(a, b) for a, b, _ in cands] == [(1, 0)] and cands[0][2] < -0.9
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((200, 4))
    labels = np.arange(200) % 2
    rows = [np.arange(0, 20), np.arange(20, 40), np.arange(40, 60)]
    feats[20:40, 0] += 3.0  # group 1 is coherent, group 0 is not
    pairs = assess_pairs(cands, rows, np.array([3.0, 3.0, 1.0]), [float("nan")], CoherenceTest(feats, labels),
                         alpha=0.05, n_null=199)
    (p,) = pairs
    c = p.coherence
    assert c.p_b > 0.05 and c.p_a <= 0.005 and c.p_value == max(c.p_a, c.p_b) and not p.significant
    assert c.n_null == 199 and c.resolution == 1 / 200


def _stronger_left_out(edges, kept):
    """Reported pairs that leave a stronger partner of one of their groups unreported."""
    order = {i: (c, i) for i, (_, _, c) in enumerate(edges)}
    return [(i, j) for i in kept for j in range(len(edges)) if j not in kept and order[j] < order[i]
            and set(edges[i][:2]) & set(edges[j][:2])]


def test_best_partner_pairs_reports_every_groups_best_and_no_weaker_one_in_its_place():
    """The defect's shape: groups 0 and 1 (two classes, one feature) at -0.93; each also opposes a louder group of
    its own class, less anti-phase (-0.72 and -0.54). The planted pair is reported, and so are the partners' own
    best; no reported pair leaves a stronger partner out, and each group's strongest pair is among those reported."""
    edges = [(0, 2, -0.72), (1, 3, -0.54), (0, 1, -0.93), (2, 3, -0.35)]
    assert best_partner_pairs(edges) == [2, 0, 1]  # (2, 3) is neither group's best: both have a stronger one
    rng = np.random.default_rng(0)
    for _ in range(300):
        g = int(rng.integers(2, 8))
        all_pairs = [(a, b) for a in range(g) for b in range(a + 1, g)]
        pick = rng.choice(len(all_pairs), size=int(rng.integers(1, len(all_pairs) + 1)), replace=False)
        edges = [(*all_pairs[i], float(rng.choice([-0.9, -0.8, -0.6, -0.5]))) for i in pick]  # ties too
        kept = set(best_partner_pairs(edges))
        assert not _stronger_left_out(edges, kept)
        for grp in {x for e in edges for x in e[:2]}:
            mine = [i for i, e in enumerate(edges) if grp in e[:2]]
            assert min(mine, key=lambda i: (edges[i][2], i)) in kept
        for i in set(range(len(edges))) - kept:  # a pair left out: each group has a stronger reported partner
            assert all(any(grp in edges[j][:2] and (edges[j][2], j) < (edges[i][2], i) for j in kept)
                       for grp in edges[i][:2])


def test_match_pairs_chooses_partners_by_anti_phase_not_swing():
    def pair(a, b, corr, strength):
        return Pair(a, b, corr=corr, strength=strength, swing=1.0, spike_share=1.0, significant=True,
                    coherence=COH, anti_phase=AntiPhase(null_corr=-0.5))

    out = match_pairs([pair(0, 2, -0.72, 3.0), pair(1, 3, -0.54, 2.5), pair(0, 1, -0.93, 1.0), pair(2, 3, -0.4, 2.8)])
    assert [(p.a, p.b, p.significant) for p in out] == [(0, 2, True), (1, 3, True), (0, 1, True), (2, 3, False)]
    assert out[-1].failed == ("partner",)


def _generic(rng, t, n, loading=0.3):
    """Loss changes (T, n): every example its own sign and size along the leading oscillation, plus noise."""
    ref = (-1.0) ** t * (1 + 0.5 * np.sin(t / 15))
    c = rng.choice([-1.0, 1.0], n) * rng.lognormal(0, 0.5, n) * loading
    return ref, ref[:, None] * c + rng.standard_normal((len(t), n))


def _ap(null, a, b, rng, sizes=None):
    sizes = sizes or (a.shape[1], b.shape[1])
    return null.test(pair_correlation(a.mean(axis=1), b.mean(axis=1)), null.beyond(a.mean(axis=1), b.mean(axis=1)),
                     *sizes, 1.0, 399, rng)


def test_anti_phase_gate_passes_a_planted_pair_and_stops_random_splits():
    """A planted pair is more anti-phase than random examples of its sizes split by their co-movement; random
    halves of one group (all moving together) and a split of generic examples by their sign are not."""
    rng = np.random.default_rng(3)
    t = np.arange(300)
    ref, pool = _generic(rng, t, 600)
    null = AntiPhaseNull(pool, ref)
    own = (-1.0) ** t * (np.sin(t / 7) > 0)  # the pair's own episodes, not the leading oscillation
    a = own[:, None] * 1.0 + 0.3 * ref[:, None] + rng.standard_normal((len(t), 20))
    b = -own[:, None] * 1.0 - 0.3 * ref[:, None] + rng.standard_normal((len(t), 20))
    ap = _ap(null, a, b, rng)
    assert ap.p_corr == 1 / 400 and ap.p == 2 / 400 and -0.9 < ap.null_corr < -0.3  # splits anti-phase, but less
    whole = own[:, None] + rng.standard_normal((len(t), 40))  # one group: random halves move together
    perm = rng.permutation(40)
    assert _ap(null, whole[:, perm[:20]], whole[:, perm[20:]], rng).p == 1.0
    _, other = _generic(rng, t, 40)  # generic examples split by their sign: what the null draws
    side = other.T @ (ref - ref.mean()) > 0
    assert _ap(null, other[:, side], other[:, ~side], rng).p > 0.05


def test_anti_phase_beyond_the_leading_oscillation_passes_a_pair_weaker_than_it():
    """Where the leading oscillation is clean, random splits by it correlate near -1 and a pair with a weaker
    oscillation of its own is less anti-phase than they are; beyond the leading oscillation it is the pair that
    stays anti-phase, and the gate passes it. Without its own oscillation the same examples do not pass."""
    rng = np.random.default_rng(4)
    t = np.arange(300)
    ref, pool = _generic(rng, t, 600, loading=3.0)
    null = AntiPhaseNull(pool, ref)
    own = (-1.0) ** t * (np.sin(t / 7) > 0)
    for amp, passes in ((0.5, True), (0.0, False)):
        sign = np.where(np.arange(40) < 20, 1.0, -1.0)
        x = ref[:, None] * 3.0 * sign + amp * own[:, None] * sign + rng.standard_normal((len(t), 40))
        ap = _ap(null, x[:, :20], x[:, 20:], rng)
        assert (ap.p <= 0.01) == passes, (amp, ap)
        if passes:
            assert ap.p_corr > 0.05 and ap.beyond < -0.5 < ap.null_beyond and ap.p_beyond == 1 / 400  # raw alone fails


def test_anti_phase_null_never_shrinks_its_draws():
    rng = np.random.default_rng(0)
    null = AntiPhaseNull(rng.standard_normal((50, 30)), rng.standard_normal(50))
    with pytest.raises(SignalsError, match="need that many in the pool"):
        null.draws(20, 20, 1.0, 10, rng)


def test_gates_after_the_test_only_remove_pairs():
    def pair(a, b, s, **kw):
        return Pair(a, b, corr=-0.9, strength=s, swing=1.0, spike_share=1.0, significant=True, coherence=COH,
                    anti_phase=AntiPhase(null_corr=-0.5, p=kw.pop("p", NAN),
                                         leading_corr=kw.pop("leading_corr", NAN)), **kw)

    ok = dict(p=0.005, leading_corr=0.1, direction_ratio=0.5)
    pairs = [pair(0, 1, 3.0, **{**ok, "p": 0.3}), pair(1, 2, 2.0, **ok),
             pair(3, 4, 1.0, **{**ok, "leading_corr": -0.95}),
             pair(5, 6, 0.5, **{**ok, "direction_ratio": 0.1}), pair(7, 8, 0.4, **ok, failed=("test",))]
    out = select_pairs(pairs, 0.01, 0.3, 0.9, GATES)
    assert [(p.a, p.b) for p in out if p.significant] == [(1, 2)]  # group 1 is free again for its next partner
    why = {(p.a, p.b): p.failed for p in out}
    assert why[(0, 1)] == ("anti-phase",) and why[(3, 4)] == ("leading",) and why[(5, 6)] == ("visible",)
    assert why[(7, 8)] == ("test",)  # a gate never rescues a pair that failed the test
    assert len([p for p in select_pairs(pairs, 0.01, 0.3, 0.9, gates=()) if p.significant]) == 4  # each a best
    # without the anti-phase gate pair (0, 1) is kept too; (1, 2), group 2's only partner, stays
    ungated = select_pairs(pairs, 0.01, 0.3, 0.9, ("visible", "leading"))
    assert [(p.a, p.b) for p in ungated if p.significant] == [(0, 1), (1, 2)]
    assert failed_checks(pair(0, 1, 1.0), 0.01, 0.3, 0.9) == ("anti-phase", "visible", "leading")  # NaN: not passed


def test_a_pair_that_is_the_leading_oscillation_passes_when_anti_phase_beyond_it():
    """A planted pair that carries a run's largest oscillation correlates with it at -0.9 and beyond; it is kept
    when it stays anti-phase once that oscillation is projected out (p_beyond at most half the level)."""
    def pair(p_beyond):
        return Pair(0, 1, corr=-0.9, strength=1.0, swing=1.0, spike_share=1.0, significant=True, coherence=COH,
                    direction_ratio=0.5, anti_phase=AntiPhase(p=min(1.0, 2 * p_beyond), leading_corr=-0.93,
                                                              p_beyond=p_beyond))

    assert failed_checks(pair(0.0025), 0.01, 0.3, 0.9) == ()
    assert failed_checks(pair(0.006), 0.01, 0.3, 0.9) == ("anti-phase", "leading")  # p 0.012: neither passes
    assert failed_checks(pair(0.0049), 0.01, 0.3, 0.9) == ()
    assert failed_checks(pair(NAN), 0.01, 0.3, 0.9) == ("anti-phase", "leading")  # not computed: no evidence


def test_a_pair_whose_gradients_do_not_point_apart_is_not_reported():
    from oppsig.signals import SignalsResult, Verification, with_verifications

    def pair(a, b):
        return Pair(a, b, corr=-0.9, strength=1.0, swing=1.0, spike_share=1.0, significant=True, coherence=COH,
                    anti_phase=AntiPhase(null_corr=-0.5))

    res = SignalsResult(n_rows=10, n_examples=4, pairs=(pair(0, 1), pair(2, 3), pair(4, 5)))
    checks = [Verification(a=1, b=0, grad_cosine=0.1, grad_norm_a=1.0, grad_norm_b=1.0),
              Verification(a=2, b=3, grad_cosine=-0.6, grad_norm_a=1.0, grad_norm_b=1.0),
              Verification.failed(4, 5, "no checkpoint before the spike")]
    out = with_verifications(res, checks)
    assert [(p.a, p.b) for p in out.pairs] == [(2, 3), (4, 5)]  # a check that could not run changes nothing
    assert out.rejected_pairs[0].failed == ("gradient",) and len(out.verifications) == 3
