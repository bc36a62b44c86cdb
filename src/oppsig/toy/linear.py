"""Opposing signals in a two-layer linear network: data model, exact GD/Adam, closed-form curvature.

A small model of the mechanism of arXiv 2311.04163: a rare, large-magnitude
feature that predicts opposite targets in two groups of examples is amplified
early, the network settles in a narrow valley that balances the groups,
sharpness grows while the small genuine signal is learned, and once it reaches
``2 / lr`` gradient descent oscillates across the valley with the two groups'
losses moving in anti-phase. Everything is exact (float64, closed forms,
checked against autograd in the tests).

Data model (:class:`OpposingDataConfig`, :func:`make_data`)
-------------------------------------------------------------
Targets ``y_i`` are +1 / -1, half each. Inputs ``x_i`` in R^d (d >= 2)::

    x_i[0]  = beta * (y_i + sigma_s * xi_i)        genuine signal: small magnitude beta, noisy
    x_i[1]  = alpha  if i in A or B, else 0         opposing feature, present in a fraction p
    x_i[2:] = sigma_n * N(0, I_{d-2})               noise coordinates

Group A holds ``n_A`` examples with ``y = +1`` that carry the feature, group B
``n_B`` examples with ``y = -1`` that carry it; ``n_A + n_B = round(p n)`` and
``n_A - n_B ~ imbalance * (n_A + n_B)``. The feature is identical in both
groups but their targets pull its weight in opposite directions; with
``imbalance > 0`` it also has a net correlation ``b_o = alpha (n_A - n_B) / n``
with the target, which is large when ``alpha`` is, so it is learned first.

Network and loss
----------------
``f(x) = v^T W x = u^T x`` with ``W`` (m, d), ``v`` (m,), ``u = W^T v`` (d,).
With ``r_i = f(x_i) - y_i``, ``Sigma = X^T X / n``, ``b = X^T y / n``::

    L = (1/2n) sum_i r_i^2 = (1/2) u^T Sigma u - b^T u + |y|^2 / (2n)
    g = dL/du = X^T r / n = Sigma u - b
    dL/dW = v g^T          dL/dv = W g

Hessian
-------
Perturb ``(W, v)`` by ``(dW, dv)``: ``u`` changes by ``du1 + du2`` with
``du1 = W^T dv + dW^T v`` (first order) and ``du2 = dW^T dv`` (second order).
Since ``L`` is quadratic in ``u``, ``L(u + du) = L + g^T du + du^T Sigma du / 2``,
and the second-order terms are ``du1^T Sigma du1 / 2 + g^T dW^T dv``. So::

    (dW, dv)^T H (dW, dv) = du1^T Sigma du1 + 2 dv^T dW g
    H = J^T Sigma J + C

with ``theta = (vec W row-major, v)`` of size ``P = m d + m``,
``J = [v^T kron I_d, W^T]`` (d, P) the Jacobian of ``u`` (Gauss-Newton part) and
``C`` the residual cross term: off-diagonal blocks ``I_m kron g`` (md, m) and
its transpose, zero diagonal blocks. It vanishes at a minimum (``g = 0``).
Hessian-vector product, with ``s = Sigma du1``::

    H (dW, dv) = (v s^T + dv g^T,  W s + dW g)

The top eigenvalue (the sharpness) is that of the dense (P, P) matrix; the
Gauss-Newton part alone has the top eigenvalue of the (d, d) matrix
``Sigma^(1/2) K Sigma^(1/2)`` with ``K = J J^T = |v|^2 I_d + W^T W``.

Sharpness along the opposing feature
------------------------------------
The parameter direction that moves the weight on the opposing feature,
``u_o = u . e_o``, fastest is its gradient
``t_o = d u_o / d theta = (v e_o^T, W e_o)``, with ``J t_o = K e_o`` and
``|t_o|^2 = e_o^T K e_o = |v|^2 + |W e_o|^2``. The curvature along it::

    kappa_o = t_o^T H t_o / |t_o|^2 = (e_o^T K Sigma K e_o + 2 u_o g_o) / (e_o^T K e_o)

In the valley (``Sigma`` dominated by ``Sigma_oo = alpha^2 (n_A + n_B) / n``)
``kappa_o ~ Sigma_oo (|v|^2 + |W e_o|^2)``, and ``t_o`` is the top eigenvector.

Groups' losses and anti-phase
-----------------------------
``L_G = (1/2|G|) sum_{i in G} r_i^2``. A small move ``delta`` of ``u_o``
changes them by ``dL_G ~ alpha delta mean_G(r)``. At the valley floor
``g_o = (alpha/n) (n_A mean_A(r) + n_B mean_B(r)) = 0``: the groups' mean
residuals have opposite signs, so each move across the valley lowers one
group's loss and raises the other's. While GD oscillates along ``t_o`` their
step-to-step changes are anti-correlated.

The valley and the predicted phase (:func:`predict_valley`)
-----------------------------------------------------------
Gradient flow conserves ``W W^T - v v^T``; from a small initialisation it is
~0, so ``W = v u^T / |v|^2`` and ``|v|^2 = |u|``. Every global minimum has
``u = u* = Sigma^+ b`` and ``g = 0``, so ``H = J^T Sigma J`` there and the
balanced minimum has sharpness::

    S_bal  = lambda_max(Sigma^(1/2) (|u*| I + u* u*^T / |u*|) Sigma^(1/2))  ~  alpha^2 p |u*|

The opposing feature sets the scale of the curvature, and the small genuine
signal, which needs ``|u*| ~ 1 / beta``, sets how far it grows: sharpness
rises while the signal is learned (progressive sharpening). Any minimum with
``|v|^2 = a`` has ``K >= a I + u* u*^T / a`` (Cauchy-Schwarz:
``|W z|^2 >= (v^T W z)^2 / |v|^2``), so no global minimum is flatter than::

    S_flat = min_a lambda_max(Sigma^(1/2) (a I + u* u*^T / a) Sigma^(1/2)).

Catapult bound. Let ``mu = |v|^2 + |W e_o|^2`` (so ``kappa_o ~ Sigma_oo mu``)
and let the gradient be concentrated on the opposing feature,
``g ~ g_o e_o``. One GD step changes ``|v|^2`` by ``-2 lr u_o g_o + lr^2 |W g|^2``
and ``|W e_o|^2`` by ``-2 lr u_o g_o + lr^2 |v|^2 g_o^2``, so::

    mu' - mu = lr g_o (lr g_o mu - 4 u_o).

With ``u_o = ubar + delta`` around the floor and ``g_o = Sigma_oo delta``,
averaged over an oscillation (``delta`` alternates sign) this is
``lr Sigma_oo delta^2 (lr kappa_o - 4)``: a growing oscillation lowers the
curvature (self-stabilisation, catapult) when ``lr kappa_o < 4`` and raises
it further (divergence) when ``lr kappa_o > 4``. If sharpening carries the
curvature to the balanced valley's ``S_bal`` before the oscillation has grown
(fast sharpening; slow sharpening starts the oscillation earlier and widens
the oscillating band), the prediction is::

    lr S_bal < 2         converges smoothly
    2 <= lr S_bal < 4    oscillates at the edge of stability (sharpness held near 2/lr)
    lr S_bal >= 4        diverges

(and when ``lr S_flat > 2`` no minimum is stable: GD cannot converge at all).

Adam (for contrast) is compared through its preconditioned sharpness
``lambda_max(P^(-1/2) H P^(-1/2))``, ``P = diag(sqrt(v_hat) + eps)``, against
``(2 + 2 beta1) / ((1 - beta1) lr)``.

Example:
    >>> data = make_data(OpposingDataConfig(n=64, seed=0))
    >>> W, v = init_params(data.X.shape[1], NetConfig(width=4, seed=0))
    >>> H = hessian(W, v, data.X, data.y)
    >>> H.shape
    torch.Size([28, 28])
    >>> traj = train(data, NetConfig(width=4), TrainConfig(lr=0.05, steps=20))
    >>> bool(traj.loss[-1] < traj.loss[0])
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "SIGNAL",
    "OPPOSING",
    "PHASES",
    "OpposingDataConfig",
    "ToyData",
    "make_data",
    "NetConfig",
    "init_params",
    "flatten",
    "unflatten",
    "predict",
    "loss",
    "loss_flat",
    "gradients",
    "hessian",
    "hvp",
    "hvp_operator",
    "sharpness",
    "gauss_newton_sharpness",
    "lanczos_sharpness",
    "opposing_direction",
    "opposing_curvature",
    "group_losses",
    "ValleyPrediction",
    "predict_valley",
    "predicted_phase",
    "TrainConfig",
    "Trajectory",
    "train",
    "classify",
    "oscillation_window",
    "antiphase_correlation",
    "PhaseDiagram",
    "phase_diagram",
]

SIGNAL = 0  #: input coordinate of the genuine signal
OPPOSING = 1  #: input coordinate of the opposing feature
PHASES = ("smooth", "eos", "diverges")  #: phase labels, in the order of their codes 0, 1, 2

_DT = torch.float64


# ----------------------------------------------------------------------------- data


def _check(cond: bool, name: str, value, what: str) -> None:
    if not cond:
        raise ConfigError(f"{name}={value!r} is invalid: {what}")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(float(x))


@dataclass(frozen=True)
class OpposingDataConfig:
    """Parameters of the opposing-signals data model (validated when built).

    Attributes:
        n: number of examples (>= 4; half have ``y = +1``).
        d: input dimension (>= 2): coordinate 0 the signal, 1 the opposing feature, the rest noise.
        signal: magnitude ``beta > 0`` of the genuine signal feature.
        signal_noise: relative noise ``sigma_s >= 0`` on the signal feature (what the signal cannot explain).
        alpha: magnitude ``>= 0`` of the opposing feature (0 removes it).
        p: fraction of examples carrying the opposing feature, in ``[0, 1]``.
        imbalance: ``(n_A - n_B) / (n_A + n_B)`` in ``[-1, 1]``.
        noise: standard deviation ``sigma_n >= 0`` of the ``d - 2`` noise coordinates.
        seed: seed of every random draw (the draws do not depend on ``alpha``).

    Raises:
        ConfigError: for a field out of range, naming it and the valid range.

    Example:
        >>> OpposingDataConfig(alpha=2.0).alpha
        2.0
        >>> OpposingDataConfig(p=1.5)
        Traceback (most recent call last):
        ...
        oppsig.errors.ConfigError: p=1.5 is invalid: pass a fraction in [0, 1]
    """

    n: int = 256
    d: int = 6
    signal: float = 0.05
    signal_noise: float = 1.0
    alpha: float = 4.0
    p: float = 0.1
    imbalance: float = 0.4
    noise: float = 0.1
    seed: int = 0

    def __post_init__(self):
        _check(_is_int(self.n) and self.n >= 4, "n", self.n, "pass an integer number of examples >= 4")
        _check(_is_int(self.d) and self.d >= 2, "d", self.d,
               "pass an integer dimension >= 2 (signal and opposing coordinates, then noise)")
        _check(_is_num(self.signal) and self.signal > 0, "signal", self.signal,
               "pass the magnitude of the genuine feature, a number > 0 (e.g. 0.1)")
        _check(_is_num(self.signal_noise) and self.signal_noise >= 0, "signal_noise", self.signal_noise,
               "pass a number >= 0")
        _check(_is_num(self.alpha) and self.alpha >= 0, "alpha", self.alpha,
               "pass the opposing feature's magnitude, a number >= 0 (0 removes it)")
        _check(_is_num(self.p) and 0 <= self.p <= 1, "p", self.p, "pass a fraction in [0, 1]")
        _check(_is_num(self.imbalance) and -1 <= self.imbalance <= 1, "imbalance", self.imbalance,
               "pass (n_A - n_B) / (n_A + n_B), a number in [-1, 1]")
        _check(_is_num(self.noise) and self.noise >= 0, "noise", self.noise, "pass a standard deviation >= 0")
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "pass an integer >= 0")
        n_a, n_b = self.group_sizes
        n_pos = self.n // 2
        _check(n_a <= n_pos and n_b <= self.n - n_pos, "p", self.p,
               f"groups of {n_a} and {n_b} examples do not fit in {n_pos} positives and {self.n - n_pos} "
               "negatives; pass a smaller p or imbalance")

    @property
    def group_sizes(self) -> tuple[int, int]:
        """``(n_A, n_B)``: examples with the opposing feature and ``y = +1``, and with ``y = -1``."""
        n_opp = int(round(self.p * self.n))
        n_a = int(round(n_opp * (1 + self.imbalance) / 2))
        return n_a, n_opp - n_a


@dataclass(frozen=True)
class ToyData:
    """A sample of the data model.

    Attributes:
        X: ``(n, d)`` float64 inputs.
        y: ``(n,)`` float64 targets in {+1, -1}.
        groups: ``(n,)`` int64: 0 for group A, 1 for group B, -1 for examples without the feature.
        config: the :class:`OpposingDataConfig` it was drawn from.
    """

    X: torch.Tensor
    y: torch.Tensor
    groups: torch.Tensor
    config: OpposingDataConfig

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        return int(self.X.shape[1])


def make_data(config: OpposingDataConfig | None = None, **overrides) -> ToyData:
    """Draw ``X (n, d)``, ``y (n,)`` and group labels from the data model (seeded, float64).

    Args:
        config: the parameters (default :class:`OpposingDataConfig`).
        **overrides: fields replacing those of ``config`` (e.g. ``alpha=0.0``).

    Returns:
        a :class:`ToyData`.

    Raises:
        ConfigError: for invalid parameters or an unknown field name.

    Example:
        >>> data = make_data(n=100, p=0.2, imbalance=0.5)
        >>> data.X.shape, int((data.groups == 0).sum()), int((data.groups == 1).sum())
        (torch.Size([100, 6]), 15, 5)
    """
    cfg = config or OpposingDataConfig()
    if overrides:
        unknown = sorted(set(overrides) - set(OpposingDataConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown data-model field {unknown[0]!r}; valid: "
                              f"{', '.join(OpposingDataConfig.__dataclass_fields__)}")
        cfg = OpposingDataConfig(**{**cfg.__dict__, **overrides})
    n, d = cfg.n, cfg.d
    gen = torch.Generator().manual_seed(cfg.seed)
    n_pos = n // 2
    y = -torch.ones(n, dtype=_DT)
    order = torch.randperm(n, generator=gen)
    pos, neg = order[:n_pos], order[n_pos:]
    y[pos] = 1.0
    n_a, n_b = cfg.group_sizes
    grp_a = pos[torch.randperm(pos.numel(), generator=gen)[:n_a]]
    grp_b = neg[torch.randperm(neg.numel(), generator=gen)[:n_b]]
    xi = torch.randn(n, generator=gen, dtype=_DT)
    z = torch.randn(n, d - 2, generator=gen, dtype=_DT)
    X = torch.zeros(n, d, dtype=_DT)
    X[:, SIGNAL] = cfg.signal * (y + cfg.signal_noise * xi)
    groups = torch.full((n,), -1, dtype=torch.int64)
    groups[grp_a] = 0
    groups[grp_b] = 1
    X[:, OPPOSING] = cfg.alpha * (groups >= 0).to(_DT)
    X[:, 2:] = cfg.noise * z
    return ToyData(X, y, groups, cfg)


# ----------------------------------------------------------------------------- network


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
        _check(_is_int(self.width) and self.width >= 1, "width", self.width, "pass an integer >= 1")
        _check(_is_num(self.init_scale) and self.init_scale > 0, "init_scale", self.init_scale,
               "pass a number > 0 (0 is a saddle that GD never leaves)")
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "pass an integer >= 0")


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
    _check(_is_int(d) and d >= 1, "d", d, "pass the input dimension, an integer >= 1")
    gen = torch.Generator().manual_seed(cfg.seed + 104729)
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
        the :class:`~oppsig.curvature.lanczos.EigResult`.
    """
    from ..curvature import lanczos

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


