"""Live attribution across a resume: a run stopped (or killed) and resumed logs exactly the events of an
uninterrupted one, and a session's saved state survives a checkpoint loaded with ``weights_only=True``."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

from oppsig.config import LiveConfig
from oppsig.live import EVENTS, LiveHook, LiveSession, read_events
from oppsig.training import train

from ..conftest import ROOT
from ..faults.test_sigkill import _run_until
from .test_hook import PlantSpike

SPIKE = 30
LIVE = ("live.enabled=true", "live.window=11", "live.context=6", "live.history=10")


class Crash:
    """Ends the process's work at a step, as a SIGKILL would: no final checkpoint."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise RuntimeError("killed")


def _train(cfg, tiny_data, run_dir, *extra, resume=False):
    hooks = [PlantSpike(SPIKE, np.arange(10)), LiveHook(cfg.live, describe=False), *extra]
    return train(cfg, hooks=hooks, progress=False, data=(tiny_data, None), run_dir=run_dir, resume=resume)


def _reference(tiny_cfg, tiny_data, tmp_path, steps=45):
    ref = _train(tiny_cfg(*LIVE, steps=steps), tiny_data, tmp_path / "ref")
    spikes = [e for e in read_events(ref.run_dir) if e["kind"] == "spike"]
    # the reference attributes its spike from the examples' own history: online groups need 4 rows of it
    assert [e["step"] for e in spikes] == [SPIKE] and spikes[0]["groups"] and spikes[0]["onset_step"] < SPIKE
    return (ref.run_dir / EVENTS).read_bytes()


def test_stopped_and_resumed_run_logs_the_events_of_an_uninterrupted_one(tiny_cfg, tiny_data, tmp_path):
    want = _reference(tiny_cfg, tiny_data, tmp_path)
    rd = tmp_path / "split"
    _train(tiny_cfg(*LIVE, steps=SPIKE - 2), tiny_data, rd)  # stops at its checkpoint of step 28
    assert not (rd / EVENTS).exists()
    _train(tiny_cfg(*LIVE, steps=45), tiny_data, rd, resume=True)
    assert (rd / EVENTS).read_bytes() == want


def test_killed_and_resumed_run_logs_the_events_of_an_uninterrupted_one(tiny_cfg, tiny_data, tmp_path):
    want = _reference(tiny_cfg, tiny_data, tmp_path)
    rd = tmp_path / "killed"
    cfg = tiny_cfg(*LIVE, steps=45)
    try:
        _train(cfg, tiny_data, rd, Crash(SPIKE + 3))  # the last checkpoint is of step 30, before the spike
    except RuntimeError:
        pass
    assert [e["step"] for e in read_events(rd)] == [SPIKE]  # logged by the killed process after its checkpoint
    _train(cfg, tiny_data, rd, resume=True)
    assert (rd / EVENTS).read_bytes() == want  # the spike once, attributed as without the kill


def _losses(t, n=40):
    rng = np.random.default_rng(t)
    x = np.exp(-t / 50) * (1 + 0.02 * rng.standard_normal(n))
    if t == 26:
        x[:8] *= 6.0
    return x


def _drive(session, steps):
    return [session.observe(t, np.arange(40), _losses(t)) for t in steps]


def test_session_state_survives_a_weights_only_checkpoint(tmp_path):
    """The state a framework callback (LiveRecord) saves in its checkpoint is the session's."""
    cfg = LiveConfig(enabled=True, window=8, context=5, history=8)
    whole = LiveSession(cfg)
    whole.start(None, np.arange(40), print_fn=None)
    want = [e.to_json() for e in _drive(whole, range(40)) if e is not None]
    assert [e["step"] for e in want] == [26] and want[0]["groups"]

    first = LiveSession(cfg)
    first.start(None, np.arange(40), print_fn=None)
    _drive(first, range(24))
    buf = io.BytesIO()
    torch.save({"callback": first.state_dict()}, buf)
    buf.seek(0)
    second = LiveSession(cfg)
    second.load_state_dict(torch.load(buf, weights_only=True)["callback"])
    second.start(None, np.arange(40), print_fn=None)
    got = [e.to_json() for e in _drive(second, range(24, 40)) if e is not None]
    assert got == want


def test_cut_events_after_drops_later_and_torn_lines(tmp_path):
    from oppsig.live import cut_events_after

    (tmp_path / EVENTS).write_text('{"kind": "spike", "step": 3}\n{"kind": "spike", "step": 9}\n{"kind": "sp')
    assert cut_events_after(tmp_path, 5) == 2
    assert read_events(tmp_path) == [{"kind": "spike", "step": 3}]
    assert cut_events_after(tmp_path, 5) == 0 and cut_events_after(tmp_path / "none", 5) == 0


def test_a_downweighted_group_stays_downweighted_after_a_resume(tiny_cfg, tiny_data, tmp_path):
    from oppsig.signals import Group, SignalsResult, write_signals_json

    ids = tiny_data.index.numpy()
    sig = write_signals_json(SignalsResult(n_rows=10, n_examples=len(ids), groups=(
        Group(0, tuple(range(10)), tuple(ids[:10].tolist())),)), tmp_path / "signals.json")
    over = (*LIVE, f"live.groups={sig}", "live.downweight_group=0", "live.downweight=0.1")
    rd = tmp_path / "dw"
    for steps in (SPIKE + 3, SPIKE + 6):  # down-weighted at the spike; the resumed segment starts from ones
        cfg = tiny_cfg(*over, steps=steps)
        w = torch.ones(len(ids))
        hooks = [PlantSpike(SPIKE, np.arange(10)), LiveHook(cfg.live, describe=False)]
        train(cfg, hooks=hooks, progress=False, data=(tiny_data, None), run_dir=rd, resume=steps > SPIKE + 3,
              example_weights=w)
    assert torch.allclose(w[:10], torch.full((10,), 0.1)) and torch.equal(w[10:], torch.ones(len(ids) - 10))
    assert [e["kind"] for e in read_events(rd)].count("downweight") == 1


@pytest.mark.slow
def test_sigkilled_cli_run_logs_the_events_of_an_uninterrupted_one(tmp_path):
    """`oppsig train --live.enabled=true` at an lr that spikes (5 spikes in steps 110-144), SIGKILLed inside the
    spikes and resumed with `--resume`: events.jsonl is byte for byte the uninterrupted run's."""
    cmd = [sys.executable, "-m", "oppsig", "train", str(ROOT / "configs" / "synthetic-gd.yaml"), "--no-progress",
           "--data.n=256", "--model.widths=[32]", "--train.steps=150", "--curvature.every=0", "--optim.lr=0.2",
           "--live.enabled=true", "--live.window=11", "--live.z=3", "--train.checkpoint_every=10", "--threads=1",
           f"--out-dir={tmp_path}"]  # one thread: the same trajectory (and spikes) whatever the machine sets
    subprocess.run(cmd + ["--name=ref"], check=True, capture_output=True, timeout=300)
    want = (tmp_path / "ref" / EVENTS).read_bytes()
    assert want.count(b'"kind": "spike"') >= 3
    rd = tmp_path / "k"
    run = cmd + ["--name=k"]
    for target in (126, 141):  # after the spikes of 110 and 120, between checkpoints
        assert _run_until(run, rd / "metrics.jsonl", target), "the run finished before it was killed"
        run = [sys.executable, "-m", "oppsig", "train", "--resume", str(rd), "--no-progress"]
    _run_until(run, rd / "metrics.jsonl", 10**6)
    assert (rd / EVENTS).read_bytes() == want
