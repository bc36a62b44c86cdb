"""Stability thresholds of the optimisers, to compare with the sharpness.

Gradient descent is unstable along directions of curvature above ``2 / lr``
(:func:`gd_threshold`); heavy-ball momentum above ``(2 + 2 beta) / lr``
(:func:`momentum_threshold`); Adam (preconditioned) above
``(2 + 2 beta1) / ((1 - beta1) lr)`` (:func:`adam_threshold`, compared with
:func:`~oppsig.curvature.spectrum.preconditioned_sharpness`).

:func:`stability` is the one mapping from an optimiser (by oppsig's name) to its
threshold and the sharpness that threshold is compared with; :func:`stability_of`
reads the name and settings off a torch optimiser and applies it (the framework
callbacks use it, ``oppsig train`` uses :func:`stability` on its config):

- ``gd``, ``sgd`` (``torch.optim.SGD``): ``2 / lr``, or the momentum threshold
  with ``lr * (1 - dampening)`` (and Nesterov), against the raw ``sharpness``;
- ``splitsgd``: the same, for its plain SGD side (the coordinates it does not
  split); the split coordinates take normalised steps, which have no curvature
  threshold;
- ``adam``, ``adamw``: :func:`adam_threshold` with ``beta1``, against
  ``precond_sharpness`` only: it says nothing of the raw sharpness;
- ``sam``: none. Its edge of stability depends on the gradient norm at each step
  and lies below ``2 / lr`` (Long & Bartlett, "Sharpness-Aware Minimization and
  the Edge of Stability", arXiv:2309.12488); oppsig does not measure that norm
  beside the sharpness, so it shows no threshold rather than the GD one;
- ``signsgd``: none (a sign step has no curvature threshold);
- any other torch optimiser (RMSprop, Adagrad, Lion, ...): none.

Example:
    >>> gd_threshold(0.02)
    100.0
    >>> stability("adam", 1e-3).against, stability("sam", 0.1).threshold
    ('precond_sharpness', None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import OppsigError

__all__ = ["gd_threshold", "momentum_threshold", "adam_threshold", "optimizer_threshold", "Stability", "stability",
           "stability_of"]

KNOWN = ("gd", "sgd", "splitsgd", "adam", "adamw", "sam", "signsgd")
"""The optimisers :func:`stability` knows (sam and signsgd: known to have no threshold here)."""


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise OppsigError(f"{name} must be > 0 (got {value})")
    return value


def gd_threshold(lr: float) -> float:
    """``2 / lr``: gradient descent is unstable along curvature above this.

    Raises:
        OppsigError: for ``lr <= 0``.

    Example:
        >>> gd_threshold(0.01)
        200.0
    """
    return 2.0 / _positive("lr", lr)


def momentum_threshold(lr: float, beta: float, nesterov: bool = False) -> float:
    """Stability threshold of heavy-ball momentum, ``(2 + 2 beta) / lr``.

    With ``nesterov=True``: ``(2 + 2 beta) / ((1 + 2 beta) lr)``.

    Raises:
        OppsigError: for ``lr <= 0`` or ``beta`` outside ``[0, 1)``.

    Example:
        >>> round(momentum_threshold(0.1, 0.9), 9)
        38.0
    """
    lr = _positive("lr", lr)
    if not 0 <= beta < 1:
        raise OppsigError(f"momentum beta must lie in [0, 1) (got {beta})")
    t = (2.0 + 2.0 * beta) / lr
    return t / (1.0 + 2.0 * beta) if nesterov else t


def adam_threshold(lr: float, beta1: float) -> float:
    """Stability threshold of Adam's preconditioned sharpness, ``(2 + 2 beta1) / ((1 - beta1) lr)``.

    Raises:
        OppsigError: for ``lr <= 0`` or ``beta1`` outside ``[0, 1)``.

    Example:
        >>> round(adam_threshold(1e-3, 0.9))
        38000
    """
    lr = _positive("lr", lr)
    if not 0 <= beta1 < 1:
        raise OppsigError(f"beta1 must lie in [0, 1) (got {beta1})")
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


@dataclass(frozen=True)
class Stability:
    """An optimiser's stability threshold and the sharpness it is compared with.

    Attributes:
        name: the optimiser (oppsig's name, or the torch class name in lower case for one oppsig does not know).
        threshold: the threshold at the given lr (``inf`` for ``lr <= 0``); None: no threshold is known.
        against: the metric it is compared with, ``"sharpness"`` or ``"precond_sharpness"`` (None with no threshold).
    """

    name: str
    threshold: float | None
    against: str | None


def stability(name: str, lr: float, *, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
              betas: Sequence[float] = (0.9, 0.999)) -> Stability:
    """The stability threshold of the optimiser called ``name`` and what it is compared with (module docstring).

    Raises:
        OppsigError: for a name not in :data:`KNOWN`.

    Example:
        >>> stability("sgd", 0.5)
        Stability(name='sgd', threshold=4.0, against='sharpness')
    """
    if name not in KNOWN:
        raise OppsigError(f"no stability threshold for optimiser {name!r}; pass one of {', '.join(KNOWN)}")
    if name in ("sam", "signsgd"):
        return Stability(name, None, None)
    against = "precond_sharpness" if name in ("adam", "adamw") else "sharpness"
    if not lr > 0:
        return Stability(name, float("inf"), against)
    if against == "precond_sharpness":
        return Stability(name, adam_threshold(lr, betas[0]), against)
    if momentum > 0:
        return Stability(name, momentum_threshold(lr * (1.0 - dampening), momentum, nesterov), against)
    return Stability(name, gd_threshold(lr), against)


def unwrap(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimiser inside framework wrappers (accelerate's ``AcceleratedOptimizer``, Lightning's
    ``LightningOptimizer``), which keep it as ``.optimizer``."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def stability_of(optimizer: torch.optim.Optimizer) -> Stability:
    """:func:`stability` of a torch optimiser, with the lr, momentum, dampening, Nesterov and betas of its first
    parameter group; an optimiser oppsig does not know gets no threshold.

    Example:
        >>> w = torch.zeros(2, requires_grad=True)
        >>> stability_of(torch.optim.Adam([w], lr=0.5, betas=(0.5, 0.999)))
        Stability(name='adam', threshold=12.0, against='precond_sharpness')
        >>> stability_of(torch.optim.RMSprop([w], lr=0.1))
        Stability(name='rmsprop', threshold=None, against=None)
    """
    from ..optim import SAM, SignSGD, SplitSGD

    opt = unwrap(optimizer)
    g = opt.param_groups[0]
    kinds = ((SAM, "sam"), (SignSGD, "signsgd"), (SplitSGD, "splitsgd"), (torch.optim.AdamW, "adamw"),
             (torch.optim.Adam, "adam"), (torch.optim.SGD, "sgd"))
    name = next((n for cls, n in kinds if type(opt) is cls), None)
    if name is None:
        return Stability(type(opt).__name__.lower(), None, None)
    return stability(name, float(g["lr"]), momentum=float(g.get("momentum", 0.0) or 0.0),
                     dampening=float(g.get("dampening", 0.0) or 0.0), nesterov=bool(g.get("nesterov", False)),
                     betas=tuple(g.get("betas", (0.9, 0.999))))


def optimizer_threshold(name: str, lr: float, *, momentum: float = 0.0, dampening: float = 0.0,
                        nesterov: bool = False, betas: Sequence[float] = (0.9, 0.999)) -> float:
    """:func:`stability`'s threshold as a number: NaN where the optimiser has none (``sam``, ``signsgd``).

    Raises:
        OppsigError: for an unknown optimiser name.

    Example:
        >>> round(optimizer_threshold("sgd", 0.1, momentum=0.9), 9)
        38.0
    """
    t = stability(name, lr, momentum=momentum, dampening=dampening, nesterov=nesterov, betas=betas).threshold
    return float("nan") if t is None else t
