"""What an eigensolver returns: :class:`EigResult`, and what is read from one.

:class:`EigResult` holds the eigenpairs of :func:`~oppsig.curvature.lanczos.lanczos`
or :func:`~oppsig.curvature.lanczos.power_iteration` with their residuals,
error bounds and ``converged`` flag; :func:`warm_start` is the start block of
the next solve and :func:`eigen_metrics` one eigenvalue as training metrics.

Example:
    >>> import torch
    >>> r = EigResult(torch.tensor([2.0]), torch.ones(1, 1), torch.tensor([0.1]), num_matvecs=3, converged=True)
    >>> round(r.max_relative_error, 3), r.work
    (0.05, 3.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["EigResult", "warm_start", "eigen_metrics", "UNCONVERGED_MARK"]


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
        >>> from oppsig.curvature import lanczos
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
        >>> from oppsig.curvature import lanczos
        >>> r = lanczos(torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64)), tol=1e-8)
        >>> sorted(eigen_metrics("sharpness", r))
        ['converged/sharpness', 'err/sharpness', 'sharpness']
    """
    bounds = result.error_bounds if result.error_bounds is not None else result.residuals
    return {key: float(result.eigenvalues[i]), f"err/{key}": float(bounds[i]),
            f"converged/{key}": 1.0 if result.converged else 0.0}