# ----------------------------------------------------------------------------- prediction


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
    I = torch.eye(S.shape[0], dtype=_DT)
    nu = float(u.norm())

    def s_of(a: float) -> float:
        return float(torch.linalg.eigvalsh(Sh @ (a * I + torch.outer(u, u) / a) @ Sh)[-1])

    if nu == 0.0:
        return ValleyPrediction(u, 0.0, 0.0, 0.0, 0.0, float(S[OPPOSING, OPPOSING]), float(b.norm()))
    s_bal = s_of(nu)
    res = minimize_scalar(lambda t: s_of(nu * math.exp(t)), bounds=(-20.0, 20.0), method="bounded",
                          options={"xatol": 1e-10})
    a_flat = nu * math.exp(float(res.x))
    s_flat = min(s_of(a_flat), s_bal)
    e_o = I[OPPOSING]
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
    _check(_is_num(lr) and lr > 0, "lr", lr, "pass a step size > 0")
    x = lr * s_balanced
    return "smooth" if x < 2 else ("eos" if x < 4 else "diverges")


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    """Full-batch training of the two-layer linear network.

    Attributes:
        lr: step size (> 0).
        steps: number of updates (>= 0).
        optimizer: ``"gd"`` or ``"adam"``.
        betas: Adam's ``(beta1, beta2)``, each in ``[0, 1)``.
        eps: Adam's epsilon (> 0).
        sharpness_every: record the sharpness every this many steps (0: never; NaN elsewhere).
        blowup: the run has diverged when the loss exceeds ``blowup`` times its initial value (> 1).

    Raises:
        ConfigError: for a field out of range.

    Example:
        >>> TrainConfig(lr=0.1).threshold
        20.0
    """

    lr: float
    steps: int = 2000
    optimizer: str = "gd"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    sharpness_every: int = 1
    blowup: float = 1e4

    def __post_init__(self):
        _check(_is_num(self.lr) and self.lr > 0, "lr", self.lr, "pass a step size > 0")
        _check(_is_int(self.steps) and self.steps >= 0, "steps", self.steps, "pass an integer >= 0")
        _check(self.optimizer in ("gd", "adam"), "optimizer", self.optimizer, "pass 'gd' or 'adam'")
        _check(isinstance(self.betas, (tuple, list)) and len(self.betas) == 2
               and all(_is_num(b) and 0 <= b < 1 for b in self.betas), "betas", self.betas,
               "pass two numbers in [0, 1)")
        _check(_is_num(self.eps) and self.eps > 0, "eps", self.eps, "pass a number > 0")
        _check(_is_int(self.sharpness_every) and self.sharpness_every >= 0, "sharpness_every",
               self.sharpness_every, "pass an integer >= 0 (0: never)")
        _check(_is_num(self.blowup) and self.blowup > 1, "blowup", self.blowup, "pass a factor > 1")

    @property
    def threshold(self) -> float:
        """The stability threshold: ``2 / lr`` for GD, ``(2 + 2 beta1) / ((1 - beta1) lr)`` for Adam."""
        if self.optimizer == "gd":
            return 2.0 / self.lr
        b1 = self.betas[0]
        return (2.0 + 2.0 * b1) / ((1.0 - b1) * self.lr)


