"""Stability thresholds of the optimisers."""

import math

import pytest

from oppsig.curvature import adam_threshold, gd_threshold, momentum_threshold, optimizer_threshold
from oppsig.errors import OppsigError


def test_thresholds():
    assert gd_threshold(0.02) == pytest.approx(100.0)
    assert momentum_threshold(0.1, 0.9) == pytest.approx(38.0)
    assert momentum_threshold(0.1, 0.0) == pytest.approx(gd_threshold(0.1))
    assert momentum_threshold(0.1, 0.9, nesterov=True) == pytest.approx(38.0 / 2.8)
    assert adam_threshold(1e-3, 0.9) == pytest.approx(38000.0)
    assert optimizer_threshold("gd", 0.05) == pytest.approx(40.0)
    assert optimizer_threshold("sgd", 0.1, momentum=0.9, dampening=0.5) == pytest.approx(76.0)
    assert optimizer_threshold("adamw", 1e-3, betas=(0.9, 0.999)) == pytest.approx(38000.0)
    assert optimizer_threshold("gd", 0.0) == math.inf
    with pytest.raises(OppsigError, match="lr"):
        gd_threshold(0.0)
    with pytest.raises(OppsigError, match="beta"):
        momentum_threshold(0.1, 1.0)
    with pytest.raises(OppsigError, match="gd, sgd"):
        optimizer_threshold("lion", 0.1)
