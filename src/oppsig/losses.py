"""Per-example losses.

Each loss maps model outputs ``(B, C)`` and integer targets ``(B,)`` to a
per-example loss ``(B,)``; training uses their mean over the data set. Language
models pass outputs ``(B, T, C)`` and targets ``(B, T)`` and get ``(B, T)``.

- ``ce``: cross-entropy, ``-log softmax(z)[y]``.
- ``mse``: squared error against the one-hot target, ``0.5 * ||z - e_y||^2``
  (the convention of the edge-of-stability literature, where GD's stability
  threshold on the mean loss is ``2 / lr``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy. ``logits`` (..., C), ``target`` (...) -> (...)."""
    c = logits.shape[-1]
    out = F.cross_entropy(logits.reshape(-1, c), target.reshape(-1), reduction="none")
    return out.reshape(target.shape)


def mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example ``0.5 * ||logits - onehot(target)||^2``. (..., C), (...) -> (...)."""
    onehot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
    return 0.5 * (logits - onehot).pow(2).sum(-1)


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "mse": mse}


def get_loss(name: str) -> LossFn:
    """The per-example loss called ``name`` ("ce" or "mse").

    Raises:
        ConfigError: for an unknown name; the message lists the valid ones.
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; valid: {', '.join(sorted(LOSSES))}") from None


def correct(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example 0/1 correctness of the arg-max prediction, as a bool tensor."""
    return logits.argmax(-1) == target
