"""The two-layer linear network: parameters, loss, gradients, closed-form Hessian and its top eigenvalue."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ...config import check
from ...errors import ConfigError

from .data import _DT, OPPOSING, _is_int, _is_num

INIT_SEED_OFFSET = 104729
"""The initial weights are drawn with seed ``seed + INIT_SEED_OFFSET`` (a prime), apart from the data's ``seed``."""

__all__ = ["NetConfig", "init_params", "flatten", "unflatten", "predict", "loss", "loss_flat", "gradients", "hessian",
           "hvp", "hvp_operator", "sharpness", "gauss_newton_sharpness", "lanczos_sharpness", "opposing_direction",
           "opposing_curvature", "group_losses"]

@dataclass(frozen=True)
class NetConfig:
    """The two-layer linear network ``f(x) = v^T W x``.

    Attributes:
        width: hidden width ``m >= 1``.
        init_scale: entries of ``W`` are ``init_scale * N(0, 1/d)``, of ``v`` ``init_scale * N(0, 1/m)`` (> 0).
        seed: seed of the initialisation.

    Raises:
        ConfigError: for a field out of range.

    Example:
        >>> NetConfig(width=8).width
        8
    """

    width: int = 6
    init_scale: float = 0.1
    seed: int = 0

    def __post_init__(self):
        check(_is_int(self.width) and self.width >= 1, "width", "must be an integer >= 1", self.width)
        check(_is_num(self.init_scale) and self.init_scale > 0, "init_scale",
              "must be a number > 0 (0 is a saddle that GD never leaves)", self.init_scale)
        check(_is_int(self.seed) and self.seed >= 0, "seed", "must be an integer >= 0", self.seed)


