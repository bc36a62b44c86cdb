"""Top eigenpairs of symmetric operators: block Lanczos with full re-orthogonalisation.

:func:`lanczos` finds the ``k`` largest algebraic eigenvalues of a symmetric
operator (e.g. the Hessian of the training loss) by Rayleigh-Ritz on a block
Krylov space ``span{V, AV, A^2 V, ...}``: each iteration multiplies a block of
vectors at once (``op.matmat``), on the operator's device. Every returned
eigenvalue carries an error bound and the solve a ``converged`` flag; a solve
that runs out of ``max_iter`` says so (``converged=False``) and its bounds are
the residuals. Products are counted per column.

Error bounds. With ``theta_i`` the Ritz values (descending) and ``r_i`` their
residual norms ``||A y_i - theta_i y_i||`` (from the couplings of the basis with
the vectors not yet multiplied, exact up to rounding):

- *gap bound* (Kato-Temple; B. N. Parlett, *The Symmetric Eigenvalue Problem*,
  SIAM 1998, ch. 10-11): ``0 <= lambda_i - theta_i <= r_i**2 / delta_i`` when
  every other eigenvalue lies at least ``delta_i`` away from ``theta_i``. Ritz
  values lie below the eigenvalues they approach (interlacing), so the
  eigenvalues above ``theta_i`` lie above ``theta_{i-1}``; the next one lies at
  most ``r_{i+1}`` above ``theta_{i+1}`` *if the eigenvalue near ``theta_{i+1}``
  is the next one*. Hence the *safe gap* ``delta_i = min(theta_{i-1} - theta_i,
  theta_i - (theta_{i+1} + r_{i+1}))``, computed from the Ritz values and their
  residuals, never from Ritz values alone (which over-estimate it), and used
  only once the next Ritz pair has settled, ``r_{i+1} <= 0.1 delta_i``
  (:data:`GAP_CONFIRM`; an unsettled one need not be near the next eigenvalue:
  after two products from a good single-vector warm start, ``theta_2 + r_2``
  was 4.2 on a matrix whose second eigenvalue is 8); until then it is unknown.
- *residual bound*: ``r_i``, the distance from ``theta_i`` to the nearest
  eigenvalue, used when no gap is known.

The assumption every bound rests on: *no eigenvalue above ``theta_{k+1} +
r_{k+1}`` is hidden*, i.e. the Krylov space has reached every eigenvector
whose eigenvalue lies above the next Ritz interval. No Krylov method can check
this: an eigenvector with no weight in the space is invisible. Single-vector
Lanczos breaks it on a close pair isolated far above the rest: the space holds
one mixture of the pair, the next Ritz value settles on the bulk first, and
the gap to the bulk under-states the error (139 of 360 seeded solves with
k=1). The block removes that case: a random block of ``b`` columns has, with
probability 1, a full-rank projection on a cluster of at most ``b``
eigenvalues, so all of them are resolved at the rate set by the gap below the
cluster, not by the distances inside it. The first block has ``k + 2``
columns (the wanted, the next, and a spare: a near rank-deficient projection
on the top ``k + 1`` eigenvectors, which lets one of them lag, then needs two
small random weights at once). When the block's last Ritz value ``theta_b``
lies with the wanted ones, closer to ``theta_k`` than to the Ritz value below
it, and that gap has settled, the top ``b`` Ritz values form a cluster set
apart that may hold one more eigenvalue: a random column is added (up to
:data:`MAX_GROWTH`) and the solve does not stop. What remains unchecked: a
cluster larger than the block whose extra member the space has not reached by
the stop, a random block with almost no weight on a top eigenvector, and a
warm start (the previous solve's block, a presample's) that misses one: a warm
first block may certify without knowing what lies below it. Measured
(``benchmarks/bench_lanczos_bounds.py``, docs/findings.md): at the default
settings no bound was exceeded in 3,360 seeded solves of size 200, k = 1 and
2, top ratios 0.9 / 0.99 / 0.999, on four shapes (dense right below the pair,
the pair isolated, a third isolated eigenvalue, a close triple).

Stopping rules: ``criterion="eigenvalue"`` stops when every wanted value has a
known gap and a gap bound within ``tol * |theta_i|`` (the eigenvalue error is
quadratic in the residual, so this stops before the residual would be small;
without a known gap it does not stop on the residual alone, which in a pair of
eigenvalues closer than ``tol`` is met by any mixture of the two);
``criterion="residual"`` when every ``r_i <= tol * |theta_i|`` (the
eigenvector is accurate too); either only when the block needs no growth.
Bounds have a floor of ``(m + sqrt(d)) eps max|theta|`` for rounding (``m``
products, sums over ``d`` entries in the basis updates; in float32 on a
400,000-entry operator the Ritz values were off by 2.5e-5 relative while the
residuals said 5e-7); the couplings are summed in float64.

A warm start from the previous block of Ritz vectors (:func:`warm_start`;
training moves them little between measurements) converges in one or two
block products. :func:`power_iteration` is the simple baseline (PyHessian
style).

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

__all__ = ["CRITERIA", "GAP_CONFIRM", "MAX_GROWTH", "EigResult", "eigen_metrics", "warm_start", "UNCONVERGED_MARK", "lanczos", "power_iteration", "start_vector"]


@dataclass
class EigResult:
    """Eigenpairs found by an iterative solver.

    Attributes:
        eigenvalues: ``(k,)``, descending.
        eigenvectors: ``(d, k)``, orthonormal columns on the operator's device.
        residuals: ``(k,)``, ``||A v_i - lambda_i v_i||`` (Lanczos: from the
            block recurrence's couplings, exact up to the rounding of the
            operator's products, about 1e-6 relative in float32).
        num_matvecs: operator products used (a block of ``b`` columns counts ``b``).
        converged: whether every pair met the stopping rule (False: ``max_iter``
            ran out, and the values are not certified to ``tol``).
        history: the top estimate after each product (``num_matvecs`` floats;
            a block's columns share the estimate after the block).
        error_bounds: ``(k,)`` bounds of ``|lambda_i - theta_i|`` (Lanczos: the
            gap bound ``r**2 / delta`` where a safe gap is known, else the
            residual ``r``; power iteration: the residual).
        gap: the safe lower bound ``delta_k`` of the distance from the k-th
            eigenvalue to the rest of the spectrum below it (None when unknown).
        gap_known: ``(k,)`` bools, whether each bound is a gap bound (True) or
            the residual bound (False: the distance to the nearest eigenvalue).
        extra_work: products of a cheaper approximate operator spent on finding
            the start vector, in units of one product of this operator.
        ritz_block: ``(d, k + 1 + g)`` the top Ritz vectors, ``g`` the columns
            the block grew by (the eigenvectors first; None for power
            iteration): the start block of the next solve (:func:`warm_start`).
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
    extra_work: float = 0.0
    ritz_block: torch.Tensor | None = None

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


def warm_start(result: EigResult) -> torch.Tensor:
    """The start block ``v0`` for the next solve of a nearby operator, ``(d, b)``: the result's top ``b`` Ritz vectors.

    ``b = k + 1`` plus the columns the block grew by to resolve a cluster (the
    random spare column of a cold start is left out), so the next solve starts
    with a block that holds the wanted eigenvectors and the next one: the gap
    below the k-th eigenvalue then settles after one or two block products.
    Power iteration results give their vector.

    Example:
        >>> A = torch.diag(torch.tensor([5.0, 3.0, 1.0, 0.5], dtype=torch.float64))
        >>> warm_start(lanczos(A, k=1, tol=1e-10)).shape
        torch.Size([4, 2])
    """
    return result.ritz_block if result.ritz_block is not None else result.eigenvectors


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
        v = _start_columns(v0, dim, dtype, device)
        v = _unit_columns(v).sum(dim=1) if torch.as_tensor(v0).dim() == 2 else v[:, 0]
        nrm = _norm(v)
        if math.isfinite(nrm) and nrm > 0:
            return (v.to(torch.float64) / nrm).to(dtype)
    v = _gaussian(dim, torch.Generator().manual_seed(int(seed)))
    return (v / v.norm()).to(device=device, dtype=dtype)


def _start_columns(v0, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``v0`` as ``(d, j)`` columns on ``device`` in ``dtype``.

    Raises:
        OppsigError: when ``v0`` does not have shape ``(d,)`` or ``(d, j)``.
    """
    v0 = torch.as_tensor(v0)
    if v0.dim() not in (1, 2) or v0.shape[0] != dim:
        raise OppsigError(f"v0 has shape {tuple(v0.shape)}; pass a ({dim},) vector or a ({dim}, j) block")
    return v0.detach().to(device=device, dtype=dtype).reshape(dim, -1)


def _gaussian(dim: int, g: torch.Generator) -> torch.Tensor:
    """A seeded Gaussian ``(d,)`` drawn on the CPU in float64, so it is the same on every device and dtype."""
    return torch.randn(dim, generator=g, dtype=torch.float64)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``<a, b>`` with the products summed in float64 (float32 sums over ~1e6 entries lose up to ~1e-4)."""
    return float((a * b).sum(dtype=torch.float64))


def _coef(Q: torch.Tensor, W: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """``Q @ W`` in float64, ``(rows, cols)`` on the CPU: summed over chunks of the ``d`` entries in float64
    (float32 products over ~1e6 entries lose up to ~1e-4, which would move the projected matrix)."""
    if Q.dtype == torch.float64:
        return (Q @ W).cpu()
    out = torch.zeros(Q.shape[0], W.shape[1], dtype=torch.float64, device=Q.device)
    for s in range(0, Q.shape[1], chunk):
        out += Q[:, s : s + chunk].to(torch.float64) @ W[s : s + chunk].to(torch.float64)
    return out.cpu()


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
MAX_GROWTH = 6  # most random columns added to the first block


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


def _start_block(dim: int, v0: torch.Tensor | None, b: int, seed: int, dtype: torch.dtype,
                 device: torch.device) -> "_Basis":
    """A basis of ``b'`` orthonormal rows: the usable columns of ``v0`` first, then seeded Gaussian ones up to ``b``.

    Raises:
        OppsigError: when ``v0`` does not have shape ``(d,)`` or ``(d, j)``.
    """
    basis = _Basis(torch.empty(0, dim, dtype=dtype, device=device), min(dim, 32))
    if v0 is not None:
        V = _start_columns(v0, dim, dtype, device)
        for j in range(V.shape[1]):
            basis.add_direction(V[:, j])
    g = torch.Generator().manual_seed(int(seed))
    tries = 0
    while basis.n < b and tries < 4 * b + 8:
        tries += 1
        basis.add_direction(_gaussian(dim, g).to(device=device, dtype=dtype))
    return basis


class _Basis:
    """Orthonormal rows ``(n, d)`` kept in a buffer that doubles when full, so that adding a row copies one row,
    not the whole basis (on a 650,000-parameter model, re-concatenating the basis for every new row took about
    a third of a cold solve's time besides the products)."""

    def __init__(self, rows: torch.Tensor, capacity: int) -> None:
        self.buf = torch.empty(max(int(capacity), rows.shape[0], 1), rows.shape[1], dtype=rows.dtype,
                               device=rows.device)
        self.n = rows.shape[0]
        self.buf[: self.n] = rows

    @property
    def rows(self) -> torch.Tensor:
        """The basis ``(n, d)``: a view of the buffer (valid until the next :meth:`append`)."""
        return self.buf[: self.n]

    def append(self, row: torch.Tensor) -> None:
        if self.n == self.buf.shape[0]:
            self.buf = torch.cat([self.buf, torch.empty_like(self.buf)])
        self.buf[self.n] = row
        self.n += 1

    def add_direction(self, w: torch.Tensor) -> bool:
        """Append ``w``'s direction orthogonal to the rows; False (nothing appended) when it adds none."""
        n0 = _norm(w)
        if not (math.isfinite(n0) and n0 > 0):
            return False
        w, nw = _orthogonalise(w, self.rows) if self.n else (w, n0)
        if nw <= 1e3 * torch.finfo(self.buf.dtype).eps * n0:
            return False
        self.append(w / nw)
        return True


def _block_check(theta: torch.Tensor, resid: torch.Tensor, k: int, b: int, first_warm: bool) -> str:
    """Whether the block may hide a cluster member: ``ok``, ``grow`` (add a column) or ``wait`` (a first random block).

    ``grow`` when the block's last Ritz value ``theta_b`` lies with the wanted
    ones, closer to ``theta_k`` than to the next Ritz value
    (``theta_k - theta_b < theta_b - theta_{b+1}``), and the gap below it has
    settled (``r_b`` and ``r_{b+1}`` at most :data:`GAP_CONFIRM` of it): the
    top ``b`` Ritz values then form a cluster set apart from the rest, which
    may hold one more eigenvalue than the block has yet seen. ``wait`` after
    the first block of a random start (nothing is known below it); ``ok``
    otherwise, and after the first block of a warm start (the start is
    trusted to hold the top eigenvectors; see the module docstring).
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


def lanczos(
    op,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: torch.Tensor | None = None,
    seed: int = 0,
    *,
    criterion: str = "residual",
    block: int | None = None,
    dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> EigResult:
    """The ``k`` largest algebraic eigenpairs of a symmetric operator: block Lanczos.

    Block Lanczos with full re-orthogonalisation and Rayleigh-Ritz: a block of
    ``block`` vectors (default ``k + 2`` random ones, or the columns of ``v0``)
    is multiplied at once through ``op.matmat``, every new vector is made
    orthogonal to all previous ones, and the basis is stored ``(m, d)`` on the
    operator's device. After each block the projected matrix is diagonalised;
    iteration stops when each of the top ``k`` Ritz pairs meets ``criterion``
    and the block's last Ritz value lies apart from the wanted ones (else a
    random column is added to the block, up to ``block + MAX_GROWTH``; see the
    module docstring), or after ``max_iter`` products (then ``converged`` is
    False: look at it). After a warm start's first block, the next blocks hold
    only the residual directions of the pairs still short of the stop (one
    product per such pair). On an exact breakdown (invariant subspace) it
    continues from fresh random vectors.

    Args:
        op: a :class:`~oppsig.curvature.operators.LinearOperator`, a ``(d, d)``
            tensor, or a function ``v -> A v`` (then pass ``dim``).
        k: number of eigenpairs.
        tol: relative tolerance: of the residual (``criterion="residual"``) or
            of the eigenvalue's error bound (``criterion="eigenvalue"``).
        max_iter: most operator products, counted per column (also the basis size).
        v0: warm start: ``(d,)``, or ``(d, j)`` a block (e.g. :func:`warm_start`
            of the previous result: its Ritz vectors); padded with seeded
            random columns to the block size.
        seed: seed of the random columns.
        criterion: ``residual`` or ``eigenvalue``.
        block: the first block's size (default: ``k + 2`` for a random start,
            the columns of ``v0`` but at least ``k + 1`` for a warm one; 1 is
            single-vector Lanczos, which cannot resolve a cluster and whose
            bounds then need not hold).
        dim, dtype, device: for a plain function ``op``.

    Returns:
        an :class:`EigResult` with error bounds (``converged`` False when
        ``max_iter`` ran out).

    Raises:
        OppsigError: when the operator is not symmetric, ``k`` exceeds the
            dimension or ``max_iter < k``, ``block < 1``, ``v0`` has the wrong
            shape, or ``criterion`` is unknown.

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
    if block is not None and int(block) < 1:
        raise OppsigError(f"block={block} must be >= 1; pass a positive block size or None (k + 2)")
    dt, dev = A.dtype, A.device
    tiny = torch.finfo(dt).eps
    warm = v0 is not None
    if block is not None:
        b = int(block)
    elif warm:  # the start's columns (the previous solve's block), at least k + 1
        b = max(k + 1, int(torch.as_tensor(v0).shape[1]) if torch.as_tensor(v0).dim() == 2 else 1)
    else:  # k + 1 and a spare random column (see the module docstring)
        b = k + 2
    b = max(1, min(b, d, m_max))
    b_cap = min(d, m_max, b + MAX_GROWTH)
    grown = 0
    basis = _start_block(d, v0, b, seed, dt, dev)
    Q = basis.rows  # rows: e multiplied, then the frontier (not yet multiplied)
    H = torch.zeros(0, 0, dtype=torch.float64)  # (rows, e): <q_i, A q_j> for every row i and multiplied j
    e = 0
    nmv = 0
    converged = exact = False
    history: list[float] = []
    theta = Y = resid = None
    fresh = 0  # random directions drawn so far (their seeds)
    targets: list[int] = []  # Ritz pairs whose residual directions alone form the next block (warm starts)
    while True:
        if targets and Q.shape[0] > e:
            # rotate the frontier so that its first rows span the targets' residuals, and multiply those
            U, _ = torch.linalg.qr(H[e:] @ Y[:, targets], mode="complete")
            Q[e:] = U.T.to(device=dev, dtype=dt) @ Q[e:]
            H[e:] = U.T @ H[e:]
            nb = min(len(targets), Q.shape[0] - e, m_max - nmv)
        else:
            while Q.shape[0] - e < b and Q.shape[0] < d:  # the block needs random columns (growth or breakdown)
                fresh += 1
                g = torch.Generator().manual_seed(int(seed) + 7919 * fresh)
                added = basis.add_direction(_gaussian(d, g).to(device=dev, dtype=dt))
                Q = basis.rows
                if not added:  # the basis spans the whole space
                    break
            nb = min(b, Q.shape[0] - e, m_max - nmv)
        if nb <= 0:  # no direction left outside the basis: the Ritz values are the eigenvalues
            converged = exact = True
            break
        Qb = Q[e : e + nb]
        W = A.matmat(Qb.T)  # (d, nb)
        nmv += nb
        rows = Q.shape[0]
        C = _coef(Q, W)  # (rows, nb): couplings with every basis vector, summed in float64
        W = W - Q.T @ C.to(device=dev, dtype=dt)
        Hn = torch.zeros(rows, e + nb, dtype=torch.float64)
        Hn[: H.shape[0], :e] = H
        Hn[:, e : e + nb] = C
        Hn[e : e + nb, :e] = C[:e].T
        D = Hn[e : e + nb, e : e + nb]
        Hn[e : e + nb, e : e + nb] = (D + D.T) / 2
        e += nb
        scale = max(float(Hn[:e, :e].abs().max()), tiny)
        # the part of A Qb outside the basis: new frontier rows, coupled to the block by R (upper triangular)
        R = []
        for j in range(nb):
            w = W[:, j]
            if Q.shape[0] > rows:
                c_new = _coef(Q[rows:], w[:, None])[:, 0]
                w = w - Q[rows:].T @ c_new.to(device=dev, dtype=dt)
            else:
                c_new = torch.zeros(0, dtype=torch.float64)
            w, nw = _orthogonalise(w, Q)
            col = torch.zeros(nb, dtype=torch.float64)
            col[: c_new.shape[0]] = c_new
            if nw > 100 * tiny * scale and Q.shape[0] < d:
                col[Q.shape[0] - rows] = nw
                basis.append(w / nw)
                Q = basis.rows
            R.append(col)
        n_new = Q.shape[0] - rows
        Hf = torch.zeros(Q.shape[0], e, dtype=torch.float64)
        Hf[:rows] = Hn
        if n_new:
            Hf[rows:, e - nb : e] = torch.stack(R, dim=1)[:n_new]
        H = Hf
        Hm = H[:e, :e]
        evals, evecs = torch.linalg.eigh((Hm + Hm.T) / 2)
        theta, Y = evals.flip(0), evecs.flip(1)
        resid = torch.linalg.vector_norm(H[e:] @ Y, dim=0) if H.shape[0] > e else torch.zeros(e, dtype=torch.float64)
        history.extend([float(theta[0])] * nb)
        exact = e >= d
        targets = []
        if e >= k:
            if criterion == "residual":
                met = [bool(resid[i] <= tol * abs(theta[i])) for i in range(k)]
                known = [True] * k
            else:
                bounds, known, _ = _error_bounds(theta, resid, k, exact, tiny, d)
                met = [known[i] and bool(bounds[i] <= tol * abs(theta[i])) for i in range(k)]
            check = "ok" if exact else _block_check(theta, resid, k, b, warm and e == nb)
            if exact or (all(met) and check == "ok"):
                converged = True
                break
            if check == "grow" and b < b_cap:
                b += 1
                grown += 1
            elif warm and check == "ok":  # refine only what is missing: the unmet pairs and unsettled next ones
                targets = sorted({i for i in range(k) if not met[i]} | {i + 1 for i in range(k) if not known[i]})
                targets = [i for i in targets if i < e]
        if nmv >= m_max:
            break
    kk = min(k, e)
    nbk = min(k + 1 + grown, e)  # the next start block: the wanted, the next, one more per column added
    V = _unit_columns(Q[:e].T @ Y[:, :nbk].to(device=dev, dtype=dt))
    bounds, known, gap_out = _error_bounds(theta, resid, kk, exact, tiny, d)
    return EigResult(
        eigenvalues=theta[:kk].to(device=dev, dtype=dt),
        eigenvectors=V[:, :kk].clone(),
        residuals=resid[:kk].to(device=dev, dtype=dt),
        num_matvecs=nmv,
        converged=converged,
        history=history,
        error_bounds=bounds.to(device=dev, dtype=dt),
        gap=gap_out,
        gap_known=tuple(known),
        ritz_block=V,
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
