"""Live attribution of mini-batch runs in `oppsig train`: partial batches, groups named from the probe at kept
states, and the replay check recorded with each spike event."""

import numpy as np
import torch

from oppsig.config import LiveConfig
from oppsig.live import LiveAttribution, LiveHook, read_events
from oppsig.training import train

SPIKE = 33


class PlantSpike:
    """Raises the running loss of one step, as a spike of the batch would (the detector fires there)."""

    def on_step_end(self, state):
        if state.step == SPIKE:
            state.per_example_loss = state.per_example_loss * 6.0
            state.metrics["loss"] = float(state.per_example_loss.mean())


class Params:
    def on_train_end(self, state):
        self.final = torch.cat([p.detach().flatten().clone() for p in state.model.parameters()])


def test_a_short_last_batch_is_not_tested_for_a_spike():
    rng = np.random.default_rng(0)
    n, b = 1000, 50
    for short, fires in ((4, False), (50, True)):
        live = LiveAttribution(LiveConfig(window=11), print_fn=None)
        live.bind(None, np.arange(n))
        for t in range(40):
            live.observe(t, rng.choice(n, b, replace=False), 1.0 + 0.05 * rng.standard_normal(b))
        ev = live.observe(40, rng.choice(n, short, replace=False), np.full(short, 9.0))
        assert (ev is not None) is fires


def _run(tiny_cfg, tiny_data, tmp_path, name, *extra):
    cfg = tiny_cfg("optim.name=sgd", "optim.momentum=0.9", "train.batch_size=32", "live.enabled=true",
                   "live.window=11", "live.state_every=2", "live.replay_window=8", "train.checkpoint_every=0",
                   "threads=1", *extra, steps=40)
    seen = Params()
    hook = LiveHook(cfg.live, describe=False)
    train(cfg, hooks=[PlantSpike(), hook, seen], progress=False, data=(tiny_data, None), run_dir=tmp_path / name)
    return hook, seen


def test_minibatch_spike_event_names_groups_from_the_probe_and_records_its_replay(tiny_cfg, tiny_data, tmp_path):
    hook, seen = _run(tiny_cfg, tiny_data, tmp_path, "on")
    ev = next(e for e in read_events(tmp_path / "on") if e["kind"] == "spike" and e["step"] == SPIKE)
    assert ev["groups"] and all(g["source"] == "probe" and g["ids"] for g in ev["groups"])
    rp = ev["replay"]
    assert rp["peak_step"] == SPIKE + 1 and rp["start_step"] == ev["onset_step"] in (26, 28, 30, 32)
    assert rp["around"] == 8 and rp["steps"] == rp["peak_step"] + 8 - rp["start_step"]  # replayed past the peak
    assert rp["drift"] == 0.0  # the replay as trained ends exactly where training did
    assert rp["dropped"] == len(set().union(*(g["ids"] for g in ev["groups"])))
    assert ev["verdict"] == rp["verdict"] in ("data", "optimiser state", "undetermined")
    assert "replay" in ev["message"]
    # the proof works on copies: the run trains exactly as without it
    _, plain = _run(tiny_cfg, tiny_data, tmp_path, "off", "live.replay=false")
    assert torch.equal(seen.final, plain.final)
    off = next(e for e in read_events(tmp_path / "off") if e["kind"] == "spike" and e["step"] == SPIKE)
    assert off["replay"] is None and off["groups"] == []


def test_full_batch_runs_replay_only_when_asked(tiny_cfg, tiny_data, tmp_path):
    for name, extra, replayed in (("auto", [], False), ("on", ["live.replay=true"], True)):
        cfg = tiny_cfg("live.enabled=true", "live.window=11", "live.state_every=2", "live.replay_window=8",
                       "train.checkpoint_every=0", "threads=1", *extra, steps=36)
        train(cfg, hooks=[PlantSpike(), LiveHook(cfg.live, describe=False)], progress=False, data=(tiny_data, None),
              run_dir=tmp_path / name)
        ev = next(e for e in read_events(tmp_path / name) if e["kind"] == "spike" and e["step"] == SPIKE)
        assert (ev["replay"] is not None) is replayed, name


def test_a_spike_onset_is_not_before_the_previous_spikes_peak():
    """Two spikes 12 steps apart: the second's onset is its own low after the first's peak, not the low before
    the first (whose rise would be counted again)."""
    from oppsig.live.minibatch import probe_groups

    steps = np.arange(0, 28, 2)
    mean = np.array([1.0, 0.8, 1.9, 2.1, 1.2, 1.1, 1.05, 1.3, 1.5, 1.7, 1.9, 2.0, 2.2, 2.4])  # first peak at step 6
    L = mean[:, None] + 0.01 * np.random.default_rng(0).standard_normal((len(steps), 20))
    assert steps[probe_groups(L, steps).onset] == 2
    assert steps[probe_groups(L, steps, after=7).onset] == 12
    assert steps[probe_groups(L, steps, after=99).onset] == 2  # no kept step after it: every row
