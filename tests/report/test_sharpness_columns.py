"""The report's sharpness columns compare the sharpness each threshold is for, and count unconverged values."""

import math
from types import SimpleNamespace

import pytest

from oppsig.report.summary import run_summary


def _run(optim, **metrics):
    return SimpleNamespace(config=SimpleNamespace(optim=SimpleNamespace(name=optim)), meta={},
                           metrics={"loss": [1.0, 0.5, 0.4], "step": [0, 1, 2], **metrics})


def test_adam_ratio_uses_the_preconditioned_sharpness():
    m = dict(sharpness=[500.0, 900.0, 1000.0], precond_sharpness=[10.0, 30.0, 40.0], threshold=[38.0, 38.0, 38.0],
             **{"converged/sharpness": [1.0, 0.0, 1.0], "converged/precond_sharpness": [1.0, 1.0, 1.0]})
    s = run_summary(_run("adam", **m))
    assert s["sharpness measure"] == "preconditioned"
    assert s["max sharpness / threshold"] == pytest.approx(40 / 38) and s["time at EoS"] == pytest.approx(1 / 3)
    assert s["max sharpness (raw)"] == 1000.0 and s["max preconditioned sharpness"] == 40.0
    assert s["unconverged sharpness"] == 1
    # the same metrics under GD: the raw sharpness against 2/lr
    g = run_summary(_run("gd", **m))
    assert g["sharpness measure"] == "raw" and g["max sharpness / threshold"] == pytest.approx(1000 / 38)


def test_adam_without_the_preconditioned_sharpness_gives_no_ratio():
    s = run_summary(_run("adamw", sharpness=[500.0, 900.0, 1000.0], threshold=[38.0, 38.0, 38.0]))
    assert math.isnan(s["max sharpness / threshold"]) and math.isnan(s["time at EoS"])
    assert s["max sharpness (raw)"] == 1000.0 and s["unconverged sharpness"] == 0
