import copy
import io
import math

import pytest
import torch

from oppsig.config import load_config
from oppsig.curvature import CurvatureHook
from oppsig.curvature.schedule import AdaptiveSchedule, FixedSchedule, make_schedule
from oppsig.data import ArrayDataset
from oppsig.errors import ConfigError, OppsigError
from oppsig.training.hooks import TrainState

from ._reference import problem, tiny_data

TAU = 100.0


def drive(schedule, sharpness, loss, steps, start=0, step_sq=None, lr=0.02):
    """Run a schedule over synthetic sequences as the hook does; the steps it measures."""
    measured = []
    for t in range(start, steps):
        if schedule.due(t):
            measured.append(t)
            schedule.observe_measurement(t, sharpness(t), 1e-3 * sharpness(t), TAU)
        schedule.observe_step(t, loss(t), None if step_sq is None else step_sq(t), lr)
    return measured


def smooth(t):
    return 2.0 * math.exp(-t / 500)


def test_backs_off_when_flat_and_measures_every_grid_step_near_the_threshold():
    s = AdaptiveSchedule(min_every=5, max_every=100, margin=0.1)
    flat = drive(s, lambda t: 40.0, smooth, 1000)
    gaps = [b - a for a, b in zip(flat, flat[1:])]
    assert len(flat) <= 14 and gaps[-1] == 100 and all(t % 5 == 0 for t in flat)
    near = drive(AdaptiveSchedule(5, 100, 0.1), lambda t: 97.0 + 2 * math.sin(t / 7), smooth, 1000)
    assert near == list(range(0, 1000, 5))  # inside the band: every grid step
    above = drive(AdaptiveSchedule(5, 100, 0.1), lambda t: 150.0, smooth, 1000)  # far above and flat: backs off
    assert len(above) <= 14


def test_rising_sharpness_is_measured_more_often_as_it_nears_the_threshold():
    s = AdaptiveSchedule(min_every=5, max_every=100, margin=0.1)
    rising = lambda t: 20.0 + 0.1 * t  # noqa: E731 - in the band [90, 110] from step 700, 100 at step 800
    steps = drive(s, rising, smooth, 1000)
    early = [t for t in steps if t < 400]
    first_in_band = min(t for t in steps if t >= 700)
    assert len(early) <= 8 and first_in_band < 800
    assert set(range(first_in_band, 900, 5)) <= set(steps)  # in the band: every grid step, the crossing included
    assert len([t for t in steps if t > 900]) <= 4  # above the band, moving away: backs off again


def test_loss_rise_below_the_band_moves_the_next_measurement_forward_above_it_not():
    spike = lambda t: smooth(t) * (3.0 if t == 333 else 1.0)  # noqa: E731
    rise = lambda t: smooth(t) * (1.01 if t == 333 else 1.0)  # noqa: E731 - a 1% rise
    for loss in (spike, rise):
        steps = drive(AdaptiveSchedule(min_every=5, max_every=100, margin=0.1), lambda t: 40.0, loss, 600)
        assert 335 in steps and 340 not in steps
        steps = drive(AdaptiveSchedule(min_every=5, max_every=100, margin=0.1), lambda t: 150.0, loss, 600)
        assert 335 not in steps  # far above the threshold: the edge of stability's own oscillation
    assert 335 not in drive(AdaptiveSchedule(min_every=5, max_every=100, margin=0.1), lambda t: 40.0, smooth, 600)


def test_curvature_along_the_gd_step_triggers_below_the_threshold():
    # f(t+1) - f(t) = -|d|^2 / lr + c / 2 |d|^2 with c = 95 (>= 0.9 * 100) at step 333 only, else c = 20
    lr, dsq = 0.02, 1e-4
    f = [2.0]
    for t in range(600):
        c = 95.0 if t == 332 else 20.0
        f.append(f[-1] - dsq / lr + c / 2 * dsq)
    s = AdaptiveSchedule(min_every=5, max_every=100, margin=0.1)
    steps = drive(s, lambda t: 40.0, lambda t: f[t], 600, step_sq=lambda t: dsq, lr=lr)
    assert 335 in steps and all(f[t + 1] < f[t] for t in range(600))  # the loss never rose: the curvature told
    s = AdaptiveSchedule(min_every=5, max_every=100, margin=0.1)
    assert 335 not in drive(s, lambda t: 40.0, lambda t: f[t], 600)  # without |d|^2 it is not seen


