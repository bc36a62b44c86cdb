"""The search on a recorded run (store written by the Recorder)."""

import numpy as np
import pytest

from oppsig import store

from oppsig.signals import SignalsError, find_signals_in_run

from .conftest import record_matrix



@pytest.fixture(scope="module")
def recorded(planted, tmp_path_factory):
    ds, losses, res = planted
    return record_matrix(tmp_path_factory.mktemp("runs") / "planted", ds, losses, sharpness_every=10)


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
    from oppsig.signals.run import _with_sharpness_bounds

    spikes = (Spike(row=5, step=50, onset_row=3, onset_step=30, loss=1.0, trend=0.5, height=1.0, z=5.0,
                    sharpness=19.5, sharpness_step=50),
              Spike(row=9, step=90, onset_row=8, onset_step=80, loss=1.0, trend=0.5, height=1.0, z=5.0))
    res = SignalsResult(n_rows=10, n_examples=2, steps=np.arange(0, 100, 10), total_loss=np.ones(10), spikes=spikes)
    metrics = {"step": np.array([40, 50]), "sharpness": np.array([19.0, 19.5]),
               "err/sharpness": np.array([0.01, 0.02]), "converged/sharpness": np.array([1.0, 0.0])}
    a, b = _with_sharpness_bounds(res, metrics).spikes
    assert a.sharpness_error == 0.02 and a.sharpness_converged is False
    assert b.sharpness is None and b.sharpness_error is None and b.sharpness_converged is None


def test_batch_record_read_per_epoch_gives_the_same_result(planted, tmp_path):
    """A mini-batch record of the planted losses (row e = epoch e, each example logged at its own step of
    the epoch, in shuffled batches of 100) is read back per epoch: the same groups and pairs."""
    ds, losses, res = planted
    ids = ds.index.numpy()
    n, bs = len(ids), 100
    per = n // bs
    rng = np.random.default_rng(3)
    with store.Recorder(tmp_path / "sgd", index=ids, sparse=True) as rec:
        for e, row in enumerate(losses):
            perm = rng.permutation(n)
            for b in range(per):
                cols = perm[b * bs : (b + 1) * bs]
                rec.log(e * per + b, ids[cols], row[cols])
    run = store.open_run(tmp_path / "sgd")
    assert run.rows == 0 and run.batches.entries == losses.size
    got = find_signals_in_run(run, dataset=ds, steps_per_epoch=per)  # auto: no dense rows, so the batch record
    assert got.dataset["record"]["source"] == "batch" and got.n_rows == len(losses)
    assert got.steps.tolist() == (np.arange(len(losses)) * per).tolist()
    assert [g.members for g in got.groups] == [g.members for g in res.groups]
    assert [(p.a, p.b) for p in got.pairs] == [(p.a, p.b) for p in res.pairs] and len(got.pairs) >= 1
    # the epoch length is read off the record when there is no oppsig config to give it
    assert find_signals_in_run(run, dataset=ds).n_rows == len(losses)
    # the report draws the run per epoch, as detection read it
    from oppsig.report.html import write_report
    from oppsig.signals import write_signals_json

    write_signals_json(got, tmp_path / "sgd" / "signals.json")
    assert write_report([tmp_path / "sgd"]).stat().st_size > 10_000
    with pytest.raises(SignalsError, match="no mini-batch record"):
        find_signals_in_run(recorded_dense_only(tmp_path, ds), dataset=ds, source="batch")
    with pytest.raises(SignalsError, match="source must be"):
        find_signals_in_run(run, dataset=ds, source="sparse")


def recorded_dense_only(tmp_path, ds):
    with store.Recorder(tmp_path / "dense", index=ds.index.numpy()) as rec:
        for s in range(8):
            rec.log(s, ds.index.numpy(), np.ones(len(ds), np.float32))
    return store.open_run(tmp_path / "dense")
