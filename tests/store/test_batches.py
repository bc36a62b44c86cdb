"""The sparse mini-batch record: round trips, epoch matrices, resume, and the training loop's record."""

import numpy as np
import pytest
import torch

from oppsig.errors import ConfigError, StoreError
from oppsig.store import BatchWriter, Recorder, StoreWriter, open_run
from oppsig.training import batch_rows, train


def _epochs(n, bs, epochs, seed=0):
    """(step, rows) of an epoch-permuted mini-batch order."""
    per = -(-n // bs)
    return [(s, batch_rows(s, n, bs, seed, "cpu").numpy()) for s in range(epochs * per)], per


def test_writer_round_trip_growth_and_epoch_matrix(tmp_path):
    n, bs = 50, 8
    ids = np.arange(100, 150)
    StoreWriter(tmp_path, ids).close()
    w = BatchWriter(tmp_path, ids, chunk=16)  # many chunks and a growth of the arrays
    order, per = _epochs(n, bs, 3)
    rng = np.random.default_rng(0)
    truth = np.full((3, n), np.nan, np.float32)
    for s, rows in order:
        loss = rng.random(len(rows)).astype(np.float32)
        truth[s // per, rows] = loss
        w.append(s, rows, loss, loss > 0.5)
    w.close()
    run = open_run(tmp_path)
    rec = run.batches
    assert rec.entries == 3 * n and rec.n_examples == n and rec.index.tolist() == ids.tolist()
    step, col, loss, corr = rec.arrays()
    assert np.array_equal(corr, loss > 0.5) and (np.diff(step) >= 0).all()
    L, S = rec.epoch_matrix(per)
    assert L.shape == (3, n) and np.array_equal(L, truth)
    assert ((S // per) == np.arange(3)[:, None]).all()
    st, ls = rec.example_series(107)
    assert len(st) == 3 and np.array_equal(ls, truth[:, 7])
    with pytest.raises(StoreError, match="twice"):  # not the run's epoch length
        rec.epoch_matrix(2 * per)
    with pytest.raises(StoreError, match="not in"):
        rec.example_series(7)


def test_partial_epoch_dropped_and_resume_truncates(tmp_path):
    n, bs = 20, 6
    StoreWriter(tmp_path, np.arange(n)).close()
    order, per = _epochs(n, bs, 3)
    w = BatchWriter(tmp_path, np.arange(n), chunk=8)
    for s, rows in order[: 2 * per + 2]:
        w.append(s, rows, np.full(len(rows), float(s)))
    w.flush()
    # a crash: entries buffered after the last flush are lost, and resume cuts back to a checkpoint step
    w.append(99, [0], [1.0])
    w2 = BatchWriter(tmp_path, np.arange(n), chunk=8, resume=True)
    assert w2.entries == 2 * n + 2 * bs  # two epochs and two batches: the unflushed entry is gone
    w2.truncate_before(per + 1)
    rec = open_run(tmp_path).batches
    assert rec.steps.max() == per
    assert rec.epoch_matrix(per)[0].shape == (1, n)  # epoch 1 is incomplete
    with pytest.raises(StoreError, match="must not decrease"):
        w2.append(0, [0], [1.0])
    with pytest.raises(StoreError, match="other examples"):
        BatchWriter(tmp_path, np.arange(1, n + 1), resume=True)


def test_recorder_sparse_from_a_plain_loop(tmp_path):
    n, bs = 30, 7
    order, per = _epochs(n, bs, 2)
    with Recorder(tmp_path / "r", num_examples=n, sparse=True) as rec:
        for s, rows in order:
            rec.log(s, torch.as_tensor(rows), torch.as_tensor(rows * 0.1 + s))
    run = open_run(tmp_path / "r")
    assert run.losses.shape == (0, n)  # no dense row: nothing densified
    L, S = run.batches.epoch_matrix(per)
    assert L.shape == (2, n)
    assert np.allclose(L, np.arange(n) * 0.1 + S)
    with pytest.raises(StoreError, match="0..29"):
        Recorder(tmp_path / "bad", num_examples=n, sparse=True).log(0, [30], [1.0])


def test_sgd_batch_record_equals_training_forward(tiny_cfg):
    cfg = tiny_cfg("optim.name=sgd", "train.batch_size=32", "record.mode=both", "record.every=4", "record.probe_n=128",
                   steps=10)
    res = train(cfg, progress=False)
    run = open_run(res.run_dir)
    rec = run.batches
    assert rec.entries == 10 * 32 and run.steps.tolist() == [0, 4, 8]
    step, col, loss, _ = rec.arrays()
    m = run.metrics
    for s in range(10):
        hit = step == s
        assert sorted(col[hit].tolist()) == sorted(batch_rows(s, 128, 32, cfg.seed, "cpu").tolist())
        # each step's entries are the training forward of its batch: their mean is the logged loss
        assert np.isclose(loss[hit].mean(), m["loss"][s], rtol=1e-5)
    # the probe at step 0 (before any update) saw the same parameters as the batch of step 0
    dense0 = np.asarray(run.losses[0])
    assert np.allclose(dense0[col[step == 0]], loss[step == 0], rtol=1e-5)
    assert rec.epoch_matrix(4)[0].shape == (2, 128)


def test_batch_record_resume_equals_uninterrupted(tiny_cfg, recwarn):
    over = ("optim.name=sgd", "train.batch_size=32", "record.mode=batch")
    full = train(tiny_cfg(*over, "name=full", steps=13), progress=False)
    part = train(tiny_cfg(*over, "name=part", steps=10), progress=False)
    train(tiny_cfg(*over, "name=part", steps=13), run_dir=part.run_dir, resume=True, progress=False)
    a, b = open_run(full.run_dir).batches.arrays(), open_run(part.run_dir).batches.arrays()
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert open_run(full.run_dir).losses.shape[0] == 0
    # no dense rows is what a batch-only run should have: no bookkeeping warning
    assert not [w for w in recwarn if "bookkeeping" in str(w.message)]


def test_batch_mode_refused_under_full_batch(tiny_cfg):
    with pytest.raises(StoreError, match="record.mode=dense"):
        train(tiny_cfg("record.mode=batch", steps=2), progress=False)
    with pytest.raises(ConfigError, match="record.mode"):
        tiny_cfg("record.mode=sparse")


def test_batch_summary_matches_a_dense_reference(tmp_path):
    from oppsig.store.export import batch_summary_table, write_summary

    n, bs = 23, 5
    StoreWriter(tmp_path, np.arange(n)).close()
    w = BatchWriter(tmp_path, np.arange(n), chunk=7)
    order, per = _epochs(n, bs, 6)
    rng = np.random.default_rng(1)
    obs = {j: [] for j in range(n)}
    for s, rows in order:
        loss = rng.random(len(rows)).astype(np.float32)
        corr = rng.random(len(rows)) > 0.4
        w.append(s, rows, loss, corr)
        for j, lo, c in zip(rows, loss, corr):
            obs[int(j)].append((float(lo), bool(c)))
    w.close()
    rec = open_run(tmp_path).batches
    for block in (4, 1 << 20):  # an example's observations split across blocks, or all in one
        t = batch_summary_table(rec, block=block)
        for j in range(n):
            lo = np.array([o[0] for o in obs[j]])
            c = np.array([o[1] for o in obs[j]])
            assert np.isclose(t["mean_loss"][j], lo.mean()) and np.isclose(t["loss_std"][j], lo.std())
            assert np.isclose(t["mean_abs_change"][j], np.abs(np.diff(lo)).mean())
            assert np.isclose(t["final_loss"][j], lo[-1]) and np.isclose(t["accuracy"][j], c.mean())
            assert t["forgetting"][j] == int((c[:-1] & ~c[1:]).sum())
    out = write_summary(open_run(tmp_path))  # auto: no dense row, so the batch record
    assert out.read_text().count("\n") == n + 1
    with pytest.raises(StoreError, match="no recorded step"):
        write_summary(open_run(tmp_path), tmp_path / "d.csv", source="dense")
