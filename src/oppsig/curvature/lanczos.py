"""Top eigenpairs of symmetric operators: Lanczos with full re-orthogonalisation.

:func:`lanczos` finds the ``k`` largest algebraic eigenvalues of a symmetric
operator (e.g. the Hessian of the training loss) with one operator product per
iteration, on the operator's device. Every returned eigenvalue carries an error
bound and the solve a ``converged`` flag; a solve that runs out of ``max_iter``
says so (``converged=False``) and its bounds are the residuals.

Error bounds. With ``theta_i`` the Ritz values (descending) and ``r_i`` their
residual norms ``||A y_i - theta_i y_i||``:

- *gap bound* (Kato-Temple; B. N. Parlett, *The Symmetric Eigenvalue Problem*,
  SIAM 1998, ch. 10-11): ``0 <= lambda_i - theta_i <= r_i**2 / delta_i`` when
  every other eigenvalue lies at least ``delta_i`` away from ``theta_i``. Ritz
  values lie below the eigenvalues they approach (interlacing), so the
  eigenvalues above ``theta_i`` lie above ``theta_{i-1}``; an eigenvalue below
  lies at most ``r_{i+1}`` above ``theta_{i+1}``. Hence the *safe gap*
  ``delta_i = min(theta_{i-1} - theta_i, theta_i - (theta_{i+1} + r_{i+1}))``,
  a lower bound of the true distance computed from the Ritz values and their
  residuals, never from the Ritz values alone (which over-estimate it). It
  holds when the eigenvalue near ``theta_{i+1}`` is the next one, which an
  unsettled Ritz value does not show: after two products from a good warm
  start, ``theta_2 + r_2`` was 4.2 on a matrix whose second eigenvalue is 8. So
  the gap is used only once the next Ritz pair has settled, ``r_{i+1} <=
  0.1 delta_i`` (:data:`GAP_CONFIRM`); until then it is unknown.
- *residual bound*: ``r_i``, the distance from ``theta_i`` to the nearest
  eigenvalue, used when no gap is known.

Stopping rules: ``criterion="eigenvalue"`` stops when every wanted value has a
known gap and a gap bound within ``tol * |theta_i|`` (the eigenvalue error is
quadratic in the residual, so this stops several products before the residual
would be small; without a known gap it does not stop on the residual alone,
which in a pair of eigenvalues closer than ``tol`` is met by any mixture of the
two); ``criterion="residual"`` when every ``r_i <= tol * |theta_i|``
(the eigenvector is accurate too). Bounds have a floor of ``(m + sqrt(d)) eps
max|theta|`` for rounding (``m`` products, sums over ``d`` entries in the
basis updates; in float32 on a 400,000-entry operator the Ritz values were off
by 2.5e-5 relative while the recurrence's residuals said 5e-7).

What no Krylov method can see: an eigenvector that the Krylov space has not
reached. A start vector with little weight on the top eigenvector, or a top
pair closer together than the space can yet resolve (it then holds one mixture
of the two), makes the solver report the wrong eigenvalue with a bound that
holds only for the eigenvalues it has seen. The safe gap makes this rarer and
never trusts a gap from a different matrix. Measured
(``benchmarks/bench_lanczos_bounds.py``, docs/findings.md), k=1: on matrices
whose top two eigenvalues have ratios 0.9, 0.99 and 0.999 above a dense
spectrum, no bound was exceeded in 420 seeded solves (worst error / bound
0.33); with the pair isolated far above the rest, 139 of 360 solves stopped on
the unresolved mixture and under-stated their error (up to 3e5x when the
third eigenvalue is isolated too). Asking for ``k=2`` there resolves the pair:
2 misses in 360 solves.

A warm start from the previous eigenvectors (training moves them little between
measurements) converges in a few products. :func:`power_iteration` is the
simple baseline (PyHessian style).

Example:
    >>> import torch
    >>> A = torch.diag(torch.tensor([5.0, 3.0, 1.0, -7.0], dtype=torch.float64))
    >>> r = lanczos(A, k=2, tol=1e-10)
    >>> [round(x, 8) for x in r.eigenvalues.tolist()], r.converged
    ([5.0, 3.0], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import OppsigError
from .operators import LinearOperator, as_operator

__all__ = ["CRITERIA", "GAP_CONFIRM", "EigResult", "eigen_metrics", "warm_start", "UNCONVERGED_MARK", "lanczos", "power_iteration", "start_vector"]


@dataclass
class EigResult:
    """Eigenpairs found by an iterative solver.

    Attributes:
        eigenvalues: ``(k,)``, descending.
        eigenvectors: ``(d, k)``, orthonormal columns on the operator's device.
        residuals: ``(k,)``, ``||A v_i - lambda_i v_i||`` (Lanczos: from the
            three-term recurrence, exact up to the rounding of the operator's
            products, about 1e-6 relative in float32).
        num_matvecs: operator products used.
        converged: whether every pair met the stopping rule (False: ``max_iter``
            ran out, and the values are not certified to ``tol``).
        history: the top estimate after each product (``num_matvecs`` floats).
        error_bounds: ``(k,)`` bounds of ``|lambda_i - theta_i|`` (Lanczos: the
            gap bound ``r**2 / delta`` where a safe gap is known, else the
            residual ``r``; power iteration: the residual).
        gap: the safe lower bound ``delta_k`` of the distance from the k-th
            eigenvalue to the rest of the spectrum below it (None when unknown).
        gap_known: ``(k,)`` bools, whether each bound is a gap bound (True) or
            the residual bound (False: the distance to the nearest eigenvalue).
        next_vector: ``(d,)`` the Ritz vector below the k-th (None when the basis
            has no more): pass ``warm_start(result)`` as the next ``v0``, so that
            the next solve finds the gap below the k-th eigenvalue in a few products.
        extra_work: products of a cheaper approximate operator spent on finding
            the start vector, in units of one product of this operator.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    num_matvecs: int
    converged: bool
    history: list[float] = field(default_factory=list)
    error_bounds: torch.Tensor | None = None
    gap: float | None = None
    gap_known: tuple[bool, ...] = ()
    next_vector: torch.Tensor | None = None
    extra_work: float = 0.0

    @property
    def work(self) -> float:
        """Cost in products of this operator: ``num_matvecs + extra_work``."""
        return self.num_matvecs + self.extra_work

    @property
    def relative_residuals(self) -> torch.Tensor:
        """``residuals / |eigenvalues|``, ``(k,)``."""
        return self.residuals / self.eigenvalues.abs().clamp_min(torch.finfo(self.residuals.dtype).tiny)

    @property
    def relative_error_bounds(self) -> torch.Tensor:
        """``error_bounds / |eigenvalues|``, ``(k,)`` (the residuals' when no bound was computed)."""
        b = self.error_bounds if self.error_bounds is not None else self.residuals
        return b / self.eigenvalues.abs().clamp_min(torch.finfo(b.dtype).tiny)

    @property
    def top(self) -> float:
        """The largest eigenvalue as a float."""
        return float(self.eigenvalues[0])

    @property
    def max_relative_error(self) -> float:
        """The largest relative error bound of the returned eigenvalues."""
        return float(self.relative_error_bounds.max())


