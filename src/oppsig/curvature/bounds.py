"""Error bounds of Ritz values and the block check of block Lanczos.

:func:`error_bounds` gives the gap bound ``r**2 / delta`` with a safe gap, or
the residual bound, of each wanted Ritz value, and :func:`stop_rule` which of
them meet a stopping criterion; :func:`block_check` says whether the block may
hide a member of a cluster. They are derived and measured in
:mod:`oppsig.curvature.lanczos`; :data:`GAP_CONFIRM` sets when a gap counts as
known.

Example:
    >>> import torch
    >>> b, known, gap = error_bounds(torch.tensor([3.0, 1.0], dtype=torch.float64),
    ...                              torch.tensor([0.1, 0.01], dtype=torch.float64), 1, False, 1e-16, 2)
    >>> round(float(b[0]), 6), known, round(gap, 2)
    (0.005025, [True], 1.99)
"""

from __future__ import annotations

import math

import torch

__all__ = ["CRITERIA", "GAP_CONFIRM", "error_bounds", "stop_rule", "block_check"]

CRITERIA = ("residual", "eigenvalue")
GAP_CONFIRM = 0.1  # a gap is known once the next Ritz residual is at most this fraction of it


def error_bounds(theta: torch.Tensor, resid: torch.Tensor, k: int, exact: bool, eps: float,
                  dim: int) -> tuple[torch.Tensor, list[bool], float | None]:
    """Bounds of ``|lambda_i - theta_i|`` for the top ``k`` Ritz pairs, which of them use a gap, and ``delta_k``.

    ``theta`` (m,) descending Ritz values, ``resid`` (m,) their residual norms;
    ``exact``: the basis spans the whole space (the Ritz values are eigenvalues);
    ``eps``, ``dim``: the operator's machine epsilon and size, for the rounding
    floor. See :mod:`oppsig.curvature.lanczos` for the safe gap and the floor.
    """
    m = theta.shape[0]
    floor = (m + math.sqrt(dim)) * eps * float(theta.abs().max())
    out = resid[:k].clone()
    known: list[bool] = []
    gap = None
    for i in range(min(k, m)):
        r = float(resid[i])
        delta = -math.inf
        if exact:
            delta = math.inf
        elif i + 1 < m:
            below = float(theta[i] - theta[i + 1] - resid[i + 1])
            if float(resid[i + 1]) <= GAP_CONFIRM * below:  # the next Ritz pair has settled well below
                delta = below if i == 0 else min(below, float(theta[i - 1] - theta[i]))
        ok = delta > 0
        known.append(ok)
        if ok and math.isfinite(delta):
            out[i] = r * r / delta
        elif ok:
            out[i] = r
        out[i] = max(float(out[i]), floor)
        if i == k - 1 and ok:
            gap = delta
    return out, known, gap


def stop_rule(theta: torch.Tensor, resid: torch.Tensor, k: int, tol: float, criterion: str, exact: bool, eps: float,
              dim: int) -> tuple[list[bool], list[bool]]:
    """Which of the top ``k`` Ritz pairs meet ``criterion``, and which have a known gap (all, for ``residual``).

    Arguments as in :func:`error_bounds`; ``tol`` relative to ``|theta_i|``.
    """
    if criterion == "residual":
        return [bool(resid[i] <= tol * abs(theta[i])) for i in range(k)], [True] * k
    bounds, known, _ = error_bounds(theta, resid, k, exact, eps, dim)
    return [known[i] and bool(bounds[i] <= tol * abs(theta[i])) for i in range(k)], known


def block_check(theta: torch.Tensor, resid: torch.Tensor, k: int, b: int, first_warm: bool) -> str:
    """Whether the block may hide a cluster member: ``ok``, ``grow`` (add a column) or ``wait`` (a first random block).

    ``grow`` when the block's last Ritz value ``theta_b`` lies with the wanted
    ones, closer to ``theta_k`` than to the next Ritz value
    (``theta_k - theta_b < theta_b - theta_{b+1}``), and the gap below it has
    settled (``r_b`` and ``r_{b+1}`` at most :data:`GAP_CONFIRM` of it): the
    top ``b`` Ritz values then form a cluster set apart from the rest, which
    may hold one more eigenvalue than the block has yet seen. ``wait`` after
    the first block of a random start (nothing is known below it); ``ok``
    otherwise, and after the first block of a warm start (the start is
    trusted to hold the top eigenvectors; see :mod:`oppsig.curvature.lanczos`).
    """
    m = theta.shape[0]
    if b <= k:
        return "ok"
    if m <= b:
        return "ok" if first_warm else "wait"
    t_k, t_b, t_next = float(theta[k - 1]), float(theta[b - 1]), float(theta[b])
    below = t_b - t_next
    settled = max(float(resid[b - 1]), float(resid[b])) <= GAP_CONFIRM * below
    return "grow" if t_k - t_b < below and settled else "ok"