@dataclass(frozen=True)
class Trajectory:
    """Per-step record of a run (index ``t`` = the parameters after ``t`` updates).

    Attributes:
        config: the :class:`TrainConfig`.
        loss, loss_a, loss_b: ``(T,)`` total loss and the groups' losses.
        u_opposing, u_signal: ``(T,)`` weights ``u . e_o`` and ``u . e_s``.
        sharpness: ``(T,)`` top Hessian eigenvalue (NaN where not measured).
        opposing_curvature: ``(T,)`` ``kappa_o`` (NaN where not measured).
        precond_sharpness: ``(T,)`` Adam's preconditioned sharpness (NaN for GD or where not measured).
        diverged: whether the loss blew up (the arrays stop there).
        W, v: the last parameters (for a diverged run, the first ones past the blow-up).
    """

    config: TrainConfig
    loss: np.ndarray
    loss_a: np.ndarray
    loss_b: np.ndarray
    u_opposing: np.ndarray
    u_signal: np.ndarray
    sharpness: np.ndarray
    opposing_curvature: np.ndarray
    precond_sharpness: np.ndarray
    diverged: bool
    W: torch.Tensor = field(repr=False)
    v: torch.Tensor = field(repr=False)

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @property
    def steps(self) -> np.ndarray:
        return np.arange(len(self.loss))


