"""benchmarks/remedies.py: ZClip's clipping through the optimiser's pre-step hook, spikes and recovery, divergence."""

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def _module():
    return SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "remedies.py")))


def _step(opt, p, grad):
    p.grad = grad.clone()
    opt.step()
    return p.grad


def test_zclip_clips_an_outlying_gradient_norm_to_its_adaptive_threshold_before_the_update():
    R = _module()
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=0.0)
    z = R.ZClip()
    z.on_train_start(SimpleNamespace(optimizer=opt))
    rng = np.random.default_rng(0)
    norms = 1.0 + 0.05 * rng.standard_normal(40)
    for k, n in enumerate(norms):
        z.on_step_start(SimpleNamespace(step=k))
        g = _step(opt, p, torch.full((4,), n / 2))  # norm n
        assert abs(float(g.norm()) - n) < 1e-5  # ordinary norms pass unchanged
    mean, std = z.mean, z.var ** 0.5
    z.on_step_start(SimpleNamespace(step=40))
    g = _step(opt, p, torch.full((4,), 5.0))  # norm 10: far above
    zscore = (10.0 - mean) / (std + z.eps)
    assert z.clipped == [40]
    assert abs(float(g.norm()) - (mean + 2.5 ** 2 * std / zscore)) < 1e-4
    assert float(g.norm()) < 1.5


def test_spikes_and_recovery_counts_steps_back_to_the_baseline_and_none_when_the_loss_stays_up():
    R = _module()
    rng = np.random.default_rng(1)
    loss = 1.0 + 0.01 * rng.standard_normal(300)
    loss[150:154] = [3.0, 2.0, 1.5, 1.2]  # the median of the 5 losses from step 152 on is back within 10%
    (s,) = R.spikes_and_recovery(loss)
    assert s["step"] == 150 and s["recover"] == 2
    up = loss.copy()
    up[150:] = 3.0 + 0.01 * rng.standard_normal(150)  # a jump that stays
    (s,) = R.spikes_and_recovery(up)
    assert s["step"] == 150 and s["recover"] is None


def test_diverged_marks_a_non_finite_loss_and_a_stretch_above_the_level():
    R = _module()
    ok = np.full(600, 1.0)
    assert R.diverged(ok, 2.5, error=False) is None
    assert R.diverged(ok[:300], 2.5, error=True) == 300
    bad = ok.copy()
    bad[400:] = 3.0
    assert R.diverged(bad, 2.5, error=False) == 437  # steps 388-437: 38 at 3.0, mean 2.52
