"""Issue 17 "Nothing lost": one test per numbered defect (each failed before the fix).

1. ``--overwrite`` never touches a run another process is writing.
2. ``--overwrite`` removes only what oppsig wrote; a user's files or a symbolic link make it refuse.
3. ``--resume`` continues from the newest intact checkpoint, or refuses with the choices; never from step 0.
4. A missing chunk or an inconsistent ``progress.json`` is an error naming the range, not wrong numbers.
5. A failed checkpoint write is one line and leaves no temporary file; the store's message names no "step None".
6. User errors are one line, no traceback (``--debug`` shows it).
7. Minor: empty ``--name=``, non-UTF-8 text, a bad metrics line, the offline download message.
"""

import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from oppsig.cli.main import main
from oppsig.errors import OppsigWarning, RunExistsError, RunLockedError, StoreError
from oppsig.store import Recorder, open_run
from oppsig.store.export import summary_table
from oppsig.store.writer import StoreWriter
from oppsig.training import load_checkpoint, train

PY = sys.executable


def cli(capsys, *argv):
    """Run the CLI in this process: (exit status, stderr)."""
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_one_line_error(rc, err, *words):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])


def snapshot(d):
    """Every file below ``d`` with its size and mtime (what a run directory holds; the lock file aside)."""
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ----------------------------------------------------------------------------- 1
def test_1_overwrite_never_touches_a_run_being_written(tiny_cfg, tmp_path):
    cfg = tiny_cfg(steps=100000)
    rd = tmp_path / "runs" / "tiny"
    p = subprocess.Popen([PY, "-m", "oppsig", "train", "--no-progress", "--data.n=128", "--model.widths=[16]",
                          "--train.steps=100000", f"--out-dir={cfg.out_dir}", "--name=tiny",
                          "--record.chunk_steps=4", "--train.checkpoint_every=0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            m = rd / "metrics.jsonl"
            if m.exists() and len(m.read_text().splitlines()) > 5:
                break
            time.sleep(0.05)
        with pytest.raises(RunLockedError, match="being written by another process"):
            train(cfg, overwrite=True, progress=False)
        for f in ("config.yaml", "meta.json", "metrics.jsonl", "store.zarr/zarr.json", "store.zarr/loss/zarr.json"):
            assert (rd / f).exists(), f
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=90)
    assert p.returncode == 130 and "Traceback" not in err, err  # the first run ended cleanly
    run = open_run(rd)
    assert run.steps.tolist() == list(range(run.rows)) and run.rows == len(run.metrics["step"])


# ----------------------------------------------------------------------------- 2
def test_2_overwrite_refuses_a_directory_with_user_files(tiny_cfg, tmp_path):
    d = tmp_path / "d"
    (d / "important").mkdir(parents=True)
    (d / "notes.txt").write_text("x")
    (d / "important" / "data.bin").write_bytes(b"keep")
    (d / "metrics.jsonl").write_text("{}\n")
    cfg = tiny_cfg(f"out_dir={tmp_path}", "name=d", steps=2)
    with pytest.raises(RunExistsError, match="important.*notes.txt.*did not write"):
        train(cfg, overwrite=True, progress=False)
    assert (d / "notes.txt").read_text() == "x" and (d / "important" / "data.bin").read_bytes() == b"keep"
    assert (d / "metrics.jsonl").read_text() == "{}\n"


def test_2_overwrite_never_follows_a_link(tiny_cfg, tmp_path):
    res = train(tiny_cfg(steps=3), progress=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("mine")
    (res.run_dir / "checkpoints" / "elsewhere").symlink_to(outside, target_is_directory=True)
    before = snapshot(res.run_dir)
    with pytest.raises(RunExistsError, match="elsewhere .a symbolic link"):
        train(tiny_cfg(steps=3), overwrite=True, progress=False)
    assert snapshot(res.run_dir) == before  # nothing of the run was removed
    assert (outside / "precious.txt").read_text() == "mine"
    (res.run_dir / "checkpoints" / "elsewhere").unlink()
    (res.run_dir / "signals.json").write_text("{}")  # written by detect: oppsig's own
    res2 = train(tiny_cfg(steps=2), overwrite=True, progress=False)
    assert not (res2.run_dir / "signals.json").exists() and open_run(res2.run_dir).rows == 2


def test_2_recorder_overwrite_keeps_user_files(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "train.py").write_text("my loop")
    with Recorder(d, num_examples=3) as rec:
        rec.log(0, [0, 1, 2], torch.ones(3))
    with pytest.raises(RunExistsError, match="train.py"):
        Recorder(d, num_examples=3, overwrite=True)
    assert (d / "train.py").read_text() == "my loop"


# ----------------------------------------------------------------------------- 3
def test_3_resume_without_last_pt_uses_the_newest_kept_checkpoint(tiny_cfg):
    full = train(tiny_cfg("name=full", steps=13), progress=False)
    cfg = tiny_cfg(steps=13)
    part = train(tiny_cfg(steps=12), progress=False)  # kept: 0, 5, 10, 12
    (part.run_dir / "checkpoints" / "last.pt").unlink()
    (part.run_dir / "checkpoints" / "step_000012.pt").unlink()
    with pytest.warns(OppsigWarning, match="resuming from step_000010.pt at step 10"):
        res = train(cfg, run_dir=part.run_dir, resume=True, progress=False)
    assert res.next_step == 13
    a, b = open_run(full.run_dir), open_run(part.run_dir)
    assert b.steps.tolist() == list(range(13)) and b.metrics["step"].tolist() == list(range(13))
    np.testing.assert_array_equal(np.asarray(a.losses), np.asarray(b.losses))
    meta = json.loads((part.run_dir / "meta.json").read_text())
    assert [r["step"] for r in meta["resumed"]] == [10]


def test_3_resume_with_no_checkpoint_refuses_and_keeps_the_record(tiny_cfg):
    part = train(tiny_cfg(steps=8), progress=False)
    shutil.rmtree(part.run_dir / "checkpoints")
    before = snapshot(part.run_dir)
    with pytest.raises(StoreError, match="no intact checkpoint.*--overwrite"):
        train(tiny_cfg(steps=12), run_dir=part.run_dir, resume=True, progress=False)
    assert snapshot(part.run_dir) == before
    assert open_run(part.run_dir).rows == 8


def test_3_resume_keeps_the_history_of_resumes(tiny_cfg):
    part = train(tiny_cfg(steps=6), progress=False)
    train(tiny_cfg(steps=8), run_dir=part.run_dir, resume=True, progress=False)
    (part.run_dir / "checkpoints" / "last.pt").unlink()  # step_000008.pt stays
    with pytest.warns(OppsigWarning, match="last.pt is missing"):
        train(tiny_cfg(steps=10), run_dir=part.run_dir, resume=True, progress=False)
    meta = json.loads((part.run_dir / "meta.json").read_text())
    assert [r["step"] for r in meta["resumed"]] == [6, 8] and meta["next_step"] == 10


def test_3_damaged_checkpoint_message_offers_the_choices(tiny_cfg):
    res = train(tiny_cfg(steps=3, *["train.checkpoint_every=0", "train.keep_checkpoints=false"]), progress=False)
    (res.run_dir / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(StoreError) as e:
        train(tiny_cfg(steps=6), run_dir=res.run_dir, resume=True, progress=False)
    assert "last.pt is damaged" in str(e.value) and "--overwrite" in str(e.value) and "delete it" not in str(e.value)
    assert open_run(res.run_dir).rows == 3


# ----------------------------------------------------------------------------- 4
def test_4_missing_chunk_is_an_error_with_its_range(tiny_cfg, capsys):
    res = train(tiny_cfg(steps=10), progress=False)  # chunks of 4 steps
    (res.run_dir / "store.zarr" / "loss" / "c" / "1" / "0").unlink()
    with pytest.warns(OppsigWarning, match="loss rows 4..7 .steps 4..7."):
        run = open_run(res.run_dir)
    np.asarray(run.losses[:4])  # rows that are there still read
    with pytest.raises(StoreError, match="lacks loss rows 4..7 .steps 4..7."):
        summary_table(run)
    rc, err = cli(capsys, "export", res.run_dir)
    assert_one_line_error(rc, err, "loss rows 4..7")


def test_4_progress_claiming_more_rows_than_stored(tiny_cfg, capsys):
    res = train(tiny_cfg(steps=10), progress=False)
    p = res.run_dir / "progress.json"
    prog = json.loads(p.read_text())
    p.write_text(json.dumps({**prog, "rows": 100}))
    with pytest.raises(StoreError, match="says 100 rows are complete but store.zarr/loss holds only 10"):
        open_run(res.run_dir)
    rc, err = cli(capsys, "detect", res.run_dir, "--verify=0", "--no-grids")
    assert_one_line_error(rc, err, "100 rows")


def test_4_export_means_divide_by_the_steps_logged(tmp_path):
    with Recorder(tmp_path / "r", num_examples=4) as rec:
        rec.log(0, [0, 1, 2, 3], torch.tensor([1.0, 1.0, 1.0, 1.0]))
        rec.log(1, [0, 1], torch.tensor([3.0, 5.0]))  # examples 2, 3 not logged at step 1
    t = summary_table(open_run(tmp_path / "r"))
    np.testing.assert_allclose(t["mean_loss"], [2.0, 3.0, 1.0, 1.0])
    np.testing.assert_allclose(t["final_loss"], [3.0, 5.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- 5
def test_5_failed_checkpoint_write_is_one_line_and_leaves_no_temp(tiny_cfg, monkeypatch):
    real = torch.save
    calls = {"n": 0}

    def failing(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            real(obj, f, *a, **k)
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4096 vs 1024\nmore")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(StoreError, match=r"cannot write the checkpoint .*last.pt \(.*unexpected pos") as e:
        train(tiny_cfg(steps=20), progress=False)
    assert "\n" not in str(e.value)
    ck = tiny_cfg().out_dir + "/tiny/checkpoints"
    assert not [f for f in os.listdir(ck) if f.endswith(".tmp")]
    assert load_checkpoint(ck + "/last.pt")["step"] == 5  # the previous one is intact


def test_5_file_size_limit_during_a_checkpoint(tmp_path):
    """The real thing: ``ulimit -f`` stops the checkpoint write half-way (the record's files stay small)."""
    limit = 200_000

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run([PY, "-m", "oppsig", "train", "--no-progress", "--data.n=64", "--model.widths=[512]",
                        "--train.steps=30", "--train.checkpoint_every=20", f"--out-dir={tmp_path}", "--name=f"],
                       capture_output=True, text=True, timeout=180, preexec_fn=cap)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot write the checkpoint" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "f").rglob("*.tmp"))


def test_5_disk_full_before_any_row_names_no_step_none(tmp_path, monkeypatch):
    import errno

    w = StoreWriter(tmp_path, np.arange(5), chunk_steps=2)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(type(w._loss), "__setitem__", full)
    w.append(0, np.ones(5))
    with pytest.raises(StoreError) as e:
        w.append(1, np.ones(5))
    assert "None" not in str(e.value) and "no row is on disk yet" in str(e.value)


# ----------------------------------------------------------------------------- 6
@pytest.fixture
def tiny_run(tiny_cfg):
    return train(tiny_cfg(steps=6), progress=False).run_dir


def test_6_non_utf8_config(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"train:\n  steps: \xff\xfe\n")
    assert_one_line_error(*cli(capsys, "train", p), "c.yaml", "UTF-8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_6_cuda_on_a_cpu_only_torch(tmp_path, capsys):
    assert_one_line_error(*cli(capsys, "train", "--device=cuda", "--train.steps=1", f"--out-dir={tmp_path}"),
                          "cuda", "--device=cpu")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["report", "sharpness"])
def test_6_corrupt_meta_json(tiny_run, capsys, command):
    (tiny_run / "meta.json").write_text('{"oppsig_version": ')
    assert_one_line_error(*cli(capsys, command, tiny_run), "meta.json is damaged")


@pytest.mark.parametrize("command", ["detect", "report", "sharpness"])
def test_6_corrupt_config_yaml(tiny_run, capsys, command):
    (tiny_run / "config.yaml").write_text("model: [unclosed\n  x: :")
    assert_one_line_error(*cli(capsys, command, tiny_run, *(["--no-grids"] if command == "detect" else [])),
                          "config.yaml is damaged")


@pytest.mark.parametrize("labels", [["cat"] * 4, [2**70, 0, 1, 2]])
def test_6_bad_cifar_labels(tmp_path, capsys, labels):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": labels}, f)
    rc, err = cli(capsys, "train", "--data.name=cifar10", f"--data-dir={tmp_path}", "--train.steps=1",
                  f"--out-dir={tmp_path}")
    assert rc == 2 and "Traceback" not in err and "data_batch_1" in err and "labels" in err, err


def test_6_export_into_a_missing_folder(tiny_run, tmp_path, capsys):
    assert_one_line_error(*cli(capsys, "export", tiny_run, "--out", tmp_path / "missing" / "x.csv"),
                          "missing", "does not exist")


def test_6_data_too_big_for_memory(tmp_path):
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    r = subprocess.run([PY, "-m", "oppsig", "train", "--data.n=100000000", "--train.steps=1", f"--out-dir={tmp_path}",
                        "--no-progress"], capture_output=True, text=True, timeout=180, preexec_fn=cap)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "out of memory" in r.stderr, r.stderr


def test_6_ctrl_c_while_loading(tmp_path):
    for delay in (0.2, 0.6, 1.0):
        p = subprocess.Popen([PY, "-m", "oppsig", "train", "--train.steps=100000", f"--out-dir={tmp_path}",
                              "--no-progress", "--overwrite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()  # a run that lost its Ctrl-C would otherwise train on after the test
            p.communicate()
            raise AssertionError(f"still running 120 s after Ctrl-C at {delay} s")
        assert p.returncode == 130 and "Traceback" not in err and "internal error" not in err, (delay, err)


def test_6_a_swallowed_ctrl_c_still_ends_the_command(tmp_path, capsys, monkeypatch):
    """A Ctrl-C whose KeyboardInterrupt a finaliser swallowed (here: the handler says it fired) ends `oppsig train`
    with 130 before its first step; the handler before the command is back after it."""
    import oppsig.cli.main as cli_main

    monkeypatch.setattr(cli_main._Interrupt, "interrupted", True)
    before = signal.getsignal(signal.SIGINT)
    rc, err = cli(capsys, "train", "--train.steps=50", f"--out-dir={tmp_path}", "--no-progress")
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is before
    assert not list(tmp_path.rglob("metrics.jsonl")) or all(
        p.read_text().strip() == "" for p in tmp_path.rglob("metrics.jsonl"))


def test_6_debug_shows_the_traceback(tmp_path, capsys):
    rc, err = cli(capsys, "--debug", "export", tmp_path)
    assert rc == 2 and "Traceback" in err and "error: " in err


# ----------------------------------------------------------------------------- 7
def test_7_empty_name(tmp_path, capsys):
    assert_one_line_error(*cli(capsys, "train", "--name=", "--train.steps=1", f"--out-dir={tmp_path}"), "--name")
    assert not (tmp_path / "run").exists()


def test_7_non_utf8_text_warns(tmp_path):
    from oppsig.data import char_dataset

    p = tmp_path / "t.txt"
    p.write_bytes(("hello world " * 20).encode() + b"\xff\xfe" + b" more text" * 10)
    with pytest.warns(OppsigWarning, match="not UTF-8.*byte 240"):
        char_dataset(p, block_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        char_dataset(p.with_name("ok.txt") if p.with_name("ok.txt").write_text("abc " * 30) else p, block_size=8)


def test_7_a_bad_metrics_line_loses_only_itself(tiny_cfg):
    res = train(tiny_cfg(steps=8), progress=False)
    m = res.run_dir / "metrics.jsonl"
    lines = m.read_text().splitlines()
    lines[3] = lines[3][:10]
    m.write_text("\n".join(lines) + "\n")
    with pytest.warns(OppsigWarning, match="1 damaged line.*line 4"):
        steps = open_run(res.run_dir).metrics["step"].tolist()
    assert steps == [0, 1, 2, 4, 5, 6, 7]


def test_7_offline_download_message(tmp_path):
    from oppsig.data.cifar import download_cifar10
    from oppsig.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError) as e:
        download_cifar10(tmp_path, url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    msg = str(e.value)
    assert "cannot reach http://127.0.0.1:9/" in msg and "no network" in msg and ".part" not in msg
    assert not list(tmp_path.glob("*.part"))


def test_6_resume_with_another_model_is_one_line(tiny_run, capsys):
    assert_one_line_error(*cli(capsys, "train", "--resume", tiny_run, "--model.widths=[4]", "--no-progress"),
                          "with model.widths=[4]: these settings cannot change mid-run")
    assert open_run(tiny_run).rows == 6