def train(data: ToyData, net: NetConfig | None = None, config: TrainConfig | None = None,
          params: tuple[torch.Tensor, torch.Tensor] | None = None) -> Trajectory:
    """Train ``f(x) = v^T W x`` on ``data`` with full-batch GD (or Adam), exactly, in float64.

    Args:
        data: from :func:`make_data`.
        net: the network and its initialisation (the latter unused when ``params`` is given).
        config: the optimiser and recording (default ``TrainConfig(lr=0.1)``).
        params: starting ``(W, v)`` instead of :func:`init_params`.

    Returns:
        a :class:`Trajectory` with ``steps + 1`` entries (fewer when it diverged).

    Raises:
        ConfigError: for invalid configs, or ``params`` of the wrong shapes.

    Example:
        >>> tr = train(make_data(n=64), NetConfig(width=3), TrainConfig(lr=0.1, steps=50, sharpness_every=10))
        >>> len(tr.loss), bool(np.isfinite(tr.sharpness[::10]).all())
        (51, True)
    """
    cfg = config or TrainConfig(lr=0.1)
    X, y, groups = data.X, data.y, data.groups
    n, d = X.shape
    if params is None:
        W, v = init_params(d, net)
    else:
        W, v = (torch.as_tensor(p).detach().to(_DT).clone() for p in params)
        if W.dim() != 2 or W.shape[1] != d or v.shape != (W.shape[0],):
            raise ConfigError(f"params have shapes {tuple(W.shape)} and {tuple(v.shape)}; "
                              f"pass W (m, {d}) and v (m,)")
    S = _sigma(X)
    ia, ib = torch.nonzero(groups == 0).flatten(), torch.nonzero(groups == 1).flatten()
    Xa, ya, Xb, yb = X[ia], y[ia], X[ib], y[ib]
    lr, every, adam = cfg.lr, cfg.sharpness_every, cfg.optimizer == "adam"
    b1, b2 = cfg.betas
    mW = torch.zeros_like(W)
    mv = torch.zeros_like(v)
    sW = torch.zeros_like(W)
    sv = torch.zeros_like(v)
    rec = {k: [] for k in ("loss", "la", "lb", "uo", "us", "s", "k", "ps")}
    nan = float("nan")
    diverged = False
    L0 = None
    for t in range(cfg.steps + 1):
        u = W.T @ v
        r = X @ u - y
        L = float(0.5 * (r @ r) / n)
        if L0 is None:
            L0 = max(L, 1e-300)
        if not math.isfinite(L) or L > cfg.blowup * L0:
            diverged = True
            break
        ra, rb = Xa @ u - ya, Xb @ u - yb
        rec["loss"].append(L)
        rec["la"].append(float(0.5 * (ra @ ra) / ra.numel()) if ra.numel() else nan)
        rec["lb"].append(float(0.5 * (rb @ rb) / rb.numel()) if rb.numel() else nan)
        rec["uo"].append(float(u[OPPOSING]))
        rec["us"].append(float(u[SIGNAL]))
        g = X.T @ r / n
        gW, gv = torch.outer(v, g), W @ g
        measure = every > 0 and t % every == 0
        if measure:
            H = hessian(W, v, X, y, sigma=S)
            rec["s"].append(float(torch.linalg.eigvalsh(H)[-1]))
            rec["k"].append(opposing_curvature(W, v, X, y))
        else:
            rec["s"].append(nan)
            rec["k"].append(nan)
        if t == cfg.steps:
            rec["ps"].append(nan)
            break
        if adam:
            k = t + 1
            mW.mul_(b1).add_(gW, alpha=1 - b1)
            mv.mul_(b1).add_(gv, alpha=1 - b1)
            sW.mul_(b2).addcmul_(gW, gW, value=1 - b2)
            sv.mul_(b2).addcmul_(gv, gv, value=1 - b2)
            c1, c2 = 1 - b1 ** k, 1 - b2 ** k
            pW = (sW / c2).sqrt() + cfg.eps
            pv = (sv / c2).sqrt() + cfg.eps
            if measure:
                p = flatten(pW, pv).rsqrt()
                rec["ps"].append(float(torch.linalg.eigvalsh(p[:, None] * H * p[None, :])[-1]))
            else:
                rec["ps"].append(nan)
            W = W - lr * (mW / c1) / pW
            v = v - lr * (mv / c1) / pv
        else:
            rec["ps"].append(nan)
            W, v = W - lr * gW, v - lr * gv
    T = len(rec["loss"])
    arr = {k: np.asarray(vals[:T], dtype=np.float64) for k, vals in rec.items()}
    return Trajectory(cfg, arr["loss"], arr["la"], arr["lb"], arr["uo"], arr["us"], arr["s"], arr["k"],
                      arr["ps"], diverged, W, v)


