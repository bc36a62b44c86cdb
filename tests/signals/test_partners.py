"""Choosing partners: a cross-class pair sharing a feature is reported over louder, less anti-phase partners."""

import numpy as np
import pytest

from oppsig.data import PlantedPair, opposing_signals
from oppsig.signals import find_signals
from oppsig.signals.synthetic import cross_class_matrix, overlap_f1

N, T = 1000, 200


@pytest.mark.parametrize("seed", [2, 3])
def test_cross_class_pair_is_reported_over_its_groups_louder_same_class_partners(seed):
    """Groups A (class 0) and B (class 1) share a feature and swing in anti-phase; C (class 0) and D (class 1) carry
    features of their own and swing 8x as much against A and B, less anti-phase. By ``-corr`` times swing the
    same-class pairs are stronger; by anti-phase A and B are each other's best partner, and they are reported."""
    ds = opposing_signals(n=N, frequency=0.2, seed=seed,
                          pairs=(PlantedPair("bright_top", 0, 1), PlantedPair("dark_border", 0, 1)))
    planted = [np.flatnonzero(ds.groups == k) for k in range(4)]
    losses = cross_class_matrix(N, T, (planted[0], planted[1]), (planted[2], planted[3]), seed=100 + seed)
    res = find_signals(losses, np.arange(T), ds)
    rows = [np.asarray(g.members) for g in res.groups]
    a, b, c, d = (max(range(len(rows)), key=lambda i: overlap_f1(rows[i], t)) for t in planted)
    assert min(overlap_f1(rows[i], t) for i, t in zip((a, b, c, d), planted)) > 0.9

    def find(pairs, x, y):
        return [p for p in pairs if {p.a, p.b} == {x, y}]

    (ab,) = find(res.pairs, a, b)  # the cross-class pair is reported
    assert ab.significant and ab.corr < -0.6 and not find(res.rejected_pairs, a, b)
    louder = find(res.pairs, a, c) + find(res.pairs, b, d)
    assert louder and all(p.strength > ab.strength and p.corr > ab.corr for p in louder)  # weaker, but louder
    for p in res.pairs:  # no reported pair of A or B leaves a stronger partner of theirs out
        if {p.a, p.b} & {a, b}:
            assert p is ab or p.corr > ab.corr
