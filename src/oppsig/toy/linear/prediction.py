"""Predicted valley: the sharpness of the balanced minimum and the phase it implies for a learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


from ...config import check
from .data import _DT, OPPOSING, ToyData, _is_num
from .network import _sigma

__all__ = ["ValleyPrediction", "predict_valley", "predicted_phase"]

def _sym_sqrt(S: torch.Tensor) -> torch.Tensor:
    e, V = torch.linalg.eigh(S)
    return (V * e.clamp_min(0).sqrt()) @ V.T


@dataclass(frozen=True)
class ValleyPrediction:
    """Closed-form quantities of the valley (see the module docstring).

    Attributes:
        u_star: ``(d,)`` least-squares weights ``Sigma^+ b`` (every global minimum has ``u = u_star``).
        s_balanced: sharpness ``S_bal`` of the balanced minimum (reached from a small initialisation).
        s_flattest: ``S_flat``, the least sharpness of any global minimum.
        a_flattest: ``|v|^2`` of that flattest minimum.
        kappa_opposing: curvature along the opposing direction at the balanced minimum.
        sigma_oo: ``Sigma_oo = alpha^2 (n_A + n_B) / n``.
        initial_sharpness: ``|b|``, the sharpness at ``theta = 0`` (the origin's Hessian has eigenvalues ``+-|b|``).
    """

    u_star: torch.Tensor
    s_balanced: float
    s_flattest: float
    a_flattest: float
    kappa_opposing: float
    sigma_oo: float
    initial_sharpness: float

    def phase(self, lr: float) -> str:
        """The predicted phase at step size ``lr`` (see :func:`predicted_phase`)."""
        return predicted_phase(self.s_balanced, lr)

    def lr_bounds(self) -> tuple[float, float]:
        """``(2 / S_bal, 4 / S_bal)``: the predicted smooth/oscillating and oscillating/diverging step sizes."""
        return 2.0 / self.s_balanced, 4.0 / self.s_balanced


def predict_valley(data: ToyData) -> ValleyPrediction:
    """The balanced and flattest minima of ``data`` and their sharpness, in closed form.

    Example:
        >>> from oppsig.toy.linear import make_data
        >>> pred = predict_valley(make_data(alpha=4.0))
        >>> pred.s_flattest <= pred.s_balanced
        True
    """
    from scipy.optimize import minimize_scalar

    X, y = data.X, data.y
    S = _sigma(X)
    b = X.T @ y / X.shape[0]
    u = torch.linalg.pinv(S, hermitian=True) @ b
    Sh = _sym_sqrt(S)
    eye = torch.eye(S.shape[0], dtype=_DT)
    nu = float(u.norm())

    def s_of(a: float) -> float:
        return float(torch.linalg.eigvalsh(Sh @ (a * eye + torch.outer(u, u) / a) @ Sh)[-1])

    if nu == 0.0:
        return ValleyPrediction(u, 0.0, 0.0, 0.0, 0.0, float(S[OPPOSING, OPPOSING]), float(b.norm()))
    s_bal = s_of(nu)
    res = minimize_scalar(lambda t: s_of(nu * math.exp(t)), bounds=(-20.0, 20.0), method="bounded",
                          options={"xatol": 1e-10})
    a_flat = nu * math.exp(float(res.x))
    s_flat = min(s_of(a_flat), s_bal)
    e_o = eye[OPPOSING]
    Ke = nu * e_o + u * u[OPPOSING] / nu  # K e_o at the balanced minimum, K = |u| I + u u^T / |u|
    kappa = float(Ke @ S @ Ke / Ke[OPPOSING])
    return ValleyPrediction(u, s_bal, s_flat, a_flat, kappa, float(S[OPPOSING, OPPOSING]), float(b.norm()))


def predicted_phase(s_balanced: float, lr: float) -> str:
    """``"smooth"`` if ``lr S_bal < 2``, ``"eos"`` if ``2 <= lr S_bal < 4``, else ``"diverges"``.

    Raises:
        ConfigError: for ``lr <= 0``.

    Example:
        >>> predicted_phase(10.0, 0.1), predicted_phase(10.0, 0.3), predicted_phase(10.0, 0.5)
        ('smooth', 'eos', 'diverges')
    """
    check(_is_num(lr) and lr > 0, "lr", "must be a step size > 0", lr)
    x = lr * s_balanced
    return "smooth" if x < 2 else ("eos" if x < 4 else "diverges")