# ----------------------------------------------------------------------------- analysis


def _increases(loss: np.ndarray, rtol: float) -> int:
    L = np.asarray(loss, dtype=np.float64)
    return int(np.sum(L[1:] > L[:-1] * (1 + rtol)))


def classify(trajectory: Trajectory, min_increases: int = 2, rtol: float = 1e-9) -> str:
    """The observed phase of a run: ``"diverges"`` (loss blew up), ``"eos"`` (the loss rose on at least
    ``min_increases`` steps: GD oscillates across the valley), else ``"smooth"``.

    Example:
        >>> classify(train(make_data(n=64), config=TrainConfig(lr=0.01, steps=30, sharpness_every=0)))
        'smooth'
    """
    if trajectory.diverged:
        return "diverges"
    return "eos" if _increases(trajectory.loss, rtol) >= min_increases else "smooth"


def oscillation_window(trajectory: Trajectory, tol: float = 0.02, min_amplitude: float = 1e-7) -> np.ndarray:
    """The steps where GD oscillates at the edge of stability, as indices ``t`` into step-to-step changes.

    The window starts once the sharpness has reached ``2/lr`` and stays within a relative ``tol`` of it
    (after the last excursion outside, e.g. a catapult), and keeps the steps where the weight on the
    opposing feature reverses direction, ``(u_o[t+1] - u_o[t]) (u_o[t] - u_o[t-1]) < 0``, by more than
    ``min_amplitude``. Uses the steps where the sharpness was measured; empty when it never reached ``2/lr``.

    Example:
        >>> tr = train(make_data(n=64), config=TrainConfig(lr=0.01, steps=30))
        >>> oscillation_window(tr).size
        0
    """
    ratio = trajectory.sharpness * trajectory.config.lr / 2.0
    T = len(ratio)
    measured = np.isfinite(ratio)
    hit = np.nonzero(measured & (np.nan_to_num(ratio) >= 1.0))[0]
    if T < 3 or hit.size == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.arange(T)
    outside = np.nonzero(measured & (idx >= hit[0]) & (np.abs(np.nan_to_num(ratio) - 1.0) > tol))[0]
    start = outside[-1] + 1 if outside.size else hit[0]
    du = np.diff(trajectory.u_opposing)
    rev = np.zeros(T - 1, dtype=bool)
    rev[1:] = (du[1:] * du[:-1] < 0) & (np.abs(du[1:]) > min_amplitude)
    steps = np.arange(T - 1)
    return steps[(steps >= start) & rev]


