"""Live attribution in `oppsig train` (LiveHook): events at a planted spike, and each action, on a real tiny run."""

import numpy as np
import pytest
import torch

from oppsig.live import LiveHook, read_events
from oppsig.signals import Group, SignalsResult, write_signals_json
from oppsig.training import load_checkpoint, train

SPIKE = 30


class PlantSpike:
    """Multiplies the losses of some examples at one step, as a real spike would raise them (before LiveHook runs)."""

    def __init__(self, step, rows, factor=8.0):
        self.step, self.rows, self.factor = step, rows, factor

    def on_step_end(self, state):
        if state.step == self.step:
            pl = state.per_example_loss.clone()
            pl[self.rows] *= self.factor
            state.per_example_loss = pl
            state.metrics["loss"] = float(pl.mean())


class Params:
    """Parameters at the start and end of every step."""

    def __init__(self):
        self.start, self.end, self.lr = {}, {}, {}

    def on_step_start(self, state):
        self.start[state.step] = torch.cat([p.detach().flatten().clone() for p in state.model.parameters()])

    def on_step_end(self, state):
        self.end[state.step] = torch.cat([p.detach().flatten().clone() for p in state.model.parameters()])
        self.lr[state.step] = state.metrics["lr"]


def _run(tiny_cfg, tiny_data, *overrides, weights=None, steps=45):
    cfg = tiny_cfg("live.enabled=true", "live.window=11", "train.keep_checkpoints=true", *overrides, steps=steps)
    seen = Params()
    hooks = [PlantSpike(SPIKE, np.arange(10)), LiveHook(cfg.live, describe=False), seen]
    res = train(cfg, hooks=hooks, progress=False, data=(tiny_data, None), example_weights=weights)
    return res, seen, hooks[1]


def test_spike_event_names_the_planted_examples(tiny_cfg, tiny_data, capsys):
    res, seen, hook = _run(tiny_cfg, tiny_data)
    ev = [e for e in read_events(res.run_dir) if e["kind"] == "spike"]
    assert [e["step"] for e in ev] == [SPIKE]
    assert set(ev[0]["examples"]) <= set(range(10)) and ev[0]["example_share"] > 0.5
    assert f"step {SPIKE}: loss +" in capsys.readouterr().err
    # nothing was changed: the update of the spiking step happened
    assert not torch.equal(seen.end[SPIKE], seen.start[SPIKE])


def test_skip_update(tiny_cfg, tiny_data):
    res, seen, _ = _run(tiny_cfg, tiny_data, "live.skip_update=true")
    assert torch.equal(seen.end[SPIKE], seen.start[SPIKE])
    assert not torch.equal(seen.end[SPIKE - 1], seen.start[SPIKE - 1])
    kinds = [(e["kind"], e["step"]) for e in read_events(res.run_dir)]
    assert ("skip_update", SPIKE) in kinds


def test_rollback_to_the_checkpoint_before_the_onset(tiny_cfg, tiny_data):
    res, seen, _ = _run(tiny_cfg, tiny_data, "live.rollback=true")
    (rb,) = [e for e in read_events(res.run_dir) if e["kind"] == "rollback"]
    to = rb["to_step"]
    assert to % 5 == 0 and to <= SPIKE  # checkpoint_every=5 in tiny_cfg
    ck = load_checkpoint(res.run_dir / "checkpoints" / f"step_{to:06d}.pt")
    flat = torch.cat([v.flatten() for k, v in ck["model"].items()])
    assert torch.equal(seen.end[SPIKE], flat) and torch.equal(seen.start[to], flat)


def test_lower_lr_for_n_steps(tiny_cfg, tiny_data):
    res, seen, _ = _run(tiny_cfg, tiny_data, "live.lr_factor=0.25", "live.lr_steps=4")
    lr = 0.05
    assert [seen.lr[t] for t in range(SPIKE - 1, SPIKE + 7)] == pytest.approx(
        [lr, lr, lr / 4, lr / 4, lr / 4, lr / 4, lr, lr])
    assert any(e["kind"] == "lower_lr" for e in read_events(res.run_dir))


def test_downweight_a_named_group(tiny_cfg, tiny_data, tmp_path):
    ids = tiny_data.index.numpy()
    res0 = SignalsResult(n_rows=10, n_examples=len(ids),
                         groups=(Group(0, tuple(range(10)), tuple(ids[:10].tolist()), class_counts={"a": 10}),
                                 Group(1, tuple(range(40, 60)), tuple(ids[40:60].tolist()), class_counts={"b": 20})))
    sig = write_signals_json(res0, tmp_path / "signals.json")
    w = torch.ones(len(ids))
    res, seen, hook = _run(tiny_cfg, tiny_data, f"live.groups={sig}", "live.downweight_group=0", "live.downweight=0.1",
                           weights=w)
    assert torch.allclose(w[:10], torch.full((10,), 0.1)) and torch.equal(w[10:], torch.ones(len(ids) - 10))
    (e,) = [e for e in read_events(res.run_dir) if e["kind"] == "downweight"]
    assert e["step"] == SPIKE and e["group"] == 0


def test_downweight_needs_the_loop_weights(tiny_cfg, tiny_data, tmp_path):
    from oppsig.errors import ConfigError

    ids = tiny_data.index.numpy()
    sig = write_signals_json(SignalsResult(n_rows=10, n_examples=len(ids), groups=(
        Group(0, tuple(range(10)), tuple(ids[:10].tolist())),)), tmp_path / "signals.json")
    with pytest.raises(ConfigError, match="example weights"):
        _run(tiny_cfg, tiny_data, f"live.groups={sig}", "live.downweight_group=0", steps=3)


def test_live_state_is_checkpointed_and_resumed(tiny_cfg, tiny_data):
    cfg = tiny_cfg("live.enabled=true", steps=20)
    hook = LiveHook(cfg.live, describe=False)
    res = train(cfg, hooks=[hook], progress=False, data=(tiny_data, None))
    saved = load_checkpoint(res.run_dir)["hooks"]
    assert any("live" in d and len(d["live"]["detector"]["logs"]) == 20 for d in saved.values())


def test_spike_events_in_tensorboard(tiny_cfg, tiny_data):
    pytest.importorskip("tensorboard", reason='needs the tensorboard extra: pip install -e ".[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res, _, _ = _run(tiny_cfg, tiny_data, "live.tensorboard=true")
    acc = EventAccumulator(str(res.run_dir / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("live/spike_rise")] == [SPIKE]
