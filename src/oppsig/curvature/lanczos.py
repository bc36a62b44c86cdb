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
residuals said 5e-7); the couplings are summed in float64, those of multiplied
rows taken from the projected matrix (``<q_i, A q_j> = <A q_i, q_j>``).

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

import torch

from ..errors import OppsigError
from .basis import (Basis, couplings, dot64, gaussian, norm64, orthogonalise, orthogonalise_rows, start_block,
                    start_vector, unit_columns)
from .bounds import CRITERIA, block_check, error_bounds, stop_rule
from .operators import LinearOperator, as_operator
from .results import EigResult

__all__ = ["MAX_GROWTH", "lanczos", "power_iteration"]

MAX_GROWTH = 6  # most random columns added to the first block
FRESH_SEED_STRIDE = 7919
"""The k-th random column added to a basis is drawn with seed ``seed + FRESH_SEED_STRIDE * k``: a prime stride,
so that the added columns' seeds never meet the start block's (``seed``, ``seed + 1``, ...) in practice."""


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
    A, m_max = _checked_operator(op, k, max_iter, block, criterion, dim, dtype, device)
    d = A.dim
    warm = v0 is not None
    b = _first_block_size(k, v0, block, d, m_max)
    b_cap = min(d, m_max, b + MAX_GROWTH)
    grown = 0
    kr = _Krylov(A, start_block(d, v0, b, seed, A.dtype, A.device), seed)
    converged = exact = False
    targets: list[int] = []  # Ritz pairs whose residual directions alone form the next block (warm starts)
    while True:
        nb = kr.next_block(targets, b, m_max)
        if nb <= 0:  # no direction left outside the basis: the Ritz values are the eigenvalues
            converged = exact = True
            break
        kr.multiply(nb)
        exact = kr.e >= d
        targets = []
        if kr.e >= k:
            met, known = stop_rule(kr.theta, kr.resid, k, tol, criterion, exact, kr.tiny, kr.d)
            check = "ok" if exact else block_check(kr.theta, kr.resid, k, b, warm and kr.e == nb)
            if exact or (all(met) and check == "ok"):
                converged = True
                break
            if check == "grow" and b < b_cap:
                b += 1
                grown += 1
            elif warm and check == "ok":  # refine only what is missing: the unmet pairs and unsettled next ones
                targets = sorted({i for i in range(k) if not met[i]} | {i + 1 for i in range(k) if not known[i]})
                targets = [i for i in targets if i < kr.e]
        if kr.nmv >= m_max:
            break
    return kr.result(k, grown, converged, exact)


def _checked_operator(op, k: int, max_iter: int, block: int | None, criterion: str, dim: int | None,
                      dtype: torch.dtype | None, device: torch.device | str | None) -> tuple[LinearOperator, int]:
    """``op`` as a symmetric operator and the most products ``m_max``, after checking the arguments of :func:`lanczos`.

    Raises:
        OppsigError: as :func:`lanczos`.
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
    return A, m_max


def _first_block_size(k: int, v0: torch.Tensor | None, block: int | None, d: int, m_max: int) -> int:
    """The first block's size: ``block``, else the columns of a warm ``v0`` (at least ``k + 1``), else ``k + 2``."""
    if block is not None:
        b = int(block)
    elif v0 is not None:  # the start's columns (the previous solve's block), at least k + 1
        b = max(k + 1, int(torch.as_tensor(v0).shape[1]) if torch.as_tensor(v0).dim() == 2 else 1)
    else:  # k + 1 and a spare random column (see the module docstring)
        b = k + 2
    return max(1, min(b, d, m_max))


