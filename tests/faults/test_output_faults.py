"""Failures while a reading command writes its outputs or reads a damaged store: one line naming the file and the
fix, no traceback, no stray lines on stderr, no torn file left.

The tests run as root, where file permissions are not enforced: a read-only run directory is simulated by the
error the file system would give (``PermissionError`` from every atomic write), a full disk by ``ENOSPC`` from the
image writer.
"""

from __future__ import annotations

import builtins
import errno
import os
import subprocess
import sys

from matplotlib.figure import Figure

from oppsig.cli.main import main
from oppsig.training import train
from tests.cli.test_commands import one_line_error


def _refuse_writes(monkeypatch, err: int) -> list:
    """Make every atomic write (signals.json, image grids, tables) fail with ``err``; returns the refused paths."""
    refused = []

    def fake_open(path, mode="r", *args, **kw):
        if any(c in mode for c in "wax+"):
            refused.append(str(path))
            raise OSError(err, os.strerror(err), str(path))
        return builtins.open(path, mode, *args, **kw)

    monkeypatch.setattr("oppsig.store.format.open", fake_open, raising=False)
    return refused


def test_detect_on_a_read_only_run_directory(run_copy, monkeypatch, capsys):
    refused = _refuse_writes(monkeypatch, errno.EACCES)
    before = sorted(p.name for p in run_copy.iterdir())
    line = one_line_error(capsys, main(["detect", str(run_copy), "--verify", "0", "--no-grids"]))
    assert refused, "no write was attempted"
    assert str(run_copy / "signals.json") in line and "Permission denied" in line, line
    assert "chmod" in line and "copy of the run" in line, line
    assert sorted(p.name for p in run_copy.iterdir()) == before  # no temporary file left


def test_detect_on_a_full_disk_while_drawing_grids(run_copy, monkeypatch, capsys):
    drawn = []

    def full(self, fname, *args, **kw):
        drawn.append(fname)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full)
    line = one_line_error(capsys, main(["detect", str(run_copy), "--k", "5", "--verify", "0"]))
    assert drawn, "no grid was drawn: the run has no group to test this on"
    assert str(run_copy / "signals") in line and "No space left on device" in line, line
    assert "free space" in line and "--no-grids" in line, line
    assert not [p for p in (run_copy / "signals").iterdir()]  # no torn PNG, no temporary file
    assert not (run_copy / "signals.json").exists()


def test_export_of_a_damaged_chunk_prints_one_line(tiny_cfg, tmp_path):
    """The first of 40 chunks damaged: zarr's reads of the others are still pending when it fails, and were
    destroyed at exit with asyncio's "Task was destroyed but it is pending!" on stderr (in most runs: the test
    runs the command four times). The process must print the error only."""
    rd = train(tiny_cfg("record.chunk_steps=1", "train.checkpoint_every=0", steps=40), progress=False).run_dir
    chunks = [p for p in (rd / "store.zarr" / "loss").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(chunks) == 40
    (rd / "store.zarr" / "loss" / "c" / "0" / "0").write_bytes(b"garbage")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(4):
        r = subprocess.run([sys.executable, "-m", "oppsig", "export", str(rd), "--out", str(tmp_path / "x.csv")],
                           capture_output=True, text=True, env=env, timeout=300)
        err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning: ")]
        assert r.returncode == 2, r.stderr
        assert "Task was destroyed" not in r.stderr, r.stderr[:2000]
        assert len(err) == 1 and err[0].startswith("error: ") and "damaged" in err[0] and "'loss'" in err[0], err
        assert "restore it from a backup" in err[0]
        assert not (tmp_path / "x.csv").exists()
