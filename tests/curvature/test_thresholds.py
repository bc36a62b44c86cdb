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
    with pytest.raises(OppsigError, match="one of gd, sgd"):
        optimizer_threshold("lion", 0.1)


def test_one_mapping_from_a_torch_optimiser():
    """``stability_of`` reads name and settings off the optimiser; oppsig's own optimisers and the configs agree."""
    import torch

    from oppsig.config import load_config
    from oppsig.curvature import Stability, stability, stability_of
    from oppsig.optim import OPTIMIZERS, SAM, SignSGD, SplitSGD, build_optimizer

    w = [torch.zeros(3, requires_grad=True)]
    assert stability_of(torch.optim.SGD(w, lr=0.1)) == Stability("sgd", pytest.approx(20.0), "sharpness")
    st = stability_of(torch.optim.SGD(w, lr=0.1, momentum=0.9, nesterov=True))
    assert st.threshold == pytest.approx(38.0 / 2.8) and st.against == "sharpness"
    assert stability_of(torch.optim.SGD(w, lr=0.1, momentum=0.9, dampening=0.5)).threshold == pytest.approx(76.0)
    for cls in (torch.optim.Adam, torch.optim.AdamW):
        st = stability_of(cls(w, lr=1e-3, betas=(0.8, 0.99)))
        assert st.threshold == pytest.approx(adam_threshold(1e-3, 0.8)) and st.against == "precond_sharpness"
    assert stability_of(SplitSGD(w, lr=0.1, momentum=0.9, dampening=0.9)).threshold == pytest.approx(380.0)
    assert stability_of(SAM(w, lr=0.1)) == Stability("sam", None, None)
    assert stability_of(SignSGD(w, lr=0.1)) == Stability("signsgd", None, None)
    for cls in (torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adamax, torch.optim.NAdam):
        st = stability_of(cls(w, lr=0.1))
        assert st.threshold is None and st.against is None and st.name == cls.__name__.lower()

    class Wrapped(torch.optim.Optimizer):  # as accelerate and Lightning wrap the user's optimiser
        def __init__(self, inner):
            self.optimizer = inner
            self.param_groups = inner.param_groups

    assert stability_of(Wrapped(torch.optim.Adam(w, lr=1e-3))).name == "adam"
    # oppsig train (by config name) and the callbacks (by optimiser) use the same thresholds
    for name in OPTIMIZERS:
        cfg = load_config(None, [f"optim.name={name}", "optim.lr=0.02", "optim.momentum=0.5"]).optim
        by_cfg = stability(name, cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening, nesterov=cfg.nesterov,
                           betas=cfg.betas)
        by_opt = stability_of(build_optimizer(cfg, w))
        assert (by_opt.threshold, by_opt.against) == (by_cfg.threshold, by_cfg.against), name
    assert optimizer_threshold("sam", 0.1) != optimizer_threshold("sam", 0.1)  # NaN: none


def test_callback_sharpness_prints_a_threshold_only_beside_its_sharpness():
    import torch

    from oppsig.integrations.record import sharpness_on
    from oppsig.optim import SAM

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    batch = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
    m = sharpness_on(model, batch, None, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    assert m["threshold"] == pytest.approx(38.0) and m["sharpness"] > 0
    for opt in (torch.optim.RMSprop(model.parameters(), lr=0.1), SAM(model.parameters(), lr=0.1),
                torch.optim.Adagrad(model.parameters(), lr=0.1)):
        m = sharpness_on(model, batch, None, opt)
        assert "threshold" not in m and m["sharpness"] > 0, type(opt).__name__
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert "threshold" not in sharpness_on(model, batch, None, adam)  # no Adam state: no preconditioned sharpness
    torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    adam.step()
    adam.zero_grad(set_to_none=True)
    m = sharpness_on(model, batch, None, adam)
    assert m["threshold"] == pytest.approx(adam_threshold(1e-3, 0.9))
    assert m["precond_sharpness"] > 0 and m["precond_sharpness"] != m["sharpness"]