class _Krylov:
    """The state of a block Lanczos solve: the basis, the projected matrix and the Ritz pairs.

    Attributes:
        basis: the orthonormal rows; ``Q`` (rows, d) is its current view: the
            first ``e`` rows multiplied, then the frontier (not yet multiplied).
        H: ``(rows, e)`` float64, ``<q_i, A q_j>`` for every row i and multiplied j.
        theta, Y, resid: Ritz values (descending), their vectors in the basis
            ``(e, e)`` and residual norms, after the last block.
        nmv: products so far; fresh: random directions drawn so far (their seeds).
    """

    def __init__(self, A: LinearOperator, basis: Basis, seed: int) -> None:
        self.A, self.basis, self.seed = A, basis, seed
        self.d, self.dt, self.dev = A.dim, A.dtype, A.device
        self.tiny = torch.finfo(self.dt).eps
        self.Q = basis.rows
        self.H = torch.zeros(0, 0, dtype=torch.float64)
        self.e = 0
        self.nmv = 0
        self.fresh = 0
        self.history: list[float] = []
        self.theta = self.Y = self.resid = None

    def next_block(self, targets: list[int], b: int, m_max: int) -> int:
        """Prepare the next block at rows ``e:``; return its size (0: the basis spans the whole space).

        With ``targets``, the frontier is rotated so that its first rows span
        the targets' residuals; otherwise random rows are added until the
        frontier holds ``b`` (growth or breakdown).
        """
        e, dev, dt = self.e, self.dev, self.dt
        if targets and self.Q.shape[0] > e:
            U, _ = torch.linalg.qr(self.H[e:] @ self.Y[:, targets], mode="complete")
            self.Q[e:] = U.T.to(device=dev, dtype=dt) @ self.Q[e:]
            self.H[e:] = U.T @ self.H[e:]
            return min(len(targets), self.Q.shape[0] - e, m_max - self.nmv)
        while self.Q.shape[0] - e < b and self.Q.shape[0] < self.d:
            self.fresh += 1
            g = torch.Generator().manual_seed(int(self.seed) + FRESH_SEED_STRIDE * self.fresh)
            added = self.basis.add_direction(gaussian(self.d, g).to(device=dev, dtype=dt))
            self.Q = self.basis.rows
            if not added:  # the basis spans the whole space
                break
        return min(b, self.Q.shape[0] - e, m_max - self.nmv)

    def multiply(self, nb: int) -> None:
        """Multiply the block of rows ``e : e + nb``, extend the basis and ``H``, and update the Ritz pairs."""
        Q, e, H, dev, dt = self.Q, self.e, self.H, self.dev, self.dt
        Qb = Q[e : e + nb]
        W = self.A.matmat(Qb.T)  # (d, nb)
        self.nmv += nb
        rows = Q.shape[0]
        C = self._couplings(W, nb)  # (rows, nb): couplings with every basis vector
        nz = torch.nonzero(C.any(dim=1))  # older rows have zero couplings: skip them
        lo = int(nz[0]) if nz.numel() else rows
        Wr = torch.addmm(W.T, C[lo:].T.to(device=dev, dtype=dt), Q[lo:], alpha=-1)  # rows (nb, d), like Q
        Hn = torch.zeros(rows, e + nb, dtype=torch.float64)
        Hn[: H.shape[0], :e] = H
        Hn[:, e : e + nb] = C
        D = Hn[e : e + nb, e : e + nb]
        Hn[e : e + nb, e : e + nb] = (D + D.T) / 2
        e += nb
        scale = max(float(Hn[:e, :e].abs().max()), self.tiny)
        R = self._extend_frontier(Wr, rows, nb, scale)
        n_new = self.Q.shape[0] - rows
        Hf = torch.zeros(self.Q.shape[0], e, dtype=torch.float64)
        Hf[:rows] = Hn
        if n_new:
            Hf[rows:, e - nb : e] = torch.stack(R, dim=1)[:n_new]
        self.H, self.e = Hf, e
        Hm = Hf[:e, :e]
        evals, evecs = torch.linalg.eigh((Hm + Hm.T) / 2)
        self.theta, self.Y = evals.flip(0), evecs.flip(1)
        self.resid = torch.linalg.vector_norm(Hf[e:] @ self.Y, dim=0) if Hf.shape[0] > e \
            else torch.zeros(e, dtype=torch.float64)
        self.history.extend([float(self.theta[0])] * nb)

    def _couplings(self, W: torch.Tensor, nb: int) -> torch.Tensor:
        """``<q_i, A q_j>`` ``(rows, nb)`` of every basis row with the block just multiplied (``W = A Qb``):
        ``<A q_i, q_j>``, kept in ``H``, for a multiplied row ``i < e`` (zero for a row added after it, made
        orthogonal to ``A q_i``); the rows not yet multiplied are summed in float64 from ``W``."""
        e, H = self.e, self.H
        C = torch.zeros(self.Q.shape[0], nb, dtype=torch.float64)
        kept = H[e : e + nb, :e]  # rows of the block that were in the basis at the last product
        C[:e, : kept.shape[0]] = kept.T
        C[e:] = couplings(self.Q[e:], W)
        return C

    def _extend_frontier(self, Wr: torch.Tensor, rows: int, nb: int, scale: float) -> list[torch.Tensor]:
        """Append the part of ``A Qb`` (rows ``Wr``, less the couplings) outside the basis as new frontier rows;
        return their couplings ``R``.

        ``R`` (one float64 column of ``nb`` per block vector) couples the block
        to the new rows and is upper triangular.
        """
        dev, dt = self.dev, self.dt
        Wr = orthogonalise_rows(Wr, self.Q[:rows])  # the second pass against the basis, for the whole block
        R = []
        for j in range(nb):
            w, new = Wr[j], self.Q[rows:]  # the rows added for this block so far
            c_new = couplings(new, w[:, None])[:, 0]
            if new.shape[0]:  # their couplings, then a second pass (over all rows if the first cancelled most of w)
                before = norm64(w)
                w = w - new.T @ c_new.to(device=dev, dtype=dt)
                w, nw = orthogonalise(w, self.Q if norm64(w) < 0.7071 * before else new)
            else:
                nw = norm64(w)
            col = torch.zeros(nb, dtype=torch.float64)
            col[: c_new.shape[0]] = c_new
            if nw > 100 * self.tiny * scale and self.Q.shape[0] < self.d:
                col[self.Q.shape[0] - rows] = nw
                self.basis.append(w / nw)
                self.Q = self.basis.rows
            R.append(col)
        return R

    def result(self, k: int, grown: int, converged: bool, exact: bool) -> EigResult:
        """The top ``k`` Ritz pairs with their bounds, and the next start block (the wanted, the next, one more
        per column added)."""
        e, dev, dt = self.e, self.dev, self.dt
        theta, resid = self.theta, self.resid
        kk = min(k, e)
        nbk = min(k + 1 + grown, e)
        V = unit_columns((self.Y[:, :nbk].T.to(device=dev, dtype=dt) @ self.Q[:e]).T.contiguous())  # (d, nbk)
        bounds, known, gap_out = error_bounds(theta, resid, kk, exact, self.tiny, self.d)
        return EigResult(
            eigenvalues=theta[:kk].to(device=dev, dtype=dt),
            eigenvectors=V[:, :kk].clone(),
            residuals=resid[:kk].to(device=dev, dtype=dt),
            num_matvecs=self.nmv,
            converged=converged,
            history=self.history,
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
        lam = dot64(v, w)
        history.append(lam)
        if prev is not None and abs(lam - prev) <= tol * (abs(prev) + 1e-6):
            converged = True
            break
        prev = lam
        nw = norm64(w)
        if nw == 0.0:
            converged = True
            break
        if nmv < max_iter:
            v = w / nw
        # on the last iteration keep (v, w) paired for the residual
    res = torch.tensor(norm64(w - lam * v) if w is not None else 0.0, dtype=A.dtype, device=A.device)
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
