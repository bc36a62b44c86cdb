"""Phase diagram over (alpha, lr): observed phase against the predicted boundary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


from ...config import check
from .data import _DT, PHASES, OpposingDataConfig, _is_num, make_data
from .network import NetConfig, init_params
from .prediction import predict_valley, predicted_phase

__all__ = ["PhaseDiagram", "phase_diagram"]

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
    check(alphas.size > 0 and lrs.size > 0, "alphas/lrs", "must be non-empty grids", (alphas.size, lrs.size))
    check(bool(np.all(lrs > 0)) and bool(np.all(np.isfinite(lrs))), "lrs", "must be step sizes > 0", lrs.tolist())
    check(_is_num(time) and time > 0, "time", "must be a gradient-flow time > 0", time)
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
    predicted = np.array([[PHASES.index(predicted_phase(sb, float(rate))) for rate in lrs] for sb in s_bal])
    return PhaseDiagram(alphas, lrs, observed, predicted, s_bal, np.array([p.s_flattest for p in preds]),
                        max_ratio, (final.numpy() * lr_np / 2).reshape(A, Lr), steps)