def warm_start(result: EigResult, criterion: str = "eigenvalue") -> torch.Tensor:
    """The start ``v0`` for the next solve of a nearby operator, ``(d, j)``: the eigenvectors, and the next Ritz vector
    when the next solve uses the eigenvalue criterion.

    A start rich in the k wanted eigenvectors converges fast, but the gap bounds
    of the eigenvalue criterion need the gap below the k-th eigenvalue, i.e. a
    settled (k+1)-th Ritz pair: starting from the (k+1)-th Ritz vector too finds
    it in a few products. The residual criterion needs no gap.

    Example:
        >>> A = torch.diag(torch.tensor([5.0, 3.0, 1.0, 0.5], dtype=torch.float64))
        >>> warm_start(lanczos(A, k=1, tol=1e-10)).shape
        torch.Size([4, 2])
    """
    if result.next_vector is None or criterion != "eigenvalue":
        return result.eigenvectors
    return torch.cat([result.eigenvectors, result.next_vector[:, None]], dim=1)


UNCONVERGED_MARK = "(not converged)"  # printed after a value whose solve ran out of iterations


def eigen_metrics(key: str, result: EigResult, i: int = 0) -> dict[str, float]:
    """The ``i``-th eigenvalue of ``result`` as metrics: ``{key, err/key, converged/key}``.

    ``err/key`` is its absolute error bound, ``converged/key`` 1.0 when the solve
    met its tolerance, else 0.0 (see :mod:`oppsig.curvature.hook`).

    Example:
        >>> r = lanczos(torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64)), tol=1e-8)
        >>> sorted(eigen_metrics("sharpness", r))
        ['converged/sharpness', 'err/sharpness', 'sharpness']
    """
    bounds = result.error_bounds if result.error_bounds is not None else result.residuals
    return {key: float(result.eigenvalues[i]), f"err/{key}": float(bounds[i]),
            f"converged/{key}": 1.0 if result.converged else 0.0}


