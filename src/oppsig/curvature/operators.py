"""Linear operators over flat parameter vectors, each declaring whether it is symmetric.

Curvature matrices of a network (Hessian, Gauss-Newton, their preconditioned or
restricted versions) are never formed; they are :class:`LinearOperator` objects
that multiply a flat vector ``(d,)`` or a block of vectors ``(d, k)``. Operators
compose (``A @ B``, ``A + B``, ``c * A``) and convert to SciPy
(:meth:`LinearOperator.to_scipy`) for cross-checks with ``eigsh``. Every operator
says whether it is symmetric (:attr:`LinearOperator.symmetric`): the curvature
matrices, their sums and multiples are; a product ``A @ B`` is not in general,
and the symmetric eigensolvers (:func:`~oppsig.curvature.lanczos.lanczos`) and
:meth:`~LinearOperator.to_scipy` refuse it.

This module holds the base class, its composition and the operators of an
explicit matrix or a function; the curvature matrices of a model are in
:mod:`oppsig.curvature.model_operators`.

Example:
    >>> import torch
    >>> A = DenseOperator(torch.diag(torch.tensor([3.0, 1.0])))
    >>> ((2 * A + A) @ torch.ones(2)).tolist()
    [9.0, 3.0]
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import OppsigError

__all__ = [
    "LinearOperator",
    "DenseOperator",
    "CallableOperator",
    "as_operator",
]


class LinearOperator:
    """A square linear map on flat vectors, applied through :meth:`matvec`.

    Subclasses implement ``_matvec(v)`` for ``v`` of shape ``(d,)`` on the
    operator's device and dtype (and may override ``_matmat``). Inputs are moved
    to that device and dtype before the call. ``num_matvecs`` counts how many
    vectors were multiplied.

    Attributes:
        shape: ``(d, d)``.
        dtype, device: where the operator computes.
        symmetric: whether ``A = A^T`` (declared by each subclass; True for
            curvature matrices, False for a product of two operators).
    """

    symmetric: bool = True

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device | str):
        self.shape = (int(dim), int(dim))
        self.dtype = dtype
        self.device = torch.device(device)
        self.num_matvecs = 0

    # subclasses ------------------------------------------------------------
    def _matvec(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    # public ----------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.shape[0]

    def _prep(self, v: torch.Tensor, ndim: int) -> torch.Tensor:
        v = torch.as_tensor(v)
        if v.dim() != ndim or v.shape[0] != self.dim:
            want = f"({self.dim},)" if ndim == 1 else f"({self.dim}, k)"
            raise OppsigError(f"operator of size {self.dim} got a tensor of shape {tuple(v.shape)}; pass shape {want}")
        return v.to(device=self.device, dtype=self.dtype)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A v`` for ``v`` of shape ``(d,)`` -> ``(d,)``.

        Raises:
            OppsigError: when ``v`` does not have shape ``(d,)``.
        """
        v = self._prep(v, 1)
        self.num_matvecs += 1
        return self._matvec(v)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` for ``V`` of shape ``(d, k)`` -> ``(d, k)``.

        Raises:
            OppsigError: when ``V`` does not have shape ``(d, k)``.
        """
        V = self._prep(V, 2)
        self.num_matvecs += V.shape[1]
        return self._matmat(V)

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return _ProductOperator(self, other)
        other = torch.as_tensor(other)
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    def __add__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _SumOperator(self, other, 1.0)

    def __sub__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _SumOperator(self, other, -1.0)

    def __mul__(self, c):
        if isinstance(c, torch.Tensor) and c.numel() == 1:
            c = float(c)
        if not isinstance(c, (int, float)):
            return NotImplemented
        return _ScaledOperator(self, float(c))

    __rmul__ = __mul__

    def __neg__(self):
        return _ScaledOperator(self, -1.0)

    def to_dense(self) -> torch.Tensor:
        """The full ``(d, d)`` matrix (``d`` products; for small operators and tests)."""
        return self.matmat(torch.eye(self.dim, dtype=self.dtype, device=self.device))

    def require_symmetric(self, what: str) -> None:
        """Raise unless this operator is symmetric.

        Raises:
            OppsigError: naming ``what`` needs symmetry and what to pass instead.
        """
        if not self.symmetric:
            raise OppsigError(
                f"{what} needs a symmetric operator, but {type(self).__name__.lstrip('_')} is not symmetric "
                "(a product A @ B of symmetric operators is not, in general); pass a symmetric one, e.g. "
                "B^(1/2) A B^(1/2) as PreconditionedOperator(A, diag) instead of B @ A"
            )

    def to_scipy(self):
        """This operator as a :class:`scipy.sparse.linalg.LinearOperator` in float64 NumPy.

        Vectors are converted to the operator's device and dtype, multiplied, and
        returned as float64 arrays, so SciPy's solvers (``eigsh``) can run on it.
        The transpose product is the same product, so the operator must be symmetric.

        Raises:
            OppsigError: for an operator that is not symmetric.

        Example:
            >>> from scipy.sparse.linalg import eigsh
            >>> A = DenseOperator(torch.diag(torch.arange(5.0)))
            >>> round(float(eigsh(A.to_scipy(), k=1, which="LA")[0][0]), 4)
            4.0
        """
        self.require_symmetric("to_scipy")
        from scipy.sparse.linalg import LinearOperator as SciPyOperator

        def mv(x):
            x = np.asarray(x, dtype=np.float64)
            squeeze = x.ndim == 2 and x.shape[1] == 1
            t = torch.from_numpy(np.ascontiguousarray(x.reshape(-1) if squeeze else x))
            y = self.matvec(t) if t.dim() == 1 else self.matmat(t)
            y = y.detach().to("cpu", torch.float64).numpy()
            return y.reshape(-1, 1) if squeeze else y

        def mm(X):
            t = torch.from_numpy(np.ascontiguousarray(np.asarray(X, dtype=np.float64)))
            return self.matmat(t).detach().to("cpu", torch.float64).numpy()

        return SciPyOperator(self.shape, matvec=mv, rmatvec=mv, matmat=mm, dtype=np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, dtype={self.dtype}, device={self.device})"


def _check_compatible(a: LinearOperator, b: LinearOperator) -> None:
    if a.shape != b.shape:
        raise OppsigError(f"cannot combine operators of sizes {a.dim} and {b.dim}; both must act on the same space")
    if a.dtype != b.dtype or a.device != b.device:
        raise OppsigError(
            f"cannot combine operators on {a.device}/{a.dtype} and {b.device}/{b.dtype}; "
            "build both with the same device and dtype"
        )


class _SumOperator(LinearOperator):
    def __init__(self, a: LinearOperator, b: LinearOperator, sign: float):
        _check_compatible(a, b)
        super().__init__(a.dim, a.dtype, a.device)
        self.a, self.b, self.sign = a, b, sign
        self.symmetric = a.symmetric and b.symmetric

    def _matvec(self, v):
        return self.a.matvec(v) + self.sign * self.b.matvec(v)

    def _matmat(self, V):
        return self.a.matmat(V) + self.sign * self.b.matmat(V)


class _ScaledOperator(LinearOperator):
    def __init__(self, a: LinearOperator, c: float):
        super().__init__(a.dim, a.dtype, a.device)
        self.a, self.c = a, c
        self.symmetric = a.symmetric

    def _matvec(self, v):
        return self.c * self.a.matvec(v)

    def _matmat(self, V):
        return self.c * self.a.matmat(V)


class _ProductOperator(LinearOperator):
    """``A B``: not symmetric in general, even when ``A`` and ``B`` are."""

    symmetric = False

    def __init__(self, a: LinearOperator, b: LinearOperator):
        _check_compatible(a, b)
        super().__init__(a.dim, a.dtype, a.device)
        self.a, self.b = a, b

    def _matvec(self, v):
        return self.a.matvec(self.b.matvec(v))

    def _matmat(self, V):
        return self.a.matmat(self.b.matmat(V))


class DenseOperator(LinearOperator):
    """An explicit ``(d, d)`` matrix as an operator (tests, small problems).

    ``symmetric`` is measured: ``|M - M^T| <= 100 eps max|M|`` entrywise.

    Raises:
        OppsigError: when ``matrix`` is not square.

    Example:
        >>> DenseOperator(torch.eye(3)).shape
        (3, 3)
        >>> DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]])).symmetric
        False
    """

    def __init__(self, matrix: torch.Tensor):
        matrix = torch.as_tensor(matrix)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise OppsigError(f"DenseOperator needs a square (d, d) matrix, got shape {tuple(matrix.shape)}")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix
        scale = float(matrix.abs().max()) if matrix.numel() else 0.0
        eps = torch.finfo(matrix.dtype).eps if matrix.is_floating_point() else 0.0
        self.symmetric = bool(((matrix - matrix.mT).abs() <= 100 * eps * scale).all())

    def _matvec(self, v):
        return self.matrix @ v

    def _matmat(self, V):
        return self.matrix @ V


class CallableOperator(LinearOperator):
    """Wrap a function ``v (d,) -> A v (d,)`` as an operator of size ``dim``.

    ``symmetric`` is the caller's declaration (default True: the function is
    taken to be a symmetric matrix's product, as the eigensolvers need).

    Example:
        >>> op = CallableOperator(lambda v: 2 * v, dim=4)
        >>> (op @ torch.ones(4)).tolist()
        [2.0, 2.0, 2.0, 2.0]
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", *, symmetric: bool = True):
        super().__init__(dim, dtype, device)
        self.fn = fn
        self.symmetric = bool(symmetric)

    def _matvec(self, v):
        return self.fn(v)


def as_operator(op, dim: int | None = None, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> LinearOperator:
    """``op`` as a :class:`LinearOperator`: operators pass through, tensors become
    :class:`DenseOperator`, callables need ``dim`` (and take ``dtype``/``device``).

    Raises:
        OppsigError: for a callable without ``dim`` or an unsupported object.
    """
    if isinstance(op, LinearOperator):
        return op
    if isinstance(op, torch.Tensor):
        return DenseOperator(op)
    if callable(op):
        if dim is None:
            raise OppsigError("a plain function needs its size: pass dim=d (and dtype=, device= if not float32 on cpu)")
        return CallableOperator(op, dim, dtype or torch.float32, device or "cpu")
    raise OppsigError(f"cannot use a {type(op).__name__} as an operator; "
                      "pass a LinearOperator, a (d, d) tensor or a function with dim=")
