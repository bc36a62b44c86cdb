"""Groups found on a mini-batch run's probe subset, extended to every example by the batch record."""

import dataclasses

import numpy as np
import pytest

from oppsig.signals.extend import MIN_PROBED_MEMBERS, BatchView, best_threshold, extend_group
from oppsig.signals.join import merge_extended
from oppsig.signals.result import Extension, Group, Pair
from oppsig.signals.signals_json import result_from_dict, result_to_dict
from oppsig.signals.synthetic import overlap_f1


def _batch_run(seed=0, n=600, steps=400, batch=30, every=8, probe_n=200, feature=3.0, follow=1.0):
    """A synthetic mini-batch record: group G (60 of class 0) swings against group H (60 of class 1)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n // 3)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    G = rng.choice(np.flatnonzero(labels == 0), 60, replace=False)
    H = rng.choice(np.flatnonzero(labels == 1), 60, replace=False)
    x[G, 0] += feature
    x[H, 1] += feature
    amp = np.zeros(n)
    amp[G], amp[H] = follow, -follow
    t = np.arange(steps)
    swing = 0.6 * np.sin(t / 11.0) + 0.4 * np.sin(t / 4.3)

    def loss(step, cols):
        noise = 0.15 * rng.standard_normal(len(cols))
        return np.exp(-step / 300.0) * np.exp(amp[cols] * swing[step] + noise) + 0.05

    per = n // batch
    L = np.full((steps // per, n), np.nan, np.float32)
    S = np.full((steps // per, n), -1, np.int64)
    for e in range(steps // per):
        order = rng.permutation(n)
        for k in range(per):
            cols = order[k * batch:(k + 1) * batch]
            L[e, cols], S[e, cols] = loss(e * per + k, cols), e * per + k
    probed = np.sort(rng.choice(n, probe_n, replace=False))
    probe_steps = np.arange(0, steps, every)
    P = np.stack([loss(s, probed) for s in probe_steps])
    return dict(labels=labels, x=x, G=G, H=H, L=L, S=S, probed=probed, probe_steps=probe_steps,
                plog=np.log(P), ids=np.arange(1000, 1000 + n))


def _view(r, labels=False, inputs=False):
    return BatchView.build(r["probed"], r["L"], r["S"], r["plog"], r["probe_steps"], r["ids"],
                           r["labels"] if labels else None, r["x"] if inputs else None)


def test_view_follow_is_the_interpolated_correlation():
    r = _batch_run()
    v = _view(r)
    mem = np.isin(r["probed"], r["G"])
    tmpl = r["plog"][:, mem].mean(1) - r["plog"].mean(1)
    for j in (0, 5, v.n_probed + 3):
        c = v.cols[j]
        s = r["S"][:, c]
        rel = np.log(r["L"][:, c].astype(float) + 1e-4) - np.interp(s, r["probe_steps"], r["plog"].mean(1))
        want = np.corrcoef(rel, np.interp(s, r["probe_steps"], tmpl))[0, 1]
        assert v.follow(mem, len(v.cols))[j] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("with_inputs", [True, False])
def test_unprobed_members_are_found_from_the_batch_record(with_inputs):
    r = _batch_run()
    for truth in (r["G"], r["H"]):
        probed_members = np.intersect1d(truth, r["probed"])
        ext = extend_group(_view(r, labels=True, inputs=with_inputs), probed_members)
        assert ext.features == (("follow", "class", "input") if with_inputs else ("follow", "class"))
        found = set(r["ids"][probed_members]) | set(ext.ids)
        assert overlap_f1(found, r["ids"][truth]) >= 0.9
        assert not set(ext.ids) & set(r["ids"][r["probed"]])  # only unprobed examples are added
        assert 0.8 <= ext.precision <= 1 and 0.8 <= ext.recall <= 1


@pytest.mark.parametrize("seed", range(5))
def test_without_a_shared_feature_or_loss_signal_nothing_is_added(seed):
    # members picked at random in the probe: nothing tells them apart outside it
    r = _batch_run(seed=seed, feature=0.0, follow=0.0)
    members = np.random.default_rng(seed).choice(r["probed"], 12, replace=False)
    ext = extend_group(_view(r, labels=False, inputs=True), members)
    assert ext.ids == ext.added == ext.dropped == () and "not predictable" in ext.note


@pytest.mark.parametrize("seed", range(3))
def test_the_membership_model_completes_a_group_co_movement_found_in_part(seed):
    # co-movement found a third of G's probed members and three strangers of another class: the model learnt
    # from them names most of the rest of G on the probe and leaves the strangers out
    r = _batch_run(seed=seed, probe_n=400)
    truth = np.intersect1d(r["G"], r["probed"])
    strangers = np.setdiff1d(r["probed"][r["labels"][r["probed"]] == 2], r["H"])[:3]
    core = np.concatenate([truth[: len(truth) // 3], strangers])
    g = Group(id=0, members=tuple(range(len(core))), ids=tuple(int(i) for i in r["ids"][core]),
              extension=extend_group(_view(r, labels=True, inputs=True), core))
    assert set(r["ids"][strangers].tolist()) <= set(g.extension.dropped)
    assert "completed on the probe" in g.extension.note
    added = set(g.extension.added)
    assert len(added & set(r["ids"][truth].tolist())) >= 0.9 * len(added)
    probed = set(r["ids"][r["probed"]].tolist())
    assert overlap_f1(r["ids"][core], r["ids"][truth]) < 0.5
    assert overlap_f1([i for i in g.all_ids if i in probed], r["ids"][truth]) >= 0.75  # the core alone: below 0.5


def test_completion_adds_only_examples_that_move_with_the_group():
    # 60 more examples of G's class carry G's input feature but not its loss swing, and the batch record is flat
    # (as when each example is seen once): class and input alone would take the look-alikes in (17 of them
    # without the co-movement test); completion asks each added example to move with the found members
    r = _batch_run(seed=0, probe_n=400)
    rng = np.random.default_rng(1)
    lookalikes = rng.choice(np.setdiff1d(np.flatnonzero(r["labels"] == 0), r["G"]), 60, replace=False)
    r["x"][lookalikes, 0] += 3.0
    r["L"] = np.where(np.isnan(r["L"]), np.nan, 1.0).astype(np.float32)
    truth = np.intersect1d(r["G"], r["probed"])
    ext = extend_group(_view(r, labels=True, inputs=True), truth[: len(truth) // 2])
    assert len(set(ext.added) & set(r["ids"][lookalikes].tolist())) <= 1


def test_a_model_that_leaves_out_most_of_its_group_does_not_extend_it():
    # found: 5 of G and 12 strangers of another class that do not move with them; the model learns G and leaves
    # the strangers out, so it does not describe the group it was given
    r = _batch_run(seed=0, probe_n=400)
    truth = np.intersect1d(r["G"], r["probed"])
    strangers = np.setdiff1d(r["probed"][r["labels"][r["probed"]] == 2], r["H"])[:12]
    ext = extend_group(_view(r, labels=True, inputs=True), np.concatenate([truth[:5], strangers]))
    assert ext.ids == ext.added == ext.dropped == () and "keeps only 5 of the 17" in ext.note


def test_too_few_probed_members_are_not_extended():
    r = _batch_run()
    few = np.intersect1d(r["G"], r["probed"])[: MIN_PROBED_MEMBERS - 1]
    ext = extend_group(_view(r), few)
    assert ext.ids == () and "not extended" in ext.note and ext.probed_members == MIN_PROBED_MEMBERS - 1


def test_best_threshold_is_the_f1_optimum():
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    y = np.array([True, False, True, False, False])
    thr, f1, prec, rec = best_threshold(p, y)
    assert (prec, rec) == (2 / 3, 1.0) and f1 == pytest.approx(0.8)
    # the first three rows, and the threshold midway (in log-odds) between the last taken (0.7) and the next (0.2)
    assert (p >= thr).tolist() == [True, True, True, False, False]
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    assert logit(thr) == pytest.approx((logit(0.7) + logit(0.2)) / 2)



def _group(gid, ids, ext_ids):
    return Group(id=gid, members=tuple(range(len(ids))), ids=tuple(ids),
                 extension=Extension(tuple(ext_ids), 0.9, 0.8, 0.5, ("follow",), len(ids)))


def _pair(a, b, corr=-0.5):
    return Pair(a=a, b=b, corr=corr, strength=-corr, swing=1.0, spike_share=1.0, significant=True)


def test_groups_the_probe_split_are_joined_and_their_pairs_follow():
    g0 = _group(0, [1, 2, 3], [10, 11, 12, 13])
    g1 = _group(1, [4, 5], [1, 2, 3, 10, 11, 12])  # the same group, extended: Jaccard 6/9 with g0
    g2 = _group(2, [20, 21, 22], [23])
    groups, pairs, rejected = merge_extended([g0, g1, g2], [_pair(0, 2), _pair(1, 2, -0.4), _pair(0, 1)], [])
    assert [g.id for g in groups] == [0, 1]
    assert set(groups[0].all_ids) == {1, 2, 3, 4, 5, 10, 11, 12, 13} and "joined" in groups[0].extension.note
    assert [(p.a, p.b, p.corr) for p in pairs] == [(0, 1, -0.5)]  # the duplicate and the self-pair dropped
    same, kept, _ = merge_extended([g0, g2], [_pair(0, 1)], [])
    assert same == (g0, g2) and kept[0].b == 1


def test_a_joined_group_drops_only_what_no_part_names():
    a = dataclasses.replace(_group(0, [1, 2, 3], [10]), extension=Extension((10,), 0.9, 0.8, 0.5, ("follow",), 3,
                                                                           added=(4, 6), dropped=(3,)))
    b = dataclasses.replace(_group(1, [3, 5], [11]), extension=Extension((11,), 0.9, 0.8, 0.5, ("follow",), 2,
                                                                        added=(1, 2, 6), dropped=(5,)))
    assert a.all_ids == (1, 2, 4, 6, 10)
    (g,), _, _ = merge_extended([a, b], [], [], [set(a.all_ids), set(b.all_ids)])
    # 3 was dropped by a but is b's own member; 5 is dropped by b and not named by a
    assert g.extension.dropped == (5,) and set(g.extension.added) == {4, 6} and set(g.extension.ids) == {10, 11}
    assert set(g.all_ids) == {1, 2, 3, 4, 6, 10, 11}


def test_the_summary_says_what_the_completion_added_and_dropped():
    from oppsig.signals.text import extension_text

    g = dataclasses.replace(_group(0, [1, 2, 3], [10]), extension=Extension((10,), 0.9, 0.8, 0.5, ("follow",), 3,
                                                                           added=(4, 5), dropped=(3,)))
    assert g.all_ids == (1, 2, 4, 5, 10)
    assert "3 probed members (its membership model adds 2 probed and leaves out 1) + 1 found outside" in \
        extension_text(g)


def test_an_extension_survives_signals_json(tmp_path):
    from oppsig.signals.result import SignalsResult

    res = SignalsResult(n_rows=2, n_examples=3, steps=np.arange(2), total_loss=np.ones(2),
                        groups=(_group(0, [1, 2, 3], [7, 8]),))
    back = result_from_dict(result_to_dict(res))
    assert back.groups[0].extension == res.groups[0].extension and back.groups[0].all_ids == (1, 2, 3, 7, 8)
    nan = dataclasses.replace(res.groups[0], extension=Extension((), float("nan"), float("nan"), float("nan"),
                                                                 (), 2, "not extended"))
    back = result_from_dict(result_to_dict(dataclasses.replace(res, groups=(nan,))))
    assert np.isnan(back.groups[0].extension.precision) and back.groups[0].extension.note == "not extended"


def test_summary_names_the_extension_and_its_estimate():
    from oppsig.signals.result import SignalsResult
    from oppsig.signals.text import extension_text, summary_text

    g = _group(0, [1, 2, 3], [7, 8])
    assert extension_text(g) == ("3 probed members + 2 found outside the probe (cross-validated on the probe: "
                                 "precision 0.90, recall 0.80; by follow)")
    none = dataclasses.replace(g, extension=Extension((), float("nan"), float("nan"), float("nan"), (), 3,
                                                      "not extended: fewer than 5 probed members"))
    assert extension_text(none) == "3 probed members; not extended: fewer than 5 probed members"
    res = SignalsResult(n_rows=9, n_examples=3, steps=np.arange(9), total_loss=np.ones(9), groups=(g,),
                        dataset={"record": {"source": "probe+batch", "examples": 40, "what": "... and inputs"}})
    assert summary_text(res).splitlines()[0] == ("opposing signals: 9 probe rows x 3 probed examples of 40; groups "
                                                 "extended to the rest by their mini-batch losses and inputs")


def test_a_pair_without_a_spike_says_so_instead_of_nan():
    from oppsig.signals.result import AntiPhase, Coherence, SignalsResult
    from oppsig.signals.text import summary_text

    g0, g1 = _group(0, [1, 2, 3], []), _group(1, [4, 5, 6], [])
    p = dataclasses.replace(_pair(0, 1), spike_share=float("nan"), coherence=Coherence(statistic=2.0, p_value=0.001),
                            anti_phase=AntiPhase(p=0.001))
    text = summary_text(SignalsResult(n_rows=9, n_examples=6, steps=np.arange(9), total_loss=np.ones(9),
                                      groups=(g0, g1), pairs=(p,)))
    assert "no spike to share" in text and "spike share nan" not in text


def test_halves_that_oppose_the_same_group_are_joined():
    from oppsig.signals.join import join_split_partners

    rng = np.random.default_rng(0)
    swing = rng.standard_normal(40)
    changes = 0.3 * rng.standard_normal((40, 30))
    changes[:, :20] += swing[:, None]  # columns 0-19: two halves of one group (ids 100-119)
    changes[:, 20:] -= swing[:, None]  # columns 20-29: the group they oppose (ids 120-129)
    col = {100 + j: j for j in range(30)}

    def grp(i, ids, cls):
        return dataclasses.replace(_group(i, ids, []), class_counts={cls: len(ids)})

    a, b = grp(0, range(100, 110), "cat"), grp(1, range(110, 120), "cat")
    c = grp(2, range(120, 130), "dog")
    groups, pairs, _ = join_split_partners([a, b, c], [_pair(2, 0), _pair(2, 1, -0.4)], [], changes, col)
    assert len(groups) == 2 and set(groups[0].ids) == set(range(100, 120)) and groups[0].class_counts == {"cat": 20}
    assert [(p.a, p.b) for p in pairs] == [(1, 0)] and "oppose the same group" in groups[0].extension.note
    # not joined: another class, halves that move apart, or halves that are each other's partner
    other = grp(1, range(110, 120), "bird")
    assert len(join_split_partners([a, other, c], [_pair(2, 0), _pair(2, 1)], [], changes, col)[0]) == 3
    flipped = changes.copy()
    flipped[:, 10:20] = -flipped[:, 10:20]
    assert len(join_split_partners([a, b, c], [_pair(2, 0), _pair(2, 1)], [], flipped, col)[0]) == 3
    assert len(join_split_partners([a, b, c], [_pair(2, 0), _pair(2, 1), _pair(0, 1)], [], changes, col)[0]) == 3
