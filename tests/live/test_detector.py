"""The live spike detector on planted streams: one event per spike (its decaying tail included), no event at a
step lr drop, a planted spike found at once under mini-batch noise, one event for a divergence, and a
resumed detector that gives the verdicts of an uninterrupted one."""

import json

import numpy as np
import pytest

from oppsig.live import SpikeDetector


def _noisy(n, seed, noise=0.05, rate=150.0):
    rng = np.random.default_rng(seed)
    return 2.0 * np.exp(-np.arange(n) / rate) * np.exp(noise * rng.standard_normal(n))


def _fires(loss, det=None):
    det = SpikeDetector() if det is None else det
    return [t for t, v in enumerate(loss) if det.update(t, float(v)) is not None]


def _tail(width=16, height=3.0):
    """A spike that rises in 2 steps and decays geometrically to 5 % of its excess over ``width`` steps."""
    p = np.ones(width)
    p[:2] = [0.4, 0.8]
    p[2:] = 0.05 ** (np.arange(width - 2) / (width - 3))
    return 1 + (height - 1) * p


@pytest.mark.parametrize("seed", range(5))
def test_the_decaying_tail_of_a_spike_fires_once(seed):
    loss = _noisy(400, seed)
    loss[200:216] *= _tail()
    # one event, at the rise; none on the tail nor as it leaves the baseline's window
    assert _fires(loss[:300]) == [200]


@pytest.mark.parametrize("seed", range(5))
def test_a_step_lr_drop_does_not_fire(seed):
    loss = _noisy(400, seed)
    loss[250:] *= np.r_[0.7, np.full(149, 0.45)]  # the loss falls to 0.45 of its level within two steps
    assert _fires(loss) == []


@pytest.mark.parametrize("seed", range(10))
def test_a_planted_spike_under_noise_fires_within_a_step(seed):
    loss = _noisy(300, seed, noise=0.08)
    loss[180] *= 2.0  # 0.69 in log: 8.7 noise standard deviations
    fired = _fires(loss)
    assert len(fired) == 1 and 0 <= fired[0] - 180 <= 1


def test_a_divergence_is_one_event():
    loss = _noisy(500, 0)
    loss[300:] *= np.exp(0.05 * np.arange(200))  # 5 % more every step, up to e^10
    fired = _fires(loss)  # it crosses 4 noise scales (and 20 %) within a few steps, then stays one event
    assert len(fired) == 1 and 300 <= fired[0] <= 312


def test_state_round_trip_mid_spike_gives_identical_verdicts():
    loss = _noisy(400, 3)
    loss[200:216] *= _tail()
    loss[300] *= 2.5
    a = SpikeDetector()
    assert _fires(loss[:205], a) == [200] and a.in_spike  # stopped inside the spike
    b = SpikeDetector()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    va = [a.update(t, float(loss[t])) for t in range(205, 400)]
    vb = [b.update(t, float(loss[t])) for t in range(205, 400)]
    assert va == vb
    assert [205 + i for i, v in enumerate(va) if v is not None] == [300]


@pytest.mark.parametrize("n", [5, 6, 31, 32, 124])
def test_the_baseline_and_scale_are_numpys_medians_exactly(n):
    """The detector's medians (sorted lists, run at every training step) are numpy's, bit for bit: the baseline,
    the residual and the scale of a history equal the same definitions written with ``np.median``."""
    import math

    from oppsig.config import LiveConfig
    from oppsig.live import spike_test, trend_baseline

    rng = np.random.default_rng(n)
    y = np.cumsum(rng.standard_normal(n)) * 0.1 + np.where(np.arange(n) > n // 2, -1.0, 0.0)

    def slope(v):
        h = len(v) // 2
        return float(np.median(v[-h:]) - np.median(v[:h])) / (len(v) - h)

    def line(v):
        return float(np.median(v)) + min(slope(v), 0.0) * (len(v) + 1) / 2

    base = max(line(y), min(float(np.median(y)), line(y[-max(5, n // 4):])))
    assert trend_baseline(y) == base
    dev = y - (np.median(y) + slope(y) * (np.arange(n) - (n - 1) / 2))
    scale = max(1.4826 * float(np.median(np.abs(dev - np.median(dev)))), 1e-6)
    s = LiveConfig()
    r, sc, thr = spike_test(1.7, y, s)
    assert (r, sc, thr) == (math.log(1.7) - base, scale, max(s.z * scale, math.log1p(s.min_rise)))
    res = rng.standard_normal(n + 3)
    _, sc2, _ = spike_test(1.7, y, s, res)
    assert sc2 == max(1.4826 * float(np.median(np.abs(res - np.median(res)))), 1e-6)
