"""SAM: sharpness-aware minimisation, in the standard two-gradient form.

Definition. With ``g = grad L(w)`` the gradient over all parameters (every
group) and ``||.||`` the Euclidean norm over all of them, one SAM step is

1. :meth:`SAM.first_step`: remember ``w`` and move to the perturbed point
   ``w + e`` with ``e = rho * g / ||g||`` (``e = 0`` when ``g = 0``); with
   ``adaptive=True`` (ASAM) ``e = rho * |w|**2 * g / || |w| * g ||``, all
   products elementwise;
2. recompute the gradient ``g' = grad L(w + e)`` (the caller's job, or the
   closure's in :meth:`SAM.step`);
3. :meth:`SAM.second_step`: restore ``w`` exactly (a saved copy, not
   ``w + e - e``) and apply the base optimiser's update with ``g'`` in place of
   ``g`` (``w -= lr * g'`` for plain SGD; momentum, dampening, Nesterov and
   weight decay act on ``g'`` as usual).

``rho`` is per parameter group; the norm is global. ``rho = 0`` makes SAM the
base optimiser (at twice the gradient cost).

Relation to opposing signals: SAM steps with the gradient at the nearby point
where the loss is highest to first order, which penalises sharp directions;
the paper connects its effect to the same narrow valleys that opposing signals
create. It is here as a reference point, not a claim that it removes them.

Limits: two gradient evaluations per step; the training loop must supply the
second one (``optimizer.step()`` without a closure raises); the base
optimiser shares this optimiser's ``param_groups`` and ``state``, so its state
(momentum buffers) is part of :meth:`state_dict`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around a base optimiser (default :class:`torch.optim.SGD`).

    Args:
        params: parameters or parameter groups.
        base_optimizer: the optimiser class that makes the update at the perturbed gradient.
        rho: radius of the perturbation, ``>= 0``.
        adaptive: ASAM's scale-invariant perturbation (``|w|``-weighted).
        **base_kwargs: hyperparameters of the base optimiser (``lr``, ``momentum``, ``dampening``, ...).

    Raises:
        ValueError: ``rho`` or ``lr`` negative or not finite (other base hyperparameters: the base
            optimiser's own check, e.g. ``Invalid momentum value``).
        TypeError: ``base_optimizer`` is not a :class:`torch.optim.Optimizer` class.
        RuntimeError: :meth:`step` without a closure; :meth:`second_step` before :meth:`first_step`.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> opt = SAM([w], rho=0.5, lr=0.1)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = 0.5 * (w ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> opt.step(closure).item()  # loss at w; the update used the gradient at w + 0.5 * w / ||w||
        12.5
        >>> w.detach()  # w - 0.1 * (w + 0.5 * w / 5)
        tensor([2.6700, 3.5600])
    """

    def __init__(
        self,
        params: Iterable,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs,
    ) -> None:
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            raise TypeError(f"SAM: base_optimizer must be a torch.optim.Optimizer class (got {base_optimizer!r})")
        _check_rho(rho)
        lr = base_kwargs.get("lr", 0.0)
        if not isinstance(lr, torch.Tensor) and (isinstance(lr, bool) or not isinstance(lr, (int, float))
                                                 or not (math.isfinite(lr) and lr >= 0)):
            raise ValueError(f"SAM: lr must be a finite number >= 0 (got {lr!r})")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.defaults = {**self.base_optimizer.defaults, **self.defaults}
        self._link()
        self._origin: dict[torch.Tensor, torch.Tensor] = {}

    def _link(self) -> None:
        # one list of groups and one state for both: the base's momentum is saved with SAM's state_dict
        self.base_optimizer.param_groups = self.param_groups
        self.base_optimizer.state = self.state

    def add_param_group(self, param_group: dict) -> None:
        _check_rho(param_group.get("rho", 0.0))
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._link()
        self._origin = {}

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save the parameters and move them to ``w + e`` (see the module docstring)."""
        if self._origin:
            raise RuntimeError("SAM.first_step called twice; call second_step() in between")
        pairs = [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not pairs:
            return
        device = pairs[0][1].device
        parts = []
        for group, p in pairs:
            _check_rho(group["rho"])
            d = p.grad * p.abs() if group["adaptive"] else p.grad
            parts.append(torch.linalg.vector_norm(d).to(device=device, dtype=torch.float64))
        norm = torch.linalg.vector_norm(torch.stack(parts))
        inv = torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))  # g = 0: no perturbation
        for group, p in pairs:
            scale = (group["rho"] * inv).to(device=p.device, dtype=p.dtype)
            e = p.grad * p * p if group["adaptive"] else p.grad
            self._origin[p] = p.detach().clone()
            p.add_(e * scale)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the saved parameters and apply the base update with the current (perturbed) gradient."""
        if not self._origin:
            raise RuntimeError("SAM.second_step called without first_step(); "
                               "the gradient at the perturbed point is missing")
        self._restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """A whole SAM step; ``closure`` zeroes the gradients, computes the loss, calls ``backward()`` and
        returns the loss.

        It is called twice: at ``w`` (its loss is returned) and at ``w + e``.
        """
        if closure is None:
            raise RuntimeError("SAM.step needs a closure (it evaluates the gradient twice); "
                               "or call first_step(), recompute the gradient, then second_step()")
        with torch.enable_grad():
            loss = closure()
        self.first_step()
        try:
            with torch.enable_grad():
                closure()
        except BaseException:
            self._restore()  # leave the parameters at w, not at the perturbed point
            raise
        self.second_step()
        return loss

    @torch.no_grad()
    def _restore(self) -> None:
        for p, w in self._origin.items():
            p.copy_(w)
        self._origin = {}


def _check_rho(rho) -> None:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"SAM: rho must be a finite number >= 0 (got {rho!r})")


__all__ = ["SAM"]
