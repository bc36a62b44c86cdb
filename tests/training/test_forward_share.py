"""The probe plan's cost model: the forward share is timed on a copy of the model, doing what the run's step does."""

import contextlib

import pytest
import torch

import oppsig.training.step as step_module
from oppsig.data.synthetic import opposing_signals
from oppsig.losses import get_loss
from oppsig.models import build_from_config
from oppsig.store.probe_plan import quantize_share
from oppsig.training.build import forward_share

SETTINGS = {
    "sgd": ("optim.name=sgd", "optim.momentum=0.9"),
    "adamw": ("optim.name=adamw", "optim.lr=0.001"),
    "sam": ("optim.name=sam", "optim.rho=0.05"),
    "bf16": ("optim.name=sgd", "train.autocast=bf16"),
}


def _parts(tiny_cfg, *overrides):
    cfg = tiny_cfg("train.batch_size=32", *overrides)
    data = opposing_signals(n=128, seed=0)
    model = build_from_config(cfg.model, tuple(data.x.shape[1:]), data.num_classes, torch.device("cpu"),
                              torch.float32)
    return cfg, data, model


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_the_share_is_a_grid_value_and_the_runs_model_is_left_as_it_was(tiny_cfg, setting):
    cfg, data, model = _parts(tiny_cfg, *SETTINGS[setting])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    share = forward_share(model, get_loss(cfg.train.loss), data, cfg)
    assert share > 0 and quantize_share(share) == share
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_the_probe_and_the_step_are_timed_in_the_runs_precision(tiny_cfg, monkeypatch):
    """What the plan times is what the run computes: the probe and the step run in the run's precision context
    (bfloat16 autocast here), the step with the run's optimiser."""
    cfg, data, model = _parts(tiny_cfg, "train.autocast=bf16")
    entered, stepped = [], []
    real_precision, real_step = step_module.precision, step_module.optimizer_step

    @contextlib.contextmanager
    def spy_precision(c, device):
        with real_precision(c, device):
            entered.append(torch.is_autocast_enabled("cpu"))
            yield

    def spy_step(optimizer, backward):
        stepped.append(type(optimizer).__name__)
        real_step(optimizer, backward)

    monkeypatch.setattr(step_module, "precision", spy_precision)
    monkeypatch.setattr(step_module, "optimizer_step", spy_step)
    forward_share(model, get_loss(cfg.train.loss), data, cfg)
    assert entered and all(entered)
    assert stepped and set(stepped) == {"SGD"}


def test_one_quiet_moment_among_the_rounds_sets_the_share(tiny_cfg, monkeypatch):
    """Load only lengthens timings: with every probe but three slowed by 0.2 s, the plan is the quiet one's (a
    ratio of the fastest of two timings of each takes the slowed probe: a share of about 180 here)."""
    import time

    import oppsig.store.recorder as recorder

    cfg, data, model = _parts(tiny_cfg, "optim.name=sgd")
    real, calls = recorder.probe_losses, []

    def loaded(*args, **kwargs):
        calls.append(1)
        if len(calls) not in (4, 6, 8):
            time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(recorder, "probe_losses", loaded)
    share = forward_share(model, get_loss(cfg.train.loss), data, cfg, budget_s=30.0)
    assert share <= 4.0
    assert len(calls) == 10  # one untimed call and 9 rounds