def start_vector(dim: int, v0: torch.Tensor | None, seed: int, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """A unit start vector ``(d,)``: ``v0`` (or the sum of its unit columns when ``(d, j)``), else seeded Gaussian.

    The Gaussian is drawn on the CPU with ``seed``, so it is the same on every device.

    Raises:
        OppsigError: when ``v0`` does not have shape ``(d,)`` or ``(d, j)``.
    """
    if v0 is not None:
        v0 = torch.as_tensor(v0)
        if v0.dim() not in (1, 2) or v0.shape[0] != dim:
            raise OppsigError(f"v0 has shape {tuple(v0.shape)}; pass a ({dim},) vector or a ({dim}, j) block")
        v = v0.detach().to(device=device, dtype=dtype)
        if v.dim() == 2:
            v = _unit_columns(v).sum(dim=1)
        nrm = _norm(v)
        if math.isfinite(nrm) and nrm > 0:
            return (v.to(torch.float64) / nrm).to(dtype)
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    return (v / v.norm()).to(device=device, dtype=dtype)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``<a, b>`` with the products summed in float64 (float32 sums over ~1e6 entries lose up to ~1e-4)."""
    return float((a * b).sum(dtype=torch.float64))


def _norm(a: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a, dtype=torch.float64))


def _unit_columns(V: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.vector_norm(V, dim=0, dtype=torch.float64, keepdim=True)
    return (V.to(torch.float64) / n.clamp_min(torch.finfo(torch.float64).tiny)).to(V.dtype)


def _orthogonalise(w: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Remove from ``w`` its components along the orthonormal rows of ``Q``; return it and its norm.

    Classical Gram-Schmidt, repeated once when the first pass cancelled most of
    ``w`` (the DGKS criterion), which keeps the basis orthogonal to working precision.
    """
    before = _norm(w)
    w = w - Q.T @ (Q @ w)
    after = _norm(w)
    if after < 0.7071 * before:
        w = w - Q.T @ (Q @ w)
        after = _norm(w)
    return w, after


CRITERIA = ("residual", "eigenvalue")
GAP_CONFIRM = 0.1  # a gap is known once the next Ritz residual is at most this fraction of it


def _error_bounds(theta: torch.Tensor, resid: torch.Tensor, k: int, exact: bool, eps: float,
                  dim: int) -> tuple[torch.Tensor, list[bool], float | None]:
    """Bounds of ``|lambda_i - theta_i|`` for the top ``k`` Ritz pairs, which of them use a gap, and ``delta_k``.

    ``theta`` (m,) descending Ritz values, ``resid`` (m,) their residual norms;
    ``exact``: the basis spans the whole space (the Ritz values are eigenvalues);
    ``eps``, ``dim``: the operator's machine epsilon and size, for the rounding
    floor. See the module docstring for the safe gap and the floor.
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


def lanczos(
    op,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: torch.Tensor | None = None,
    seed: int = 0,
    *,
    criterion: str = "residual",
    dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> EigResult:
    """The ``k`` largest algebraic eigenpairs of a symmetric operator.

    Lanczos iteration with full re-orthogonalisation (every new vector is made
    orthogonal to all previous ones), storing the basis ``(m, d)`` on the
    operator's device. After each product the tridiagonal matrix is diagonalised;
    iteration stops when each of the top ``k`` Ritz pairs meets ``criterion``
    (see the module docstring), or after ``max_iter`` products (then
    ``converged`` is False: look at it). On an exact breakdown (invariant
    subspace) it continues from a fresh random vector.

    Args:
        op: a :class:`~oppsig.curvature.operators.LinearOperator`, a ``(d, d)``
            tensor, or a function ``v -> A v`` (then pass ``dim``).
        k: number of eigenpairs.
        tol: relative tolerance: of the residual (``criterion="residual"``) or
            of the eigenvalue's error bound (``criterion="eigenvalue"``).
        max_iter: most operator products (also the basis size).
        v0: warm start: ``(d,)``, or ``(d, j)`` previous eigenvectors (their unit
            sum is used; a start rich in the wanted eigenvectors converges in
            about ``j`` + a few products).
        seed: seed of the random start when ``v0`` is None.
        criterion: ``residual`` or ``eigenvalue``.
        dim, dtype, device: for a plain function ``op``.

    Returns:
        an :class:`EigResult` with error bounds (``converged`` False when
        ``max_iter`` ran out).

    Raises:
        OppsigError: when the operator is not symmetric, ``k`` exceeds the
            dimension or ``max_iter < k``, ``v0`` has the wrong shape, or
            ``criterion`` is unknown.

    Example:
        >>> A = torch.diag(torch.arange(10.0, dtype=torch.float64))
        >>> r = lanczos(A, k=1, tol=1e-8)
        >>> round(r.top, 6), r.converged
        (9.0, True)
    """
    if criterion not in CRITERIA:
        raise OppsigError(f"unknown criterion {criterion!r}; pass 'residual' or 'eigenvalue'")
    A: LinearOperator = as_operator(op, dim, dtype, device)
    A.require_symmetric("lanczos")
    d = A.dim
    if not 1 <= k <= d:
        raise OppsigError(f"k={k} must lie in [1, {d}] (the operator's size)")
    m_max = min(int(max_iter), d)
    if m_max < k:
        raise OppsigError(f"max_iter={max_iter} is smaller than k={k}; pass max_iter >= k")
    dt, dev = A.dtype, A.device
    tiny = torch.finfo(dt).eps
    exact = False  # the basis spans the whole space
    cap = min(m_max + 1, 32)
    Q = torch.empty(cap, d, dtype=dt, device=dev)
    Q[0] = start_vector(d, v0, seed, dt, dev)
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}
    nmv = 0
    converged = False
    history: list[float] = []
    theta = Y = resid = None
    m = 0
    for j in range(m_max):
        q = Q[j]
        w = A.matvec(q)
        nmv += 1
        a = _dot(q, w)
        w = w - a * q
        if j > 0:
            w = w - betas[j - 1] * Q[j - 1]
        w, b = _orthogonalise(w, Q[: j + 1])
        alphas.append(a)
        m = j + 1
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if m > 1:
            off = torch.tensor(betas[: m - 1], dtype=torch.float64)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(T)
        theta, Y = evals.flip(0), evecs.flip(1)
        history.append(float(theta[0]))
        resid = b * Y[-1].abs()
        exact = m == d
        if m >= k:
            kk = slice(0, k)
            if criterion == "residual":
                done = bool((resid[kk] <= tol * theta[kk].abs()).all())
            else:
                bounds, known, _ = _error_bounds(theta, resid, k, exact, tiny, d)
                done = all(known) and bool((bounds <= tol * theta[kk].abs()).all())
            if done or exact:
                converged = True
                break
        if m == m_max:
            break
        scale = float(theta.abs().max())
        if b <= 100 * tiny * max(scale, tiny):
            # invariant subspace: continue from a fresh direction (coupling 0)
            g = torch.Generator().manual_seed(int(seed) + 7919 * m)
            w = torch.randn(d, generator=g, dtype=torch.float64).to(device=dev, dtype=dt)
            n0 = _norm(w)
            w, nw = _orthogonalise(w, Q[:m])
            if nw <= 1e3 * tiny * n0:  # the basis spans the whole space: the Ritz values are the eigenvalues
                converged = exact = True
                break
            betas.append(0.0)
            w = w / nw
        else:
            betas.append(b)
            w = w / b
        if m >= Q.shape[0]:
            Q = torch.cat([Q, torch.empty(min(Q.shape[0], m_max + 1 - Q.shape[0]), d, dtype=dt, device=dev)])
        Q[m] = w
    kk = min(k, m)
    Yk = Y[:, : min(kk + 1, m)].to(device=dev, dtype=dt)
    V = _unit_columns(Q[:m].T @ Yk)
    V, nxt = (V[:, :kk], V[:, kk]) if m > kk else (V, None)
    bounds, known, gap_out = _error_bounds(theta, resid, kk, exact, tiny, d)
    return EigResult(
        eigenvalues=theta[:kk].to(device=dev, dtype=dt),
        eigenvectors=V,
        residuals=resid[:kk].to(device=dev, dtype=dt),
        num_matvecs=nmv,
        converged=converged,
        history=history,
        error_bounds=bounds.to(device=dev, dtype=dt),
        gap=gap_out,
        gap_known=tuple(known),
        next_vector=nxt,
    )


def power_iteration(
    op,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: torch.Tensor | None = None,
    seed: int = 0,
    *,
    dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> EigResult:
    """The dominant eigenpair by power iteration (largest in magnitude), the PyHessian baseline.

    Stops when the Rayleigh quotient changes by at most ``tol`` relative to its
    previous value, which says little about its error when the spectral gap is
    small; prefer :func:`lanczos`.

    Args:
        op, v0, seed, dim, dtype, device: as in :func:`lanczos`.
        tol: relative change of the estimate between two iterations.
        max_iter: most operator products.

    Returns:
        an :class:`EigResult` with ``k = 1`` and the exact residual of the
        returned pair as its error bound (the distance to the nearest
        eigenvalue, which need not be the largest in magnitude).

    Raises:
        OppsigError: for a malformed or non-symmetric ``op`` or a malformed ``v0``.

    Example:
        >>> A = torch.diag(torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64))
        >>> round(power_iteration(A, tol=1e-10, max_iter=200).top, 6)
        4.0
    """
    A = as_operator(op, dim, dtype, device)
    A.require_symmetric("power_iteration")
    v = start_vector(A.dim, v0, seed, A.dtype, A.device)
    prev = None
    lam = 0.0
    w = None
    nmv = 0
    converged = False
    history: list[float] = []
    for _ in range(int(max_iter)):
        w = A.matvec(v)
        nmv += 1
        lam = _dot(v, w)
        history.append(lam)
        if prev is not None and abs(lam - prev) <= tol * (abs(prev) + 1e-6):
            converged = True
            break
        prev = lam
        nw = _norm(w)
        if nw == 0.0:
            converged = True
            break
        if nmv < max_iter:
            v = w / nw
        # on the last iteration keep (v, w) paired for the residual
    res = torch.tensor(_norm(w - lam * v) if w is not None else 0.0, dtype=A.dtype, device=A.device)
    return EigResult(
        eigenvalues=torch.tensor([lam], dtype=A.dtype, device=A.device),
        eigenvectors=v[:, None].clone(),
        residuals=res.reshape(1).to(A.dtype),
        num_matvecs=nmv,
        converged=converged,
        history=history,
        error_bounds=res.reshape(1).to(A.dtype),
        gap_known=(False,),
    )