def test_schedule_state_resumes_to_the_same_steps():
    shape = lambda t: 30.0 + 0.12 * t  # noqa: E731
    loss = lambda t: smooth(t) * (2.0 if t % 97 == 0 else 1.0)  # noqa: E731
    whole = drive(AdaptiveSchedule(5, 100, 0.1), shape, loss, 900)
    first = AdaptiveSchedule(5, 100, 0.1)
    head = drive(first, shape, loss, 412)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # as a checkpoint holds it
    buf.seek(0)
    second = AdaptiveSchedule(5, 100, 0.1)
    second.load_state_dict(torch.load(buf, weights_only=True))
    assert head + drive(second, shape, loss, 900, start=412) == whole and len(set(whole)) > 20
    with pytest.raises(OppsigError, match="schedule"):
        second.load_state_dict(FixedSchedule(25).state_dict())


def _state(overrides, lr):
    model, batches, loss = problem("mlp")
    x, y = tiny_data((6,), n=12)
    data = ArrayDataset(x=x, y=y, index=torch.arange(12), classes=("a", "b", "c"))
    cfg = load_config(None, ["optim.name=gd", f"optim.lr={lr}", "curvature.tol=1e-6", "curvature.max_iter=60",
                             "curvature.projection=false"] + overrides)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return TrainState(step=0, model=model, optimizer=opt, config=cfg, train_data=data, loss_fn=loss,
                      device=torch.device("cpu"), lr=lr)


def _train(state, hook, start, stop, measured):
    for t in range(start, stop):
        state.step, state.metrics = t, {}
        hook.on_step_start(state)
        loss = state.loss_fn(state.model(state.train_data.x), state.train_data.y).mean()
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        state.metrics["loss"] = float(loss.detach())
        hook.on_step_end(state)
        if "sharpness" in state.metrics:
            measured.append((t, state.metrics["sharpness"], state.metrics["err/sharpness"]))


def test_hook_resumed_run_measures_at_the_same_steps():
    over = ["curvature.every=10", "curvature.schedule=adaptive", "curvature.min_every=2", "curvature.margin=0.3"]
    lr = 0.8
    state = _state(over, lr)
    hook = CurvatureHook(state.config.curvature)
    whole: list = []
    _train(state, hook, 0, 60, whole)
    state2 = _state(over, lr)
    first = CurvatureHook(state2.config.curvature)
    part: list = []
    _train(state2, first, 0, 23, part)
    saved = copy.deepcopy(first.state_dict())
    second = CurvatureHook(state2.config.curvature)
    second.load_state_dict(saved)
    _train(state2, second, 23, 60, part)
    steps = [t for t, _, _ in whole]
    assert [t for t, _, _ in part] == steps
    assert len(steps) < 30 and len({b - a for a, b in zip(steps, steps[1:])}) > 1  # not every grid step
    for (_, a, ea), (_, b, eb) in zip(whole, part):  # every value a certified solve
        assert abs(a - b) <= ea + eb + 1e-9 and ea > 0


def test_config_validation_and_default():
    c = load_config(None, ["curvature.every=25"]).curvature
    assert c.schedule == "fixed" and isinstance(make_schedule(c), FixedSchedule)
    a = make_schedule(load_config(None, ["curvature.every=25", "curvature.schedule=adaptive"]).curvature)
    assert (a.min_every, a.max_every, a.first) == (5, 200, 25)
    bad = [("curvature.schedule=weekly", "curvature.schedule"), ("curvature.min_every=0", "curvature.min_every"),
           ("curvature.max_every=3", "curvature.max_every"), ("curvature.margin=1.0", "curvature.margin")]
    for over, key in bad:
        with pytest.raises(ConfigError, match=key):
            load_config(None, ["curvature.every=25", over])
    with pytest.raises(ConfigError, match="curvature.every"):  # its longest interval, 8 x 1, below min_every
        load_config(None, ["curvature.every=1", "curvature.schedule=adaptive", "curvature.min_every=10"])
    with pytest.raises(OppsigError, match="min_every"):
        AdaptiveSchedule(min_every=10, max_every=5)


def test_fixed_hook_unchanged_and_a_changed_schedule_starts_afresh():
    fixed = CurvatureHook(load_config(None, ["curvature.every=25"]).curvature)
    assert [t for t in range(101) if fixed.is_due(t)] == [0, 25, 50, 75, 100]
    adaptive = CurvatureHook(load_config(None, ["curvature.every=25", "curvature.schedule=adaptive"]).curvature)
    adaptive.load_state_dict(fixed.state_dict())  # a run resumed with another schedule
    assert adaptive.is_due(0) and not adaptive.is_due(3)
