"""Stability thresholds of the optimisers, to compare with the sharpness.

Gradient descent is unstable along directions of curvature above ``2 / lr``
(:func:`gd_threshold`); heavy-ball momentum above ``(2 + 2 beta) / lr``
(:func:`momentum_threshold`); Adam (preconditioned) above
``(2 + 2 beta1) / ((1 - beta1) lr)`` (:func:`adam_threshold`, compared with
:func:`~oppsig.curvature.spectrum.preconditioned_sharpness`).
:func:`optimizer_threshold` picks the one of an optimiser by name.

Example:
    >>> gd_threshold(0.02)
    100.0
"""

from __future__ import annotations

from typing import Sequence

from ..errors import OppsigError

__all__ = ["gd_threshold", "momentum_threshold", "adam_threshold", "optimizer_threshold"]


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


def optimizer_threshold(name: str, lr: float, *, momentum: float = 0.0, dampening: float = 0.0,
                        nesterov: bool = False, betas: Sequence[float] = (0.9, 0.999)) -> float:
    """The stability threshold of an optimiser called ``name`` (``gd``, ``sgd``, ``adam``, ``adamw``, ...).

    ``gd``/``sgd`` (and ``sam``, ``splitsgd`` for their plain momentum step):
    :func:`gd_threshold`, or :func:`momentum_threshold` when ``momentum > 0``
    (dampening scales the step: ``lr * (1 - dampening)``); ``signsgd``: NaN.
    ``adam``/``adamw``: :func:`adam_threshold` with ``betas[0]``, to compare with
    the preconditioned sharpness. ``lr <= 0`` (e.g. warm-up) gives ``inf``.

    Raises:
        OppsigError: for an unknown optimiser name.

    Example:
        >>> round(optimizer_threshold("sgd", 0.1, momentum=0.9), 9)
        38.0
    """
    if not lr > 0:
        return float("inf")
    if name == "signsgd":  # a sign step has no curvature threshold
        return float("nan")
    if name in ("gd", "sgd", "sam", "splitsgd"):  # sam and splitsgd: the threshold of their plain (momentum) step
        if momentum > 0:
            return momentum_threshold(lr * (1.0 - dampening), momentum, nesterov)
        return gd_threshold(lr)
    if name in ("adam", "adamw"):
        return adam_threshold(lr, betas[0])
    raise OppsigError(f"no stability threshold for optimiser {name!r}; pass one of gd, sgd, adam, adamw, sam, "
                      "splitsgd, signsgd")
