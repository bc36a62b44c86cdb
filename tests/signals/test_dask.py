"""Detection on a Dask cluster reads the same store and finds the same spikes, groups and pairs as here."""

import numpy as np
import pytest

from oppsig import store

from oppsig.signals import SignalsConfig, find_signals_in_run
from oppsig.signals.detect import scan_losses
from oppsig.signals.matrix import LossMatrix

from .conftest import record_matrix

dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def recorded_spikes(planted_spikes, tmp_path_factory):
    ds, losses, _ = planted_spikes
    return ds, record_matrix(tmp_path_factory.mktemp("runs") / "planted", ds, losses)


def _same(a, b):
    assert [(s.row, s.onset_row, s.top_up, s.top_down) for s in a.spikes] == \
           [(s.row, s.onset_row, s.top_up, s.top_down) for s in b.spikes]
    assert [g.members for g in a.groups] == [g.members for g in b.groups]
    assert [(p.a, p.b, p.significant) for p in a.pairs] == [(p.a, p.b, p.significant) for p in b.pairs]
    assert np.allclose([p.corr for p in a.pairs], [p.corr for p in b.pairs], rtol=1e-9, atol=1e-12)
    assert [r.row for r in a.recurring] == [r.row for r in b.recurring]


def test_threaded_dask_equals_the_in_memory_search(recorded_spikes):
    ds, run = recorded_spikes
    cfg = SignalsConfig(block_rows=32)
    here = find_signals_in_run(run, ds, cfg)
    assert len(here.spikes) == 2 and len(here.pairs) >= 1  # the planted structure is there to be found
    _same(here, find_signals_in_run(run, ds, cfg, scheduler="threads"))
    # the statistics of the scan themselves, block by block in a Dask task vs here
    a = scan_losses(LossMatrix(run.losses, 32), 20)
    b = scan_losses(LossMatrix(run.losses, 32, scheduler="synchronous"), 20)
    for f in ("total", "mean", "std", "energy", "alternation", "abs_row", "top_share"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert np.array_equal(a.top_up, b.top_up) and np.array_equal(a.top_down, b.top_down)


def test_local_dask_cluster_gives_the_same_result(recorded_spikes):
    distributed = pytest.importorskip("distributed")
    ds, run = recorded_spikes
    cfg = SignalsConfig(block_rows=32)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        remote = find_signals_in_run(run, ds, cfg, scheduler=client)
    _same(find_signals_in_run(run, ds, cfg), remote)


def test_batch_record_on_dask(planted, tmp_path):
    ds, losses, _ = planted
    ids = ds.index.numpy()
    with store.Recorder(tmp_path / "sgd", index=ids, sparse=True) as rec:
        for e, row in enumerate(losses[:40]):
            rec.log(2 * e, ids[::2], row[::2])
            rec.log(2 * e + 1, ids[1::2], row[1::2])
    run = store.open_run(tmp_path / "sgd")
    here = find_signals_in_run(run, ds, steps_per_epoch=2)
    assert here.groups and here.recurring  # the planted groups are seen in the epoch view
    _same(here, find_signals_in_run(run, ds, steps_per_epoch=2, scheduler="synchronous"))
