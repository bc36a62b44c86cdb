"""The pair test: calibration of the within-class permutation null, power, and the pair bookkeeping."""

import numpy as np

from oppsig.signals.pair import (
    CoherenceTest,
    anti_phase_candidates,
    assess_pairs,
    draws_needed,
    match_pairs,
    maxt_pvalues,
)
from oppsig.signals.result import Pair


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
    assert p.p_b > 0.05 and p.p_a <= 0.005 and p.p_value == max(p.p_a, p.p_b) and not p.significant
    assert p.n_null == 199 and p.resolution == 1 / 200


def test_match_pairs_keeps_each_group_once():
    def pair(a, b, s):
        return Pair(a, b, corr=-0.9, strength=s, swing=1.0, spike_share=1.0, coherence=1.0, null_corr=-0.5,
                    p_value=0.001, threshold=0.01, significant=True)

    out = match_pairs([pair(0, 1, 3.0), pair(1, 2, 2.0), pair(2, 3, 1.0)])
    assert [(p.a, p.b, p.significant) for p in out] == [(0, 1, True), (2, 3, True), (1, 2, False)]
