"""The search on a recorded run (store written by the Recorder)."""

import numpy as np
import pytest

from oppsig.signals import SignalsError, find_signals_in_run

store = pytest.importorskip("oppsig.store")


@pytest.fixture(scope="module")
def recorded(planted, tmp_path_factory):
    ds, losses, res = planted
    path = tmp_path_factory.mktemp("runs") / "planted"
    with store.Recorder(path, index=ds.index.numpy(), chunk_steps=16) as rec:
        for step, row in enumerate(losses):
            rec.log(step, ds.index.numpy(), row)
            if step % 10 == 0:
                rec.log_metrics(step, loss=float(row.mean()), sharpness=19.5)
    return store.open_run(path)


def test_run_gives_same_result(planted, recorded):
    ds, _, res = planted
    got = find_signals_in_run(recorded, dataset=ds)
    assert [g.members for g in got.groups] == [g.members for g in res.groups]
    assert [(p.a, p.b) for p in got.pairs] == [(p.a, p.b) for p in res.pairs]


def test_run_with_a_reordered_dataset(planted, recorded):
    ds, _, res = planted
    perm = np.random.default_rng(0).permutation(len(ds))
    got = find_signals_in_run(recorded, dataset=ds.take(perm))
    # columns are matched by stable id: the same examples are found
    assert sorted(sorted(g.ids) for g in got.groups) == sorted(sorted(g.ids) for g in res.groups)


def test_run_with_the_wrong_dataset(planted, recorded):
    ds, _, _ = planted
    with pytest.raises(SignalsError, match="lacks 500 of the run's examples"):
        find_signals_in_run(recorded, dataset=ds.take(np.arange(500)))
    with pytest.raises(SignalsError, match="no oppsig config"):
        find_signals_in_run(recorded)


def test_spike_sharpness_carries_the_recorded_bound_and_flag():
    from oppsig.signals import SignalsResult, Spike
    from oppsig.signals.api import _with_sharpness_bounds

    spikes = (Spike(row=5, step=50, onset_row=3, onset_step=30, loss=1.0, trend=0.5, height=1.0, z=5.0,
                    sharpness=19.5, sharpness_step=50),
              Spike(row=9, step=90, onset_row=8, onset_step=80, loss=1.0, trend=0.5, height=1.0, z=5.0))
    res = SignalsResult(n_rows=10, n_examples=2, steps=np.arange(0, 100, 10), total_loss=np.ones(10), spikes=spikes)
    metrics = {"step": np.array([40, 50]), "sharpness": np.array([19.0, 19.5]),
               "err/sharpness": np.array([0.01, 0.02]), "converged/sharpness": np.array([1.0, 0.0])}
    a, b = _with_sharpness_bounds(res, metrics).spikes
    assert a.sharpness_error == 0.02 and a.sharpness_converged is False
    assert b.sharpness is None and b.sharpness_error is None and b.sharpness_converged is None
