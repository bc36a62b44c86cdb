"""Optimisers of a run: full-batch GD, SGD (momentum, dampening, Nesterov), Adam/AdamW, SplitSGD, SAM, sign-SGD;
lr warm-up.

``gd`` and ``sgd`` share the same update rule (``torch.optim.SGD``); they differ
in the data each step sees: every example (``gd``) or a mini-batch (``sgd``).
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..errors import ConfigError
from .sam import SAM
from .signsgd import SignSGD
from .splitsgd import SplitSGD

OPTIMIZERS = ("gd", "sgd", "adam", "adamw", "splitsgd", "sam", "signsgd")


def build_optimizer(cfg, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimiser of an :class:`~oppsig.config.OptimConfig`.

    Raises:
        ConfigError: for an unknown name (the message lists the valid ones).
    """
    params = list(params)
    if cfg.name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "splitsgd":
        return SplitSGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening, split_lr=cfg.split_lr,
                        threshold=cfg.split_threshold, split=cfg.split_rule, beta2=cfg.betas[1], eps=cfg.eps,
                        weight_decay=cfg.weight_decay)
    if cfg.name == "sam":
        return SAM(params, rho=cfg.rho, adaptive=cfg.sam_adaptive, lr=cfg.lr, momentum=cfg.momentum,
                   dampening=cfg.dampening, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.name == "signsgd":
        return SignSGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")


def lr_at(cfg, step: int) -> float:
    """Learning rate at ``step``: constant, after a linear warm-up over ``warmup_steps`` steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def is_full_batch(cfg) -> bool:
    """Whether every step sees every training example."""
    return cfg.name == "gd"


__all__ = ["OPTIMIZERS", "build_optimizer", "lr_at", "is_full_batch", "SAM", "SignSGD", "SplitSGD"]
