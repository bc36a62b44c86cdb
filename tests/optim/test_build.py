"""``build_optimizer``: each name gives its class with the config's hyperparameters; ``lr_at``'s warm-up."""

import types

import pytest
import torch

from oppsig.config import load_config
from oppsig.errors import ConfigError
from oppsig.optim import OPTIMIZERS, SAM, SignSGD, SplitSGD, build_optimizer, lr_at

# hyperparameters unlike any default, so that a dropped or swapped one shows
HYPER = ["optim.lr=0.0123", "optim.momentum=0.7", "optim.dampening=0.3", "optim.weight_decay=0.004",
         "optim.betas=[0.8, 0.95]", "optim.eps=1e-6", "optim.rho=0.2", "optim.sam_adaptive=true",
         "optim.split_threshold=2.5", "optim.split_lr=0.02", "optim.split_rule=tensor"]
SGD_LIKE = {"lr": 0.0123, "momentum": 0.7, "dampening": 0.3, "nesterov": False, "weight_decay": 0.004}
ADAM_LIKE = {"lr": 0.0123, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.004}
EXPECTED = {
    "gd": (torch.optim.SGD, SGD_LIKE),
    "sgd": (torch.optim.SGD, SGD_LIKE),
    "adam": (torch.optim.Adam, ADAM_LIKE),
    "adamw": (torch.optim.AdamW, ADAM_LIKE),
    "splitsgd": (SplitSGD, {"lr": 0.0123, "momentum": 0.7, "dampening": 0.3, "split_lr": 0.02, "threshold": 2.5,
                            "split": "tensor", "beta2": 0.95, "eps": 1e-6, "weight_decay": 0.004}),
    "sam": (SAM, {**SGD_LIKE, "rho": 0.2, "adaptive": True}),
    "signsgd": (SignSGD, {"lr": 0.0123, "momentum": 0.7, "weight_decay": 0.004}),
}


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def test_every_name_is_covered():
    assert set(EXPECTED) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_name_builds_its_class_with_the_configs_hyperparameters(name):
    cfg = load_config(None, [f"optim.name={name}", *HYPER]).optim
    m = model()
    opt = build_optimizer(cfg, m.parameters())
    cls, want = EXPECTED[name]
    assert type(opt) is cls
    (group,) = opt.param_groups
    assert [p for p in group["params"]] == list(m.parameters())  # every parameter, the model's own tensors
    for k, v in want.items():
        got = tuple(group[k]) if isinstance(v, tuple) else group[k]
        assert got == (pytest.approx(v) if isinstance(v, (float, tuple)) else v), (name, k, got)
    if name == "sam":
        assert type(opt.base_optimizer) is torch.optim.SGD


def test_nesterov_reaches_sgd_and_sam():
    for name in ("sgd", "sam"):
        cfg = load_config(None, [f"optim.name={name}", "optim.momentum=0.9", "optim.nesterov=true"]).optim
        assert build_optimizer(cfg, model().parameters()).param_groups[0]["nesterov"] is True


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        build_optimizer(types.SimpleNamespace(name="lion"), model().parameters())
    assert "'lion'" in str(e.value) and all(n in str(e.value) for n in OPTIMIZERS)
    with pytest.raises(ConfigError, match="optim.name") as e:  # refused when the config is read, too
        load_config(None, ["optim.name=lion"])
    assert all(n in str(e.value) for n in OPTIMIZERS)


def test_warmup_is_linear_then_constant():
    cfg = load_config(None, ["optim.lr=0.2", "optim.warmup_steps=4"]).optim
    assert [lr_at(cfg, s) for s in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert lr_at(cfg, 1000) == 0.2
    flat = load_config(None, ["optim.lr=0.2"]).optim  # warmup_steps 0: the lr from the first step
    assert lr_at(flat, 0) == lr_at(flat, 7) == 0.2


def test_training_steps_with_the_warmed_up_lr(tiny_cfg):
    from oppsig.store import open_run
    from oppsig.training import train

    res = train(tiny_cfg("optim.warmup_steps=4", steps=6), progress=False)  # optim.lr=0.05
    lrs = open_run(res.run_dir).metrics["lr"]
    assert lrs == pytest.approx([0.0125, 0.025, 0.0375, 0.05, 0.05, 0.05])
