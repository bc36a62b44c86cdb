import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import oppsig
from oppsig.data import opposing_signals
from oppsig.errors import RunExistsError, StoreError
from oppsig.store import StoreWriter, open_run, probe_losses
from oppsig.models import build_model
from oppsig.losses import get_loss


def test_writer_round_trip_and_partial_chunks(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.arange(10, 60)  # stable ids need not start at 0
    w = StoreWriter(tmp_path, ids, capacity=4, chunk_steps=4, chunk_examples=16)
    rows = rng.random((11, 50)).astype(np.float32)
    for i, r in enumerate(rows):
        w.append(2 * i, r, r > 0.5)
        if i == 5:
            w.flush()  # a flush in the middle of a chunk
    w.close()
    run = open_run(tmp_path)
    assert run.steps.tolist() == list(range(0, 22, 2))
    assert np.array_equal(np.asarray(run.losses), rows)
    assert np.array_equal(np.asarray(run.correct), rows > 0.5)
    assert run.index.tolist() == ids.tolist()
    # lazy indexing: one step, one example, fancy rows, negatives
    assert np.array_equal(run.losses[3], rows[3])
    assert np.array_equal(run.losses[:, 7], rows[:, 7])
    assert np.array_equal(run.losses[[1, 4], 2:5], rows[[1, 4], 2:5])
    assert np.array_equal(run.losses[-1], rows[-1])
    assert np.array_equal(run.example_losses(17), rows[:, 7])
    assert run.rows_of([4, 8]).tolist() == [2, 4]
    with pytest.raises(IndexError):
        run.losses[11]
    with pytest.raises(StoreError, match="not recorded"):
        run.rows_of([3])


def test_steps_must_increase(tmp_path):
    w = StoreWriter(tmp_path, np.arange(3))
    w.append(5, np.zeros(3))
    with pytest.raises(StoreError, match="must increase"):
        w.append(5, np.zeros(3))


def test_float16_and_logits(tmp_path):
    w = StoreWriter(tmp_path, np.arange(4), dtype="float16", chunk_steps=2)
    for s in range(3):
        w.append(s, np.full(4, s + 0.5))
        w.write_logits(s, np.full((4, 3), float(s)))
    w.close()
    run = open_run(tmp_path)
    assert run.losses.dtype == np.float16
    assert np.asarray(run.losses)[2, 0] == np.float16(2.5)
    assert run.logits.shape == (3, 4, 3) and run.logit_steps.tolist() == [0, 1, 2]


def test_truncate_for_resume(tmp_path):
    w = StoreWriter(tmp_path, np.arange(3), chunk_steps=4)
    for s in range(9):
        w.append(s, np.full(3, float(s)))
    w.flush()
    w2 = StoreWriter(tmp_path, np.arange(3), chunk_steps=4, resume=True)
    assert w2.truncate_before(5) == 5
    for s in range(5, 7):
        w2.append(s, np.full(3, 100.0 + s))
    w2.close()
    run = open_run(tmp_path)
    assert run.steps.tolist() == list(range(7))
    assert np.asarray(run.losses)[:, 0].tolist() == [0, 1, 2, 3, 4, 105, 106]


def test_reader_rejects_newer_format_and_non_runs(tmp_path):
    with pytest.raises(StoreError, match="not an oppsig run"):
        open_run(tmp_path)
    w = StoreWriter(tmp_path, np.arange(2))
    w.close()
    (tmp_path / "progress.json").write_text(json.dumps({"format_version": 99, "rows": 0}))
    with pytest.raises(StoreError, match="upgrade oppsig"):
        open_run(tmp_path)


def test_recorder_in_a_plain_pytorch_loop(tmp_path):
    torch.manual_seed(0)
    data = opposing_signals(n=64, seed=0)
    model = build_model("mlp", (3, 32, 32), 10, widths=(8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    expected = {}
    with oppsig.Recorder(tmp_path / "mine", num_examples=len(data), config={"lr": 0.05}) as rec:
        for step in range(6):
            for idx, x, y in data.batches(16):  # four mini-batches make one step's row
                out = model(x)
                losses = F.cross_entropy(out, y, reduction="none")
                rec.log(step, idx, losses)
                expected.setdefault(step, []).append(losses.detach().numpy())
            losses.mean().backward()
            opt.step()
            opt.zero_grad()
            rec.log_metrics(step, loss=float(losses.detach().mean()))
    run = oppsig.open_run(tmp_path / "mine")
    assert run.steps.tolist() == list(range(6))
    for s in range(6):
        assert np.allclose(run.losses[s], np.concatenate(expected[s]))
    assert run.config == {"lr": 0.05} and len(run.metrics["loss"]) == 6
    with pytest.raises(RunExistsError):
        oppsig.Recorder(tmp_path / "mine", num_examples=4)


def test_probe_losses_leave_model_untouched():
    torch.manual_seed(0)
    data = opposing_signals(n=40, seed=0)
    m = build_model("cnn", (3, 32, 32), 10, channels=(4,), batchnorm=True)
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ids, losses, correct = probe_losses(m, data, get_loss("ce"), batch_size=16)
    assert m.training and all(p.grad is None for p in m.parameters())
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running stats unchanged
    assert ids.tolist() == list(range(40)) and losses.shape == (40,) and correct.dtype == bool
    # the same as a train-mode forward per physical batch
    with torch.no_grad():
        ref = torch.cat([get_loss("ce")(m(x), y) for _, x, y in data.batches(16)])
    assert np.allclose(losses, ref.numpy(), atol=1e-6)


WRITER = r"""
import sys, time
from oppsig.config import load_config
from oppsig.training import train

class Slow:
    def on_step_end(self, state):
        time.sleep(0.02)

cfg = load_config(None, sys.argv[2:])
train(cfg, run_dir=sys.argv[1], hooks=[Slow()], progress=False, overwrite=True)
"""


def _tiny_args(tmp_path, steps):
    return ["data.name=synthetic", "data.n=96", "model.widths=[8]", f"train.steps={steps}", "optim.lr=0.05",
            "record.chunk_steps=3", "train.checkpoint_every=4", f"out_dir={tmp_path}", "name=w"]


def test_reader_while_writer_runs(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rd = tmp_path / "w"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(rd), *_tiny_args(tmp_path, 60)], env=env)
    seen = set()
    try:
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if (rd / "progress.json").exists():
                run = open_run(rd)
                r = run.rows
                if r:
                    block = np.asarray(run.losses)
                    assert block.shape[0] == r
                    assert np.isfinite(block).all()  # never a half-written (NaN-filled) row
                    assert run.steps.tolist() == list(range(r))
                    seen.add(r)
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert len(seen) >= 3  # the reader saw the run grow
    assert open_run(rd).rows == 60


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 40
    ref_dir = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "oppsig", "train", "--no-progress",
                    *[f"--{a}" for a in _tiny_args(tmp_path, steps)], "--name=ref"],
                   env=env, check=True, capture_output=True)
    kill_at = random.Random(os.getpid()).randrange(6, 30)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rd = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, str(script), str(rd), *_tiny_args(tmp_path, steps)], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            m = rd / "metrics.jsonl"
            if m.exists() and len(m.read_text().splitlines()) > kill_at:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    r = subprocess.run([sys.executable, "-m", "oppsig", "train", "--no-progress", "--resume", str(rd)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = open_run(ref_dir), open_run(rd)
    assert b.steps.tolist() == list(range(steps))  # every step once, no gap, no duplicate
    assert np.array_equal(np.asarray(a.losses), np.asarray(b.losses))  # bitwise
    assert b.metrics["step"].tolist() == list(range(steps))
    assert np.array_equal(a.metrics["loss"], b.metrics["loss"])


def test_summary_table_against_numpy(tmp_path):
    from oppsig.store.export import summary_table, write_summary

    rng = np.random.default_rng(1)
    L = rng.random((9, 7)).astype(np.float32)
    C = rng.random((9, 7)) > 0.4
    w = StoreWriter(tmp_path, np.arange(7), chunk_steps=4)
    for s in range(9):
        w.append(s, L[s], C[s])
    w.close()
    run = open_run(tmp_path)
    t = summary_table(run, block=4)  # blocks that split the steps
    L64 = L.astype(np.float64)
    assert np.allclose(t["mean_loss"], L64.mean(0)) and np.allclose(t["loss_std"], L64.std(0))
    assert np.allclose(t["mean_abs_change"], np.abs(np.diff(L64, axis=0)).mean(0))
    assert np.array_equal(t["forgetting"], (C[:-1] & ~C[1:]).sum(0))
    assert np.allclose(t["accuracy"], C.mean(0)) and np.allclose(t["final_loss"], L64[-1])
    p = write_summary(run)
    lines = p.read_text().splitlines()
    assert lines[0].startswith("id,mean_loss") and len(lines) == 8


def test_store_records_and_checks_its_zarr_format(tmp_path):
    """The store says which zarr format it is in, and a store in another format is refused by name."""
    import shutil

    from oppsig.errors import StoreError
    from oppsig.store import StoreWriter, open_run
    from oppsig.store.format import ZARR_FORMAT

    w = StoreWriter(tmp_path / "r", np.arange(4), chunk_steps=2)
    w.append(0, np.ones(4, dtype=np.float32))
    w.close()
    run = open_run(tmp_path / "r")
    assert run.attrs["zarr_format"] == ZARR_FORMAT == 3
    store = tmp_path / "r" / "store.zarr"
    shutil.move(store / "zarr.json", tmp_path / "zarr.json")
    (store / ".zgroup").write_text('{"zarr_format": 2}')
    with pytest.raises(StoreError, match="zarr format 2"):
        open_run(tmp_path / "r")
    (store / ".zgroup").unlink()
    with pytest.raises(StoreError, match="no zarr metadata"):
        open_run(tmp_path / "r")