def antiphase_correlation(trajectory: Trajectory, window: np.ndarray | None = None) -> float:
    """Pearson correlation of the groups' step-to-step loss changes ``dL_A[t], dL_B[t]`` over ``window``
    (default :func:`oscillation_window`); -1 is perfect anti-phase, NaN when the window has < 3 steps."""
    w = oscillation_window(trajectory) if window is None else np.asarray(window)
    if w.size < 3:
        return float("nan")
    da, db = np.diff(trajectory.loss_a)[w], np.diff(trajectory.loss_b)[w]
    if da.std() == 0 or db.std() == 0:
        return float("nan")
    return float(np.corrcoef(da, db)[0, 1])


# ----------------------------------------------------------------------------- phase diagram


@dataclass(frozen=True)
class PhaseDiagram:
    """Observed and predicted phases over an ``(alpha, lr)`` grid.

    Attributes:
        alphas: ``(A,)``; lrs: ``(L,)``.
        observed, predicted: ``(A, L)`` int codes into :data:`PHASES`.
        s_balanced, s_flattest: ``(A,)`` closed-form valley sharpness per ``alpha``.
        max_sharpness_ratio: ``(A, L)`` the largest measured ``lr * sharpness / 2`` (NaN after divergence).
        final_sharpness_ratio: ``(A, L)`` ``lr * sharpness / 2`` at the end (NaN when diverged).
        steps: the number of GD steps of every run.
    """

    alphas: np.ndarray
    lrs: np.ndarray
    observed: np.ndarray
    predicted: np.ndarray
    s_balanced: np.ndarray
    s_flattest: np.ndarray
    max_sharpness_ratio: np.ndarray
    final_sharpness_ratio: np.ndarray
    steps: int

    @property
    def agreement(self) -> float:
        """Fraction of grid cells where the predicted phase is the observed one."""
        return float((self.observed == self.predicted).mean())


