"""Exact GD/Adam on the toy, and what its trajectory shows (phase, oscillation window, anti-phase)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ...config import check
from ...errors import ConfigError

from .data import _DT, _is_int, _is_num, ToyData
from .data import OPPOSING, SIGNAL
from .network import NetConfig, _sigma, flatten, hessian, init_params, opposing_curvature

__all__ = ["TrainConfig", "Trajectory", "train", "classify", "oscillation_window", "antiphase_correlation"]

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
        check(_is_num(self.lr) and self.lr > 0, "lr", "must be a step size > 0", self.lr)
        check(_is_int(self.steps) and self.steps >= 0, "steps", "must be an integer >= 0", self.steps)
        check(self.optimizer in ("gd", "adam"), "optimizer", "must be 'gd' or 'adam'", self.optimizer)
        check(isinstance(self.betas, (tuple, list)) and len(self.betas) == 2
               and all(_is_num(b) and 0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)",
               self.betas)
        check(_is_num(self.eps) and self.eps > 0, "eps", "must be a number > 0", self.eps)
        check(_is_int(self.sharpness_every) and self.sharpness_every >= 0, "sharpness_every",
               "must be an integer >= 0 (0: never)", self.sharpness_every)
        check(_is_num(self.blowup) and self.blowup > 1, "blowup", "must be a factor > 1", self.blowup)

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
        >>> from oppsig.toy.linear import make_data
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
                              f"must be W (m, {d}) and v (m,)")
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





def _increases(loss: np.ndarray, rtol: float) -> int:
    L = np.asarray(loss, dtype=np.float64)
    return int(np.sum(L[1:] > L[:-1] * (1 + rtol)))


def classify(trajectory: Trajectory, min_increases: int = 2, rtol: float = 1e-9) -> str:
    """The observed phase of a run: ``"diverges"`` (loss blew up), ``"eos"`` (the loss rose on at least
    ``min_increases`` steps: GD oscillates across the valley), else ``"smooth"``.

    Example:
        >>> from oppsig.toy.linear import make_data
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
        >>> from oppsig.toy.linear import make_data
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
