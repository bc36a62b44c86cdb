"""Sign-SGD and signum: every coordinate moves by exactly ``lr`` (or not at all).

Definition. With gradient ``g`` (plus ``weight_decay * p``, coupled L2):

- ``momentum = 0`` (sign-SGD): ``p -= lr * sign(g)``;
- ``momentum = beta > 0`` (signum): ``m_t = beta * m_{t-1} + (1 - beta) * g_t``
  with ``m_0 = 0``, and ``p -= lr * sign(m_t)``.

``sign(0) = 0``: a coordinate with zero gradient (or zero momentum) does not move.

Why here. It is the extreme of per-coordinate normalisation: Adam with
``beta1 = beta2 = 0`` and ``eps = 0`` is sign-SGD. A step across a sharp,
narrow valley is then ``lr`` whatever the gradient's size, so outsized
gradients from opposing signals cannot throw the parameters far; but neither
can the step shrink where the curvature is high, so near a minimum it keeps
jumping by ``lr`` (no convergence at a constant ``lr``). A reference point for
:class:`~oppsig.optim.splitsgd.SplitSGD` and Adam, not a recommended trainer.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from ._base import CheckedOptimizer


class SignSGD(CheckedOptimizer):
    """Sign-SGD (``momentum=0``) or signum (``momentum > 0``).

    Args:
        params: parameters or parameter groups.
        lr: the size of every coordinate's step, ``>= 0``.
        momentum: ``beta`` in ``[0, 1)`` of the averaged gradient whose sign is taken.
        weight_decay: coupled L2 penalty added to the gradient, ``>= 0``.

    Raises:
        ValueError: an invalid hyperparameter (the message names it).
        RuntimeError: from :meth:`step`, for a sparse gradient.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
        >>> opt = SignSGD([w], lr=0.1)
        >>> (w * torch.tensor([30.0, -0.01, 0.0])).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()
        tensor([ 0.9000, -1.9000,  0.5000])
    """

    name = "SignSGD"

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @staticmethod
    def check_group(group: dict) -> None:
        _validate(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One update; ``closure`` (optional) re-evaluates the loss with gradients and returns it."""
        loss = self.closure_loss(closure)
        for group in self.param_groups:
            _validate(group)
            lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self.decayed_grad(p, wd)
                if beta != 0:
                    st = self.state[p]
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    buf = st["momentum_buffer"]
                    buf.mul_(beta).add_(g, alpha=1 - beta)
                    g = buf
                p.add_(torch.sign(g), alpha=-lr)
        return loss


def _validate(group: dict) -> None:
    def bad(name: str, what: str) -> None:
        raise ValueError(f"SignSGD: {name} {what} (got {group[name]!r})")

    for name in ("lr", "momentum", "weight_decay"):
        if name in group:
            v = group[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(name, "must be a finite number")
    if "lr" in group and group["lr"] < 0:
        bad("lr", "must be >= 0")
    if "momentum" in group and not 0 <= group["momentum"] < 1:
        bad("momentum", "must lie in [0, 1)")
    if "weight_decay" in group and group["weight_decay"] < 0:
        bad("weight_decay", "must be >= 0")


__all__ = ["SignSGD"]
