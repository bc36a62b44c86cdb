"""SIGKILL at random steps, then resume: bitwise identical to an uninterrupted run, each step recorded once.

The short version of ``benchmarks/sigkill_resume.py`` (two kills of one run)."""

import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from oppsig.store import open_run
from oppsig.training import load_checkpoint

ARGS = ["data.n=128", "model.widths=[16]", "train.steps=30", "train.checkpoint_every=4", "record.chunk_steps=4",
        "train.physical_batch_size=64", "optim.lr=0.05"]


def _lines(p):
    try:
        return p.read_bytes().count(b"\n")
    except OSError:
        return 0


def _ino(p):
    try:
        return p.stat().st_ino
    except OSError:
        return None


def _run_until(cmd, metrics, target):
    """Run ``cmd``; SIGKILL it once its metrics.jsonl holds ``target`` lines."""
    before = _ino(metrics)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline:
        if _ino(metrics) not in (None, before) and _lines(metrics) >= target:
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.002)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()
    return False


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    # the reference runs as the killed runs do (a process of its own, the same thread count): bitwise
    # equality is promised between runs of the same arithmetic, not across thread counts
    train_cmd = [sys.executable, "-m", "oppsig", "train", "--no-progress", *[f"--{a}" for a in ARGS],
                 f"--out-dir={tmp_path}"]
    _run_until(train_cmd + ["--name=ref"], tmp_path / "ref" / "metrics.jsonl", 10**6)
    ref = tmp_path / "ref"
    rd = tmp_path / "k"
    cmd = train_cmd + ["--name=k"]
    resume = [sys.executable, "-m", "oppsig", "train", "--resume", str(rd), "--no-progress"]
    rng = random.Random(0)
    for target in sorted(rng.sample(range(2, 28), 2)):
        _run_until(cmd, rd / "metrics.jsonl", target)
        cmd = resume
    _run_until(cmd, rd / "metrics.jsonl", 10**6)
    a, b = open_run(ref), open_run(rd)
    assert b.steps.tolist() == list(range(30)) and b.metrics["step"].tolist() == list(range(30))
    np.testing.assert_array_equal(np.asarray(a.losses), np.asarray(b.losses))
    np.testing.assert_array_equal(a.metrics["loss"], b.metrics["loss"])
    wa, wb = load_checkpoint(ref)["model"], load_checkpoint(rd)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