def init_params(d: int, config: NetConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded initial ``W (m, d)`` and ``v (m,)`` in float64.

    Raises:
        ConfigError: for ``d < 1``.

    Example:
        >>> W, v = init_params(5, NetConfig(width=3))
        >>> tuple(W.shape), tuple(v.shape)
        ((3, 5), (3,))
    """
    cfg = config or NetConfig()
    check(_is_int(d) and d >= 1, "d", "must be the input dimension, an integer >= 1", d)
    gen = torch.Generator().manual_seed(cfg.seed + INIT_SEED_OFFSET)
    W = cfg.init_scale * torch.randn(cfg.width, d, generator=gen, dtype=_DT) / math.sqrt(d)
    v = cfg.init_scale * torch.randn(cfg.width, generator=gen, dtype=_DT) / math.sqrt(cfg.width)
    return W, v


def flatten(W: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``theta = (vec W row-major, v)``, shape ``(m d + m,)``."""
    return torch.cat([W.reshape(-1), v])


def unflatten(theta: torch.Tensor, m: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`flatten`: ``(W (m, d), v (m,))``.

    Raises:
        ConfigError: when ``theta`` does not have ``m d + m`` entries.
    """
    if theta.shape != (m * d + m,):
        raise ConfigError(f"theta has shape {tuple(theta.shape)}; pass a ({m * d + m},) vector for m={m}, d={d}")
    return theta[: m * d].reshape(m, d), theta[m * d:]


def predict(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``f(X) = X W^T v``, shape ``(n,)``."""
    return X @ (W.T @ v)


def loss(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L = (1/2n) sum (f(x_i) - y_i)^2`` (a 0-d tensor; differentiable)."""
    r = predict(W, v, X) - y
    return 0.5 * (r @ r) / X.shape[0]


def loss_flat(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """:func:`loss` as a function of ``theta = flatten(W, v)`` (for ``torch.func.hessian``)."""
    W, v = unflatten(theta, m, X.shape[1])
    return loss(W, v, X, y)


def _residual_grad(W, v, X, y):
    u = W.T @ v
    r = X @ u - y
    return u, r, X.T @ r / X.shape[0]


def gradients(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ``(dL/dW = v g^T (m, d), dL/dv = W g (m,))`` with ``g = X^T r / n``.

    Example:
        >>> from oppsig.toy.linear import make_data
        >>> data = make_data(n=16)
        >>> W, v = init_params(6)
        >>> [tuple(t.shape) for t in gradients(W, v, data.X, data.y)]
        [(6, 6), (6,)]
    """
    _, _, g = _residual_grad(W, v, X, y)
    return torch.outer(v, g), W @ g


def _sigma(X: torch.Tensor) -> torch.Tensor:
    return X.T @ X / X.shape[0]


def hessian(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
            sigma: torch.Tensor | None = None) -> torch.Tensor:
    """The closed-form Hessian of :func:`loss` w.r.t. ``theta = flatten(W, v)``, ``(P, P)``, ``P = m d + m``.

    ``H = J^T Sigma J + C`` (see the module docstring).

    Args:
        W, v: parameters ``(m, d)``, ``(m,)``.
        X, y: data ``(n, d)``, ``(n,)``.
        sigma: ``X^T X / n`` when already computed.

    Example:
        >>> from oppsig.toy.linear import make_data
        >>> data = make_data(n=16)
        >>> W, v = init_params(6, NetConfig(width=2))
        >>> H = hessian(W, v, data.X, data.y)
        >>> H.shape, bool(torch.allclose(H, H.T))
        (torch.Size([14, 14]), True)
    """
    m, d = W.shape
    S = _sigma(X) if sigma is None else sigma
    _, _, g = _residual_grad(W, v, X, y)
    J = torch.cat([torch.kron(v[None, :], torch.eye(d, dtype=W.dtype)), W.T], dim=1)  # (d, P)
    H = J.T @ S @ J
    C = torch.kron(torch.eye(m, dtype=W.dtype), g[:, None])  # (m d, m)
    H[: m * d, m * d:] += C
    H[m * d:, : m * d] += C.T
    return H


def hvp(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
        dW: torch.Tensor, dv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form Hessian-vector product ``H (dW, dv) = (v s^T + dv g^T, W s + dW g)``, ``s = Sigma du1``.

    Returns:
        ``(HdW (m, d), Hdv (m,))``.
    """
    _, _, g = _residual_grad(W, v, X, y)
    du = dW.T @ v + W.T @ dv
    s = X.T @ (X @ du) / X.shape[0]
    return torch.outer(v, s) + torch.outer(dv, g), W @ s + dW @ g


def hvp_operator(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor,
                 y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``theta_dot (P,) -> H theta_dot (P,)`` from the closed form, for an eigensolver (``dim = P``).

    Example:
        >>> from oppsig.curvature import lanczos
        >>> from oppsig.toy.linear import make_data
        >>> data = make_data(n=32)
        >>> W, v = init_params(6, NetConfig(width=3))
        >>> r = lanczos(hvp_operator(W, v, data.X, data.y), k=1, tol=1e-10, dim=21, dtype=torch.float64)
        >>> abs(r.top - sharpness(W, v, data.X, data.y)) < 1e-8
        True
    """
    m, d = W.shape
    W, v, X, y = W.detach(), v.detach(), X.detach(), y.detach()
    _, _, g = _residual_grad(W, v, X, y)
    S = _sigma(X)

    def matvec(t: torch.Tensor) -> torch.Tensor:
        dW, dv = t[: m * d].reshape(m, d), t[m * d:]
        s = S @ (dW.T @ v + W.T @ dv)
        return torch.cat([(torch.outer(v, s) + torch.outer(dv, g)).reshape(-1), W @ s + dW @ g])

    return matvec


def sharpness(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
    """The top eigenvalue of the closed-form Hessian (dense ``eigvalsh``)."""
    return float(torch.linalg.eigvalsh(hessian(W, v, X, y))[-1])


def gauss_newton_sharpness(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor) -> float:
    """Top eigenvalue of the Gauss-Newton part, ``lambda_max(Sigma^(1/2) K Sigma^(1/2))``, via a (d, d) problem."""
    K = (v @ v) * torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W
    L = torch.linalg.cholesky(K)  # K > 0 whenever v != 0
    return float(torch.linalg.eigvalsh(L.T @ _sigma(X) @ L)[-1])


def lanczos_sharpness(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                      tol: float = 1e-10, seed: int = 0):
    """The top Hessian eigenpair by :func:`oppsig.curvature.lanczos` on the closed-form HVP.

    Returns:
        the :class:`~oppsig.curvature.results.EigResult`.
    """
    from ...curvature import lanczos

    P = W.numel() + v.numel()
    return lanczos(hvp_operator(W, v, X, y), k=1, tol=tol, max_iter=P, seed=seed, dim=P, dtype=W.dtype)


def opposing_direction(W: torch.Tensor, v: torch.Tensor, feature: int = OPPOSING) -> torch.Tensor:
    """Unit ``t_o = d u_o / d theta = (v e_o^T, W e_o) / norm``, ``(P,)``: the move of the weight on ``feature``."""
    dW = torch.zeros_like(W)
    dW[:, feature] = v
    t = torch.cat([dW.reshape(-1), W[:, feature]])
    return t / t.norm().clamp_min(torch.finfo(t.dtype).tiny)


def opposing_curvature(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                       feature: int = OPPOSING) -> float:
    """``kappa_o = (e_o^T K Sigma K e_o + 2 u_o g_o) / (e_o^T K e_o)``: the curvature along :func:`opposing_direction`.

    Example:
        >>> from oppsig.toy.linear import make_data
        >>> data = make_data(n=32)
        >>> W, v = init_params(6)
        >>> t = opposing_direction(W, v)
        >>> H = hessian(W, v, data.X, data.y)
        >>> abs(opposing_curvature(W, v, data.X, data.y) - float(t @ H @ t)) < 1e-12
        True
    """
    u, _, g = _residual_grad(W, v, X, y)
    Ke = W.T @ W[:, feature]  # K e_o = |v|^2 e_o + W^T W e_o
    Ke[feature] += v @ v
    num = Ke @ (_sigma(X) @ Ke) + 2 * u[feature] * g[feature]
    return float(num / Ke[feature])


def group_losses(W: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                 groups: torch.Tensor) -> tuple[float, float]:
    """``(L_A, L_B)``: the mean of ``r_i^2 / 2`` over group A (label 0) and B (label 1); NaN for an empty group."""
    r = predict(W, v, X) - y
    out = []
    for k in (0, 1):
        rk = r[groups == k]
        out.append(float(0.5 * (rk @ rk) / rk.numel()) if rk.numel() else float("nan"))
    return out[0], out[1]
