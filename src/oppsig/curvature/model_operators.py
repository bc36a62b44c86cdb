"""The curvature matrices of a model's mean loss as operators over flat parameter vectors.

:class:`HessianOperator` (and its diagonal blocks), :class:`GGNOperator` (the
generalised Gauss-Newton matrix), :class:`PreconditionedOperator` (``P^{-1/2}
A P^{-1/2}`` for a diagonal ``P``) and :func:`all_reduced` (products summed
over processes); all are symmetric
:class:`~oppsig.curvature.operators.LinearOperator` objects.

Example:
    >>> import torch
    >>> from oppsig.curvature.operators import DenseOperator
    >>> P = PreconditionedOperator(DenseOperator(torch.diag(torch.tensor([8.0, 2.0]))), torch.tensor([4.0, 1.0]))
    >>> (P @ torch.ones(2)).tolist()
    [2.0, 2.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from ..errors import OppsigError
from .engine import HVP
from .layout import ParamLayout
from .operators import LinearOperator
from .problem import make_hvp

if TYPE_CHECKING:  # pragma: no cover
    from ..distributed import DistContext

__all__ = [
    "HessianOperator",
    "GGNOperator",
    "PreconditionedOperator",
    "all_reduced",
]


class HessianOperator(LinearOperator):
    """The Hessian of the mean training loss, from an :class:`~oppsig.curvature.engine.HVP`.

    Build it with :meth:`from_model` (or ``HessianOperator(make_hvp(...))``).
    ``restrict(names)`` gives the diagonal block of a subset of the parameters,
    the others held fixed.

    Attributes:
        hvp: the underlying Hessian-vector product.
        layout: the flat order of the parameters this operator acts on.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
        >>> x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
        >>> H = HessianOperator.from_model(m, [(x, y)], get_loss("mse"))
        >>> H.shape
        (43, 43)
    """

    def __init__(self, hvp: HVP):
        super().__init__(hvp.layout.dim, hvp.dtype, hvp.device)
        self.hvp = hvp

    @classmethod
    def from_model(cls, model, batches, loss_fn, params=None, method: str = "auto", num_examples: int | None = None,
                   *, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                   batchnorm: str = "batch") -> "HessianOperator":
        """The Hessian of ``mean loss`` over ``batches`` (arguments of :func:`~oppsig.curvature.problem.make_hvp`)."""
        return cls(make_hvp(model, batches, loss_fn, params, method, num_examples,
                            dtype=dtype, device=device, batchnorm=batchnorm))

    @property
    def layout(self) -> ParamLayout:
        return self.hvp.layout

    @property
    def names(self) -> tuple[str, ...]:
        return self.hvp.layout.names

    def restrict(self, names: Sequence[str]) -> "HessianOperator":
        """The block of the Hessian for the parameters ``names`` (others fixed)."""
        return HessianOperator(self.hvp.restrict(names))

    def _matvec(self, v):
        return self.hvp.matvec(v)

    def _matmat(self, V):
        return self.hvp.matmat(V)


class GGNOperator(LinearOperator):
    """The generalised Gauss-Newton matrix ``G = (1/N) sum_i J_i^T H_i J_i`` of the mean loss.

    ``J_i`` is the Jacobian of example i's network outputs with respect to the
    parameters and ``H_i`` the Hessian of its loss with respect to those outputs
    (positive semi-definite for MSE and cross-entropy, so ``G`` is too). Same
    arguments and batching as :class:`HessianOperator`; each product costs
    about one forward-mode and one reverse-mode pass per physical batch.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
        >>> x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
        >>> G = GGNOperator.from_model(m, [(x, y)], get_loss("mse"))
        >>> bool(torch.linalg.eigvalsh(G.to_dense()).min() > -1e-12)
        True
    """

    def __init__(self, hvp: HVP):
        super().__init__(hvp.layout.dim, hvp.dtype, hvp.device)
        self.hvp = hvp

    @classmethod
    def from_model(cls, model, batches, loss_fn, params=None, num_examples: int | None = None,
                   *, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                   batchnorm: str = "batch") -> "GGNOperator":
        return cls(make_hvp(model, batches, loss_fn, params, "fwd_rev", num_examples,
                            dtype=dtype, device=device, batchnorm=batchnorm))

    @property
    def layout(self) -> ParamLayout:
        return self.hvp.layout

    def _matvec(self, v):
        return self.hvp.ggn_matvec(v)


class PreconditionedOperator(LinearOperator):
    """``P^{-1/2} A P^{-1/2}`` for a positive diagonal preconditioner ``P = diag(diag)``.

    With ``P = sqrt(v_hat) + eps`` (Adam's denominator) the top eigenvalue of this
    operator is the preconditioned sharpness, compared with
    :func:`~oppsig.curvature.thresholds.adam_threshold`.

    Args:
        op: the operator ``A`` (d, d).
        diag: the diagonal of ``P``, shape ``(d,)``, every entry > 0.

    Raises:
        OppsigError: when ``diag`` has the wrong shape or a non-positive / non-finite entry.

    Example:
        >>> from oppsig.curvature.operators import DenseOperator
        >>> A = DenseOperator(torch.eye(2))
        >>> PreconditionedOperator(A, torch.tensor([4.0, 1.0])).to_dense().diag().tolist()
        [0.25, 1.0]
    """

    def __init__(self, op: LinearOperator, diag: torch.Tensor):
        super().__init__(op.dim, op.dtype, op.device)
        diag = torch.as_tensor(diag)
        if diag.shape != (op.dim,):
            raise OppsigError(f"preconditioner diagonal has shape {tuple(diag.shape)}; pass one of shape ({op.dim},)")
        if not bool(torch.isfinite(diag).all()) or bool((diag <= 0).any()):
            raise OppsigError("preconditioner diagonal must be finite and > 0; add eps (e.g. sqrt(v_hat) + eps)")
        self.op = op
        self.diag = diag.to(device=op.device, dtype=op.dtype)
        self.scale = self.diag.rsqrt()
        self.symmetric = op.symmetric

    def _matvec(self, v):
        return self.scale * self.op.matvec(self.scale * v)

    def _matmat(self, V):
        s = self.scale[:, None]
        return s * self.op.matmat(s * V)


def all_reduced(op, ctx: DistContext):
    """A linear operator whose products are summed over ranks.

    Each rank's ``op`` holds the Hessian of its shard's share of the global mean
    loss (its HVP built with ``num_examples`` = the global count), so the sum over
    ranks is the Hessian of the global loss; Lanczos then runs identically on
    every rank (same start vector from the same seed).
    """
    if not ctx.enabled:
        return op

    class AllReduced(LinearOperator):
        def __init__(self) -> None:
            super().__init__(op.dim, op.dtype, op.device)
            self.symmetric = op.symmetric

        def _matvec(self, v):
            return ctx.all_reduce_(op.matvec(v).clone())

    return AllReduced()
