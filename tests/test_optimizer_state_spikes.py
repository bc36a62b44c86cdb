"""benchmarks/optimizer_state_spikes.py: Adam's state makes the loss spike on a one-dimensional quadratic after its
preconditioned sharpness passes the threshold, and not with a short beta2; the chosen setting is the config's."""

import importlib.util
from pathlib import Path

import numpy as np

from oppsig.config import load_config
from oppsig.signals.spikes import detect_spikes

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("optimizer_state_spikes", ROOT / "benchmarks" /
                                                  "optimizer_state_spikes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_long_beta2_spikes_after_the_preconditioned_sharpness_passes_the_threshold():
    B = _module()
    loss, ps, thr = B.quadratic(steps=1800, betas=(0.9, 0.99), eps=1e-12)
    spikes = [s for s in detect_spikes(loss) if s.height >= B.MIN_RISE]
    assert spikes, "Adam with beta2 0.99 and eps 1e-12 should spike on x^2/2"
    first_cross = int(np.flatnonzero(ps >= thr)[0])
    assert all(s.onset_step >= first_cross for s in spikes)  # no spike before the crossing
    assert spikes[0].onset_step - first_cross <= 100  # the first spike follows the crossing closely
    assert spikes[0].height > 5  # a loss many times its trend, not noise
    facts = B.spike_facts(np.arange(len(loss)), loss, np.arange(len(loss)), ps / thr, k=100)
    assert facts[0]["crossed"] and facts[0]["ratio_before"] < 1.0 <= facts[0]["ratio_at"]


def test_short_beta2_neither_passes_the_threshold_nor_spikes():
    B = _module()
    loss, ps, thr = B.quadratic(steps=1800, betas=(0.9, 0.9), eps=1e-12)
    assert (ps < thr).all()  # v_hat follows g^2: the preconditioned sharpness stays below the threshold
    assert detect_spikes(loss) == []
    assert loss[-1] < 1e-6 * loss[0]  # it trained: the loss fell by six orders of magnitude


def test_spike_facts_report_no_crossing_when_the_ratio_stays_below_one():
    B = _module()
    t = np.arange(300)
    loss = np.exp(-t / 200.0)
    loss[200] *= 4.0
    f = B.spike_facts(t, loss, t[::10], np.full(30, 0.4), k=50)
    assert len(f) == 1 and f[0]["peak"] == 200 and f[0]["rise"] > 2
    assert not f[0]["crossed"] and f[0]["lead"] is None and f[0]["ratio_at"] == 0.4


def test_state_spike_settings_are_the_config_and_plant_no_groups():
    B = _module()
    cfg = load_config(None, [*B.state_spike_settings(), "name=fc-tanh-adam-state-spikes"])
    assert cfg == load_config(B.CONFIG)
    assert cfg.data.name == "synthetic" and cfg.data.synthetic.pairs == ()
    assert cfg.optim.name == "adam" and cfg.optim.eps == 1e-12 and cfg.optim.betas[1] == 0.99999
    assert 64 <= cfg.train.batch_size <= 256 and cfg.curvature.preconditioned
