"""End-to-end search on synthetic loss matrices with known structure."""

import numpy as np

from oppsig.data import opposing_signals
from oppsig.signals import SignalsConfig, find_signals, summary_text

from ._synth import eos_matrix, f1
from .conftest import N, T


def _best_group(res, truth):
    scores = [(f1(g.members, truth), g.id) for g in res.groups]
    return max(scores) if scores else (0.0, None)


def test_planted_groups_recovered(planted):
    ds, _, res = planted
    for k in range(4):
        score, _ = _best_group(res, np.flatnonzero(ds.groups == k))
        assert score >= 0.9, f"planted group {k}: best F1 {score:.2f}"


def test_planted_pairs_reported_and_significant(planted):
    ds, _, res = planted
    found = set()
    for p in res.pairs:
        assert p.significant and p.corr <= -0.9 and p.coherence.p_value <= p.coherence.threshold
        truth = {k for k in range(4)
                 for gid in (p.a, p.b) if f1(res.group(gid).members, np.flatnonzero(ds.groups == k)) >= 0.9}
        found.add(frozenset(truth))
    assert frozenset({0, 1}) in found and frozenset({2, 3}) in found, found
    # each group appears in one reported pair at most: here every planted group is its partner's best
    ids = [i for p in res.pairs for i in (p.a, p.b)]
    assert len(ids) == len(set(ids))


def test_planted_groups_explained(planted):
    ds, _, res = planted
    _, gid = _best_group(res, np.flatnonzero(ds.groups == 0))
    g = res.group(gid)
    assert list(g.class_counts) == ["class0"]
    assert "bright top border" in g.shared
    assert g.direction.shape == (3, 32, 32) and g.direction_ratio > 1.0
    _, gid = _best_group(res, np.flatnonzero(ds.groups == 2))
    assert "dark background" in res.group(gid).shared or "dark bottom border" in res.group(gid).shared
    text = summary_text(res)
    assert "pair" in text and "bright top border" in text


def test_control_without_planted_groups_has_no_pair():
    ds = opposing_signals(n=N, frequency=0.2, seed=0)
    res = find_signals(eos_matrix(N, T, None, seed=2), np.arange(T), ds)
    assert res.pairs == ()
    assert "no significant opposing pair" in summary_text(res)


def test_generic_eos_null_is_not_a_pair():
    """Every example oscillates with a random sign (strongly): the halves anti-correlate but are no pair."""
    ds = opposing_signals(n=N, magnitude=0.0, seed=0)
    res = find_signals(eos_matrix(N, T, None, generic=0.08, noise=0.002, seed=3), np.arange(T), ds)
    assert res.null_corr < -0.8  # the null really is strongly anti-correlated
    assert res.rejected_pairs and res.rejected_pairs[0].corr < -0.8  # the split exists...
    assert res.pairs == ()  # ...but is not reported


def test_lazy_array_gives_same_result(planted, tmp_path):
    import zarr

    ds, losses, res = planted
    assert res.groups and res.pairs  # the planted structure is there to be found
    z = zarr.open(str(tmp_path / "l.zarr"), mode="w", shape=losses.shape, chunks=(16, N), dtype="f4")
    z[:] = losses
    cfg = SignalsConfig(block_rows=16, max_memory_mb=0.01)  # force streaming in row blocks
    lazy = find_signals(z, np.arange(T), ds, config=cfg)
    assert [g.members for g in lazy.groups] == [g.members for g in res.groups]
    assert [(p.a, p.b) for p in lazy.pairs] == [(p.a, p.b) for p in res.pairs]


def test_detects_coherent_group_of_modest_swingers():
    """30 examples swinging together, each well below the per-step extremes, still form a group."""
    ds = opposing_signals(n=N, magnitude=0.0, seed=0)
    rng = np.random.default_rng(5)
    losses = eos_matrix(N, T, None, seed=4)
    d = np.diff(losses, axis=0)
    loud = rng.choice(N, 40, replace=False)
    quiet = rng.choice(np.setdiff1d(np.arange(N), loud), 30, replace=False)
    d[:, loud] += 0.3 * rng.standard_normal((T - 1, 40))  # wild but incoherent swingers own the extremes
    profile = np.sin(np.arange(T - 1) / 3.0) * (np.arange(T - 1) > 100)
    d[:, quiet] += 0.06 * profile[:, None]
    losses = np.concatenate([losses[:1], losses[:1] + np.cumsum(d, axis=0)]) + 5.0
    res = find_signals(losses, np.arange(T), ds)
    best = max((f1(g.members, quiet) for g in res.groups), default=0.0)
    assert best >= 0.8


def test_spikes_attached_with_top_k(planted_spikes):
    ds, losses, res = planted_spikes
    assert [s.row for s in res.spikes] == [90, 150]
    for s in res.spikes:
        assert len(s.top_up) == 20 and len(s.top_down) == 20
        d = losses[s.row] - losses[s.row - 1]
        assert list(s.top_up) == list(np.argsort(-d, kind="stable")[:20])  # largest increase first
        assert list(s.top_down) == list(np.argsort(d, kind="stable")[:20])
        # the change into the peak: the planted examples jump up most
        assert set(s.top_up) <= set(np.flatnonzero(ds.groups >= 0))
        assert s.sharpness == 19.5
    assert len(res.pairs) == 2
    for p in res.pairs:
        assert set(p.spikes) == {90, 150}
        # 40 of 1000 examples carry several percent of the rise of the spike they drive (4 % by size)
        assert max(p.spike_rise_share) > 0.06


def test_steps_and_k_are_used():
    ds = opposing_signals(n=N, frequency=0.2, seed=0)
    g = ds.groups
    losses = eos_matrix(N, T, {0: (np.flatnonzero(g == 0), np.flatnonzero(g == 1))}, seed=1, spikes=(120,))
    res = find_signals(losses, np.arange(T) * 2 + 10, ds, config=SignalsConfig(k=7))
    assert [s.step for s in res.spikes] == [250]
    assert all(len(s.top_up) == 7 for s in res.spikes)
    assert all(res.steps[r] == 2 * r + 10 for p in res.pairs for r in p.spikes)
