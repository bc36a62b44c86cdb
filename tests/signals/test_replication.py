"""The pair test from the record alone (no inputs): replication in time (:mod:`oppsig.signals.replication`)."""

import numpy as np
import torch

from oppsig.data import ArrayDataset, opposing_signals
from oppsig.signals import find_signals
from oppsig.signals.replication import HeldOutChanges, split_changes
from oppsig.signals.signals_json import result_from_dict, result_to_dict
from oppsig.signals.text import summary_text

from ._synth import eos_matrix, f1

N, T = 1000, 200


def _record_only(ds):
    """What the record alone tells of ``ds``: ids and labels, no inputs (as ``store.dataset.record_dataset``)."""
    return ArrayDataset(x=torch.zeros((len(ds), 1)), y=ds.y, index=ds.index, classes=ds.classes,
                        name="the record (no inputs)", meta={"inputs": False})


def test_split_changes_alternates_blocks_with_guards():
    a, b = split_changes(49)
    assert not set(a) & set(b) and len(a) == len(b) == 20
    assert not (set(a + 1) | set(a - 1)) & set(b)  # no held-out change next to a selection change


def test_held_out_changes_real_pair_vs_noise_and_the_oscillation_split():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        load = rng.standard_normal(600)  # every example follows one oscillation, with its own sign
        d = 0.1 * rng.standard_normal((40, 600)) + 0.2 * rng.standard_normal((40, 1)) * load
        w = rng.standard_normal(40)
        d[:, :40] += 0.1 * w[:, None]
        d[:, 40:80] -= 0.1 * w[:, None]
        by_sign = np.argsort(load[80:]) + 80
        pairs = [(np.arange(40), np.arange(40, 80)), (by_sign[-40:], by_sign[:40]),
                 (np.arange(200, 240), np.arange(300, 340))]
        p = HeldOutChanges(d, np.arange(600) % 3).adjusted(pairs, 199, rng)
        assert p[0] <= 0.01 and p[1] > 0.05 and p[2] > 0.05, p


def test_planted_pairs_reported_from_the_record_alone(planted):
    ds, losses, with_inputs = planted
    res = find_signals(losses, np.arange(T), _record_only(ds), sharpness=np.full(T, 19.5))
    assert res.pairs and all(p.tested_on == "record" for p in res.pairs)
    assert all(p.tested_on == "inputs" for p in with_inputs.pairs)
    found = set()
    for p in res.pairs:
        a, b = (set(res.group(g).members) for g in (p.a, p.b))
        for k in (0, 1):
            ga, gb = np.flatnonzero(ds.groups == 2 * k), np.flatnonzero(ds.groups == 2 * k + 1)
            if min(f1(a, ga), f1(b, gb)) >= 0.9 or min(f1(a, gb), f1(b, ga)) >= 0.9:
                found.add(k)
    assert found == {0, 1}
    assert res.test["tested_on"] == "record" and res.test["skipped_gates"] == ["visible"]
    assert "visible gate is skipped" in res.test["gates"]
    text = summary_text(res)
    assert "tested on the record alone: no input test" in text and "input coherence" not in text
    back = result_from_dict(result_to_dict(res))  # signals.json keeps the mark
    assert [p.tested_on for p in back.pairs] == ["record"] * len(res.pairs)


def test_noise_groups_are_not_reported_from_the_record_alone():
    ds = opposing_signals(n=N, frequency=0.2, seed=0)
    for losses in (eos_matrix(N, T, None, seed=2), eos_matrix(N, T, None, generic=0.08, noise=0.002, seed=3)):
        res = find_signals(losses, np.arange(T), _record_only(ds))
        assert res.groups and res.rejected_pairs  # groups and anti-phase candidates are found...
        assert res.pairs == ()  # ...but no pair is reported
        assert "no significant opposing pair" in summary_text(res)


def test_the_oscillation_split_by_class_is_not_a_pair_from_the_record_alone():
    """One sign per class: the groups are nearly whole classes, split by their sign along the oscillation."""
    ds = opposing_signals(n=N, magnitude=0.0, seed=0)
    res = find_signals(eos_matrix(N, T, None, seed=4, labels=ds.y.numpy()), np.arange(T), _record_only(ds))
    assert res.pairs == () and res.rejected_pairs
    best = res.rejected_pairs[0]
    assert best.corr < -0.9 and best.failed == ("beyond",)  # replicated, but no anti-phase beyond the oscillation
    assert "not anti-phase once the leading oscillation is taken out" in summary_text(res)
