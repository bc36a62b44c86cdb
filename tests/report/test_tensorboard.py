"""TensorBoard event files of a run (the optional ``tensorboard`` extra), read back."""

import math

import numpy as np
import pytest

from oppsig.cli.main import main
from oppsig.report import write_tensorboard
from oppsig.report.summary import load_signals
from oppsig.store import open_run
from tests.report.test_report import add_fake_signals


def test_without_tensorboard_nothing_is_written(run_copy, monkeypatch):
    import oppsig.report.tensorboard as tb

    monkeypatch.setattr(tb, "available", lambda: False)
    assert write_tensorboard(open_run(run_copy)) is None
    assert not (run_copy / "tb").exists()


def test_scalars_and_group_losses_read_back(run_copy, capsys):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'oppsig[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    add_fake_signals(run_copy)  # groups 0 (rows 0-9) and 1 (rows 10-19)
    assert main(["report", str(run_copy), "--tensorboard"]) == 0
    assert f"tensorboard: {run_copy / 'tb'}" in capsys.readouterr().out
    acc = EventAccumulator(str(run_copy / "tb"))
    acc.Reload()

    def scalars(tag):
        ev = acc.Scalars(tag)
        return [e.step for e in ev], np.array([e.value for e in ev])

    run = open_run(run_copy)
    m = run.metrics
    assert "step" not in acc.Tags()["scalars"]
    for key in ("loss", "accuracy", "sharpness"):
        keep = [i for i, v in enumerate(m[key]) if math.isfinite(float(v))]
        steps, vals = scalars(key)
        assert steps == [int(m["step"][i]) for i in keep]  # every finite value, at its step
        assert np.allclose(vals, [float(m[key][i]) for i in keep], rtol=1e-6)  # float32 in the event file
    assert len(scalars("sharpness")[0]) == 3  # measured every 8 of 24 steps
    L = np.asarray(run.losses, dtype=np.float64)
    sig = load_signals(run_copy)
    for g in sig.groups:
        steps, vals = scalars(f"group_loss/{g.id}")
        assert steps == run.steps.tolist()
        assert np.allclose(vals, L[:, list(g.members)].mean(1), rtol=1e-6)
