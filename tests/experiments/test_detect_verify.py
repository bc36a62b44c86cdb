"""Verification of a pair on the model, as ``oppsig detect`` runs it: certified values or failures with their cause."""

from types import SimpleNamespace

import numpy as np
import pytest

from oppsig.data import build_datasets
from oppsig.experiments.detect import _verify_at_spike
from oppsig.losses import get_loss
from oppsig.signals import SignalsResult, read_signals_json, write_signals_json
from oppsig.signals.text import verification_text
from oppsig.store import open_run, run_dataset
from oppsig.training import train


@pytest.fixture
def tiny_run(tiny_cfg):
    res = train(tiny_cfg("name=verify", "train.loss=mse", steps=8), progress=False)
    run = open_run(res.run_dir)
    data = build_datasets(run.config.data, seed=run.config.seed)
    return run, data, run_dataset(run, data[0])


def _check(run, data, examples, pair_spikes=(3,)):
    pair = SimpleNamespace(a=0, b=1, spikes=pair_spikes)
    spikes = {3: SimpleNamespace(onset_step=2, height=1.0)}
    groups = {0: np.arange(0, 20), 1: np.arange(20, 40)}
    return _verify_at_spike(run, data, examples, run.config, get_loss(run.config.train.loss), pair, groups, spikes)


def test_a_verification_carries_the_sharpness_bound_and_flag(tiny_run, tmp_path):
    run, data, examples = tiny_run
    v = _check(run, data, examples)
    assert v.step == 2 and np.isfinite(v.grad_cosine) and v.error is None
    assert v.sharpness > 0 and 0 < v.sharpness_error and v.eig_converged is True
    assert "sharpness" in verification_text(v) and "not converged" not in verification_text(v)
    # into signals.json and back
    res = SignalsResult(n_rows=1, n_examples=1, steps=np.zeros(1, np.int64), total_loss=np.ones(1), verifications=(v,))
    write_signals_json(res, tmp_path / "signals.json")
    back = read_signals_json(tmp_path / "signals.json").verifications[0]
    assert back.sharpness == pytest.approx(v.sharpness) and back.eig_converged is True


def test_verification_failures_are_recorded_with_their_cause(tiny_run, tmp_path):
    run, data, examples = tiny_run
    v = _check(run, data, examples, pair_spikes=())
    assert np.isnan(v.grad_cosine) and v.error == "the pair has no loss spike to verify at" and v.step is None
    for p in (run.path / "checkpoints").glob("step_*.pt"):
        p.unlink()
    v = _check(run, data, examples)
    assert np.isnan(v.grad_cosine) and v.step == 2 and v.error.startswith("replay failed: ")
    assert "kept no checkpoint at or before step 2" in v.error
    assert "not verified: replay failed" in verification_text(v)
    res = SignalsResult(n_rows=1, n_examples=1, steps=np.zeros(1, np.int64), total_loss=np.ones(1), verifications=(v,))
    write_signals_json(res, tmp_path / "signals.json")
    assert read_signals_json(tmp_path / "signals.json").verifications[0].error == v.error
