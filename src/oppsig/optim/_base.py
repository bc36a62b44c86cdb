"""What oppsig's own optimisers share: checked parameter groups, the closure, the decayed gradient."""

from __future__ import annotations

from typing import Callable, Iterable

import torch


class CheckedOptimizer(torch.optim.Optimizer):
    """A :class:`torch.optim.Optimizer` whose defaults and added groups pass :meth:`check_group`.

    Subclasses define ``check_group(group)`` (raising ``ValueError`` that names
    the bad hyperparameter) and set ``name`` for error messages.
    """

    name = "optimizer"

    def __init__(self, params: Iterable, defaults: dict) -> None:
        self.check_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        self.check_group(param_group)
        super().add_param_group(param_group)

    @staticmethod
    def check_group(group: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def closure_loss(closure: Callable[[], float] | None):
        """The loss re-evaluated by ``closure`` with gradients enabled (None without a closure)."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def decayed_grad(self, p: torch.Tensor, weight_decay: float) -> torch.Tensor:
        """``p.grad`` plus the coupled L2 term ``weight_decay * p``.

        Raises:
            RuntimeError: for a sparse gradient.
        """
        g = p.grad
        if g.is_sparse:
            raise RuntimeError(f"{self.name} does not support sparse gradients")
        return g.add(p, alpha=weight_decay) if weight_decay != 0 else g
