"""Injected faults: each one gives a clear message and keeps every step recorded before it."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oppsig.config import load_config
from oppsig.errors import ConfigError, DivergenceError, StoreError
from oppsig.store import open_run
from oppsig.store.writer import StoreWriter
from oppsig.training import load_checkpoint, train


def test_disk_full_keeps_earlier_steps(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("record.chunk_steps=4", steps=30)
    real = StoreWriter.flush
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 3:  # the third write hits a full disk
            raise StoreError(f"cannot write the store in {self.run_dir} ({os.strerror(errno.ENOSPC)})")
        return real(self)

    monkeypatch.setattr(StoreWriter, "flush", flaky)
    with pytest.raises(StoreError, match="No space left"):
        train(cfg, progress=False)
    monkeypatch.setattr(StoreWriter, "flush", real)
    run = open_run(cfg.out_dir + "/tiny")
    assert run.rows >= 4 and run.steps.tolist() == list(range(run.rows))
    assert np.isfinite(np.asarray(run.losses)).all()


def test_enospc_from_the_file_system_is_a_store_error(tmp_path, monkeypatch):
    w = StoreWriter(tmp_path, np.arange(5), chunk_steps=2)
    w.append(0, np.ones(5))
    w.append(1, np.ones(5))  # written and committed

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(type(w._loss), "__setitem__", full)
    w.append(2, np.ones(5))
    with pytest.raises(StoreError, match="rows up to step 1 are safe"):
        w.append(3, np.ones(5))
    monkeypatch.undo()
    run = open_run(tmp_path)
    assert run.steps.tolist() == [0, 1]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_run_dir(tiny_cfg, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cfg = tiny_cfg(f"out_dir={ro}")
    with pytest.raises(StoreError, match="cannot"):
        train(cfg, progress=False)


def test_run_dir_is_a_file(tiny_cfg, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = tiny_cfg(f"out_dir={blocker}")
    with pytest.raises(StoreError, match="cannot create the run directory"):
        train(cfg, progress=False)


def test_truncated_checkpoint_is_named(tiny_cfg):
    res = train(tiny_cfg(steps=6), progress=False)
    ck = res.run_dir / "checkpoints" / "last.pt"
    ck.write_bytes(ck.read_bytes()[:500])  # also step_000006.pt: the same file (a hard link)
    with pytest.raises(StoreError, match="last.pt is damaged.*newest intact checkpoint.*--overwrite"):
        load_checkpoint(ck)
    r = subprocess.run([sys.executable, "-m", "oppsig", "train", "--resume", str(res.run_dir), "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "warning:" in r.stderr and "last.pt is damaged" in r.stderr and "step_000005.pt at step 5" in r.stderr
    run = open_run(res.run_dir)
    assert run.steps.tolist() == list(range(6)) and run.metrics["step"].tolist() == list(range(6))


def test_checkpoint_refuses_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/oppsig_ckpt_pwned",))

    p = tmp_path / "last.pt"
    torch.save({"model": {}, "step": 1, "x": Evil()}, p, pickle_module=pickle)
    with pytest.raises(StoreError, match="damaged or not an oppsig checkpoint"):
        load_checkpoint(p)
    assert not os.path.exists("/tmp/oppsig_ckpt_pwned")


def test_corrupted_store_chunk_is_named(tiny_cfg):
    res = train(tiny_cfg(steps=8), progress=False)
    chunks = sorted((res.run_dir / "store.zarr" / "loss").rglob("*"))
    chunk = [c for c in chunks if c.is_file() and c.name != "zarr.json"][0]
    chunk.write_bytes(b"\x00garbage" * 10)
    run = open_run(res.run_dir)
    with pytest.raises(StoreError, match="damaged"):
        np.asarray(run.losses)


@pytest.mark.slow
def test_second_writer_is_refused(tiny_cfg, tmp_path):
    cfg = tiny_cfg(steps=400)
    script = tmp_path / "w.py"
    script.write_text(
        "import sys\nfrom oppsig.config import load_config\nfrom oppsig.training import train\n"
        "train(load_config(None, sys.argv[1:]), progress=False)\n")
    args = [f"{k}" for k in ["data.name=synthetic", "data.n=128", "model.widths=[16]", "train.steps=100000",
                             f"out_dir={cfg.out_dir}", "name=tiny"]]
    p = subprocess.Popen([sys.executable, str(script), *args])
    try:
        deadline = time.time() + 60
        while not (tmp_path / "runs" / "tiny" / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        r = subprocess.run([sys.executable, "-m", "oppsig", "train", "--resume", str(tmp_path / "runs" / "tiny"),
                            "--no-progress"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "being written by another process" in r.stderr
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)


def test_sigterm_flushes_and_checkpoints(tiny_cfg, tmp_path):
    cfg = tiny_cfg(steps=100000)
    rd = tmp_path / "runs" / "tiny"
    p = subprocess.Popen([sys.executable, "-m", "oppsig", "train", "--no-progress", "--data.n=128",
                          "--model.widths=[16]", "--train.steps=100000", f"--out_dir={cfg.out_dir}", "--name=tiny",
                          "--record.chunk_steps=64", "--train.checkpoint_every=0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        m = rd / "metrics.jsonl"
        if m.exists() and len(m.read_text().splitlines()) > 10:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "oppsig train --resume" in out
    run = open_run(rd)
    n_metrics = len(run.metrics["step"])
    assert run.rows == n_metrics > 10  # buffered rows were flushed, none lost
    ck = load_checkpoint(rd)
    assert ck["step"] == run.rows


def test_nan_at_step_zero(tiny_cfg):
    class NaNModel:
        def on_train_start(self, state):
            with torch.no_grad():
                next(state.model.parameters()).fill_(float("nan"))

    with pytest.raises(DivergenceError, match="at step 0"):
        train(tiny_cfg(), hooks=[NaNModel()], progress=False)


def test_empty_subset_and_class_mismatch():
    with pytest.raises(ConfigError, match="data.n"):
        load_config(None, ["data.n=0"])
    with pytest.raises(ConfigError, match="data.synthetic.pairs|class"):
        from oppsig.data import build_datasets

        cfg = load_config(None, ["data.synthetic.num_classes=3"])  # default pairs use class 3
        build_datasets(cfg.data)


# ---------------------------------------------------------------- fuzzed configs
SECTIONS = {
    "optim": ["lr", "momentum", "name", "betas", "eps", "warmup_steps", "nesterov"],
    "train": ["steps", "loss", "batch_size", "physical_batch_size", "acc_goal"],
    "data": ["n", "name", "per_class", "test_n"],
    "record": ["every", "dtype", "chunk_steps"],
    "model": ["widths", "activation", "n_head"],
    "curvature": ["every", "top_k", "tol", "hvp"],
}
values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.lists(st.integers(-2, 3), max_size=3), st.just({"x": 1}),
)
keys = st.sampled_from([f"{s}.{k}" for s, ks in SECTIONS.items() for k in ks] + ["optim.lrr", "bogus.key", "name"])


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, min_size=1, max_size=3))
def test_fuzzed_configs_validate_or_name_the_key(overrides):
    try:
        cfg = load_config(None, overrides)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg
        assert any(k.split(".")[0] in msg for k in overrides), (overrides, msg)
        return
    # accepted configs are valid: positive sizes, finite positive lr
    assert cfg.train.steps > 0 and cfg.optim.lr > 0 and np.isfinite(cfg.optim.lr)
    assert cfg.data.n is None or cfg.data.n > 0
    assert cfg.record.every is None or cfg.record.every > 0  # None: chosen when the run starts


def test_interrupted_download_resumes_and_verifies(tmp_path):
    """A download cut off half-way resumes with a range request; a bad checksum removes the file."""
    import hashlib
    import io
    import pickle
    import tarfile
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from oppsig.data.cifar import download_cifar10
    from oppsig.errors import DataFormatError, DataNotFoundError

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        payload = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    blob = buf.getvalue() + b"\0" * 4096  # long enough to cut
    md5 = hashlib.md5(blob).hexdigest()
    state = {"requests": [], "cut": True}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            state["requests"].append(rng)
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            body = blob[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state["cut"]:
                state["cut"] = False
                self.wfile.write(body[: len(body) // 2])  # the connection drops half-way
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/cifar-10-python.tar.gz"
    try:
        with pytest.raises(DataNotFoundError, match="broke off.*run it again to resume"):
            download_cifar10(tmp_path, url=url, md5=md5)
        assert (tmp_path / "cifar-10-python.tar.gz.part").stat().st_size > 0
        out = download_cifar10(tmp_path, url=url, md5=md5)  # resumes
        assert state["requests"][1] is not None and state["requests"][1].startswith("bytes=")
        assert (out / "data_batch_1").exists()
        (tmp_path / "cifar-10-python.tar.gz").unlink()
        with pytest.raises(DataFormatError, match="MD5"):
            download_cifar10(tmp_path, url=url, md5="0" * 32)
        assert not (tmp_path / "cifar-10-python.tar.gz").exists()
    finally:
        srv.shutdown()
