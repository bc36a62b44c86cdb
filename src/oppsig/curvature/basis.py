"""Start vectors and orthonormal bases for the Krylov eigensolvers.

:func:`start_vector` and :func:`start_block` turn a warm start ``v0`` (or a
seed) into the first vector or block of a solve; :class:`Basis` keeps the
orthonormal rows of a growing basis; the inner products, couplings and norms
are summed in float64 (:func:`dot64`, :func:`couplings`, :func:`norm64`).

Example:
    >>> import torch
    >>> float(start_vector(3, None, seed=0, dtype=torch.float64, device=torch.device("cpu")).norm())
    1.0
"""

from __future__ import annotations

import math

import torch

from ..errors import OppsigError

__all__ = ["start_vector", "start_block", "Basis", "gaussian", "dot64", "couplings", "norm64", "unit_columns",
           "orthogonalise", "orthogonalise_rows"]


def start_vector(dim: int, v0: torch.Tensor | None, seed: int, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """A unit start vector ``(d,)``: ``v0`` (or the sum of its unit columns when ``(d, j)``), else seeded Gaussian.

    The Gaussian is drawn on the CPU with ``seed``, so it is the same on every device.

    Raises:
        OppsigError: when ``v0`` does not have shape ``(d,)`` or ``(d, j)``.
    """
    if v0 is not None:
        v = _start_columns(v0, dim, dtype, device)
        v = unit_columns(v).sum(dim=1) if torch.as_tensor(v0).dim() == 2 else v[:, 0]
        nrm = norm64(v)
        if math.isfinite(nrm) and nrm > 0:
            return (v.to(torch.float64) / nrm).to(dtype)
    v = gaussian(dim, torch.Generator().manual_seed(int(seed)))
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


def gaussian(dim: int, g: torch.Generator) -> torch.Tensor:
    """A seeded Gaussian ``(d,)`` drawn on the CPU in float64, so it is the same on every device and dtype."""
    return torch.randn(dim, generator=g, dtype=torch.float64)


def dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    """``<a, b>`` with the products summed in float64 (float32 sums over ~1e6 entries lose up to ~1e-4)."""
    return float((a * b).sum(dtype=torch.float64))


COUPLING_CHUNK = 1 << 18
"""Entries of the float64 copy of ``Q`` that :func:`couplings` makes at once (2 MiB, to stay in cache), within
chunks of ``2**14`` to ``2**16`` columns (on the CPU, 24 rows of 656,810 took 25 ms in chunks of ``2**14`` and
131 ms in chunks of ``2**18``; one row 0.8 ms in chunks of ``2**16``, 1.7 ms in chunks of ``2**14``)."""


def couplings(Q: torch.Tensor, W: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``Q @ W`` in float64, ``(rows, cols)`` on the CPU: summed over chunks of the ``d`` entries in float64
    (float32 products over ~1e6 entries lose up to ~1e-4, which would move the projected matrix).

    ``chunk``: columns per chunk (default: :data:`COUPLING_CHUNK` entries of ``Q``). Each chunk of ``W`` is cast
    as ``(cols, chunk)`` rows, so that both operands of the float64 product run along ``d``.

    Example:
        >>> Q, W = torch.eye(2, 3), torch.arange(6.0).reshape(3, 2)
        >>> couplings(Q, W).tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """
    if Q.dtype == torch.float64:
        return (Q @ W).cpu()
    out = torch.zeros(Q.shape[0], W.shape[1], dtype=torch.float64, device=Q.device)
    chunk = chunk or max(1 << 14, min(1 << 16, COUPLING_CHUNK // max(Q.shape[0], 1)))
    Wt = W.T  # (cols, d)
    for s in range(0, Q.shape[1], chunk):
        Wc = Wt[:, s : s + chunk].to(torch.float64, memory_format=torch.contiguous_format)
        out += Q[:, s : s + chunk].to(torch.float64) @ Wc.T
    return out.cpu()


def norm64(a: torch.Tensor) -> float:
    """``||a||`` accumulated in float64."""
    return float(torch.linalg.vector_norm(a, dtype=torch.float64))


def unit_columns(V: torch.Tensor) -> torch.Tensor:
    """The columns of ``V`` scaled to unit norm (in float64, returned in ``V``'s dtype)."""
    n = torch.linalg.vector_norm(V, dim=0, dtype=torch.float64, keepdim=True)
    return (V.to(torch.float64) / n.clamp_min(torch.finfo(torch.float64).tiny)).to(V.dtype)


def orthogonalise(w: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Remove from ``w`` its components along the orthonormal rows of ``Q``; return it and its norm.

    Classical Gram-Schmidt, repeated once when the first pass cancelled most of
    ``w`` (the DGKS criterion), which keeps the basis orthogonal to working precision.
    """
    before = norm64(w)
    w = w - Q.T @ (Q @ w)
    after = norm64(w)
    if after < 0.7071 * before:
        w = w - Q.T @ (Q @ w)
        after = norm64(w)
    return w, after


def orthogonalise_rows(W: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """:func:`orthogonalise` for every row of ``W`` ``(b, d)`` at once: each pass reads the basis ``Q`` once for
    the whole block (two products) instead of twice per row; repeated for the rows it cancelled most of (DGKS).

    Example:
        >>> W = orthogonalise_rows(torch.ones(2, 3), torch.eye(3)[:1])
        >>> W.tolist()
        [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    """
    if Q.shape[0] == 0:
        return W
    before = torch.linalg.vector_norm(W, dim=1, dtype=torch.float64)
    W = torch.addmm(W, W @ Q.T, Q, alpha=-1)
    redo = torch.nonzero(torch.linalg.vector_norm(W, dim=1, dtype=torch.float64) < 0.7071 * before)[:, 0]
    if redo.numel():
        Wi = W[redo]
        W[redo] = torch.addmm(Wi, Wi @ Q.T, Q, alpha=-1)
    return W


def start_block(dim: int, v0: torch.Tensor | None, b: int, seed: int, dtype: torch.dtype,
                 device: torch.device) -> Basis:
    """A basis of ``b'`` orthonormal rows: the usable columns of ``v0`` first, then seeded Gaussian ones up to ``b``.

    Raises:
        OppsigError: when ``v0`` does not have shape ``(d,)`` or ``(d, j)``.
    """
    basis = Basis(torch.empty(0, dim, dtype=dtype, device=device), min(dim, 32))
    if v0 is not None:
        V = _start_columns(v0, dim, dtype, device)
        for j in range(V.shape[1]):
            basis.add_direction(V[:, j])
    g = torch.Generator().manual_seed(int(seed))
    tries = 0
    while basis.n < b and tries < 4 * b + 8:
        tries += 1
        basis.add_direction(gaussian(dim, g).to(device=device, dtype=dtype))
    return basis


class Basis:
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
        n0 = norm64(w)
        if not (math.isfinite(n0) and n0 > 0):
            return False
        w, nw = orthogonalise(w, self.rows) if self.n else (w, n0)
        if nw <= 1e3 * torch.finfo(self.buf.dtype).eps * n0:
            return False
        self.append(w / nw)
        return True