def _batched_hessian_top(W, v, X, y):
    """Top Hessian eigenvalue of each run: W (R, m, d), v (R, m), X (R, n, d), y (n,) -> (R,)."""
    R, m, d = W.shape
    n = X.shape[1]
    u = torch.einsum("rmd,rm->rd", W, v)
    r = torch.einsum("rnd,rd->rn", X, u) - y
    g = torch.einsum("rnd,rn->rd", X, r) / n
    S = torch.einsum("rnd,rne->rde", X, X) / n
    eye_d = torch.eye(d, dtype=_DT)
    Jw = v[:, None, :, None] * eye_d[None, :, None, :]  # (R, d, m, d): J[b, a*d+b'] = v_a delta_bb'
    J = torch.cat([Jw.reshape(R, d, m * d), W.transpose(1, 2)], dim=2)
    H = J.transpose(1, 2) @ S @ J
    C = torch.einsum("ac,rb->rabc", torch.eye(m, dtype=_DT), g).reshape(R, m * d, m)
    H[:, : m * d, m * d:] += C
    H[:, m * d:, : m * d] += C.transpose(1, 2)
    return torch.linalg.eigvalsh(H)[:, -1]


def phase_diagram(alphas: Sequence[float], lrs: Sequence[float], data_config: OpposingDataConfig | None = None,
                  net: NetConfig | None = None, time: float = 300.0, max_steps: int = 20000,
                  blowup: float = 1e4, min_increases: int = 2, rtol: float = 1e-9,
                  sharpness_every: int = 25) -> PhaseDiagram:
    """Run GD for every ``(alpha, lr)`` (all runs at once, batched) and classify each run.

    Every run takes ``ceil(time / min(lrs))`` steps (capped at ``max_steps``), so even the smallest step size
    covers a gradient-flow time ``time``. Observed phases as in :func:`classify`; predicted ones by
    :func:`predicted_phase` from each data set's ``S_bal``.

    Args:
        alphas: opposing-feature magnitudes (each >= 0).
        lrs: step sizes (each > 0).
        data_config: the other data-model parameters (its ``alpha`` is replaced).
        net: the network; every run starts from the same initialisation.
        time, max_steps: run length.
        blowup, min_increases, rtol: the classification (see :class:`TrainConfig`, :func:`classify`).
        sharpness_every: measure the sharpness of every run this often (for ``max_sharpness_ratio``).

    Returns:
        a :class:`PhaseDiagram`.

    Raises:
        ConfigError: for an empty grid, an invalid value or an invalid config.

    Example:
        >>> pd = phase_diagram([0.0, 4.0], [0.05, 1.0], OpposingDataConfig(n=64), time=20.0)
        >>> pd.observed.shape
        (2, 2)
    """
    alphas = np.asarray(list(alphas), dtype=np.float64)
    lrs = np.asarray(list(lrs), dtype=np.float64)
    _check(alphas.size > 0 and lrs.size > 0, "alphas/lrs", (alphas.size, lrs.size), "pass non-empty grids")
    _check(bool(np.all(lrs > 0)) and bool(np.all(np.isfinite(lrs))), "lrs", lrs.tolist(), "pass step sizes > 0")
    _check(_is_num(time) and time > 0, "time", time, "pass a gradient-flow time > 0")
    base = data_config or OpposingDataConfig()
    datas = [make_data(base, alpha=float(a)) for a in alphas]  # also validates each alpha
    preds = [predict_valley(dt) for dt in datas]
    A, Lr = alphas.size, lrs.size
    steps = int(min(max_steps, math.ceil(time / float(lrs.min()))))
    n, d = datas[0].X.shape
    X = torch.stack([dt.X for dt in datas]).repeat_interleave(Lr, dim=0)  # (R, n, d), run = a * Lr + l
    y = datas[0].y
    lr = torch.as_tensor(np.tile(lrs, A), dtype=_DT)
    W0, v0 = init_params(d, net)
    R = A * Lr
    # the runs still alive are simulated together; a run that blows up is dropped from the batch
    act = torch.arange(R)
    W = W0.expand(R, *W0.shape).clone()
    v = v0.expand(R, *v0.shape).clone()
    Xa, lra = X, lr
    diverged = torch.zeros(R, dtype=torch.bool)
    incs = torch.zeros(R, dtype=torch.int64)
    smax = torch.zeros(R, dtype=_DT)
    prev = L0 = None
    for t in range(steps + 1):
        u = torch.einsum("rmd,rm->rd", W, v)
        r = torch.einsum("rnd,rd->rn", Xa, u) - y
        L = 0.5 * (r * r).mean(dim=1)
        if L0 is None:
            L0 = L.clamp_min(1e-300)
        bad = ~torch.isfinite(L) | (L > blowup * L0)
        if bool(bad.any()):
            diverged[act[bad]] = True
            keep = ~bad
            act, W, v, Xa, lra, L, r, L0 = act[keep], W[keep], v[keep], Xa[keep], lra[keep], L[keep], r[keep], L0[keep]
            prev = prev[keep] if prev is not None else None
            if act.numel() == 0:
                break
        if prev is not None:
            incs[act] += (L > prev * (1 + rtol)).to(torch.int64)
        prev = L
        if sharpness_every and t % sharpness_every == 0:
            smax[act] = torch.maximum(smax[act], _batched_hessian_top(W, v, Xa, y))
        if t == steps:
            break
        g = torch.einsum("rnd,rn->rd", Xa, r) / n
        W, v = (W - lra[:, None, None] * v[:, :, None] * g[:, None, :],
                v - lra[:, None] * torch.einsum("rmd,rd->rm", W, g))
    alive = ~diverged
    observed = torch.where(diverged, 2, torch.where(incs >= min_increases, 1, 0)).reshape(A, Lr).numpy()
    final = torch.full((R,), float("nan"), dtype=_DT)
    if act.numel():
        final[act] = _batched_hessian_top(W, v, Xa, y)
    lr_np = np.tile(lrs, A)
    max_ratio = np.where(alive.numpy(), smax.numpy() * lr_np / 2, np.nan).reshape(A, Lr)
    s_bal = np.array([p.s_balanced for p in preds])
    predicted = np.array([[PHASES.index(predicted_phase(sb, float(l))) for l in lrs] for sb in s_bal])
    return PhaseDiagram(alphas, lrs, observed, predicted, s_bal, np.array([p.s_flattest for p in preds]),
                        max_ratio, (final.numpy() * lr_np / 2).reshape(A, Lr), steps)
