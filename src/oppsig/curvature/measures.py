"""Other curvature measures: an update's projection on a direction, the loss along a line, the Hessian trace.

- :func:`update_projection`: signed length of an update along a direction
  (e.g. the top Hessian eigenvector).
- :func:`loss_slice`: the mean loss ``L(theta + alpha * direction)`` for each alpha.
- :func:`hutchinson_trace`: Hutchinson estimate of an operator's trace.

Example:
    >>> import torch
    >>> update_projection(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))
    1.0
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ..errors import OppsigError
from .hvp import LossFn
from .layout import ParamLayout
from .operators import LinearOperator, as_operator
from .problem import make_hvp

__all__ = ["update_projection", "loss_slice", "hutchinson_trace"]


def update_projection(delta: torch.Tensor, eigvec: torch.Tensor) -> float:
    """Signed length of the update ``delta`` along the direction ``eigvec``: ``<delta, u> / ||u||``.

    Args:
        delta: flat ``(d,)`` update ``theta_{t+1} - theta_t``.
        eigvec: flat ``(d,)`` direction (e.g. the top Hessian eigenvector).

    Raises:
        OppsigError: for mismatched shapes or a zero direction.

    Example:
        >>> update_projection(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0]))
        4.0
    """
    if delta.shape != eigvec.shape or delta.dim() != 1:
        raise OppsigError(f"delta {tuple(delta.shape)} and eigvec {tuple(eigvec.shape)} "
                          "must be flat vectors of the same size")
    u = eigvec.to(device=delta.device, dtype=torch.float64)
    nu = u.norm()
    if float(nu) == 0:
        raise OppsigError("eigvec is zero; pass a non-zero direction")
    return float(delta.to(torch.float64) @ u / nu)


def loss_slice(
    model: nn.Module,
    batches,
    loss_fn: LossFn,
    direction: torch.Tensor | Mapping[str, torch.Tensor],
    alphas: Sequence[float] | torch.Tensor,
    *,
    params=None,
    num_examples: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batchnorm: str = "batch",
) -> torch.Tensor:
    """The mean loss along a line, ``L(theta + alpha * direction)`` for each alpha.

    Args:
        direction: flat ``(d,)`` over the varying parameters (model order, or the
            keys of ``params``), or a dict ``name -> tensor``; not normalised.
        alphas: step sizes, ``(A,)``.
        others: as in :func:`~oppsig.curvature.problem.make_hvp`.

    Returns:
        losses ``(A,)`` in the computation dtype.

    Raises:
        OppsigError: when ``direction`` does not match the parameters.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 3, widths=(5,))
        >>> b = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
        >>> loss_slice(m, b, get_loss("mse"), torch.zeros(43), [0.0, 1.0]).shape
        torch.Size([2])
    """
    hvp = make_hvp(model, batches, loss_fn, params, "rev_rev", num_examples, dtype=dtype, device=device,
                   batchnorm=batchnorm)
    lay: ParamLayout = hvp.layout
    if isinstance(direction, Mapping):
        direction = lay.flatten(direction)
    direction = torch.as_tensor(direction).to(device=hvp.device, dtype=hvp.dtype)
    if direction.shape != (lay.dim,):
        raise OppsigError(f"direction has shape {tuple(direction.shape)}; "
                          f"pass a flat ({lay.dim},) vector over the parameters")
    theta = lay.flatten(hvp.params)
    out = []
    for a in torch.as_tensor(alphas, dtype=torch.float64).tolist():
        out.append(hvp.at(lay.unflatten(theta + a * direction)).loss())
    return torch.stack(out)


def hutchinson_trace(op, num_samples: int = 100, seed: int = 0, *, dim: int | None = None,
                     dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> tuple[float, float]:
    """Hutchinson estimate of ``trace(A)`` with Rademacher probes: ``(mean, standard error)``.

    Raises:
        OppsigError: for ``num_samples < 2`` or a malformed ``op``.

    Example:
        >>> est, se = hutchinson_trace(torch.eye(4, dtype=torch.float64), num_samples=8)
        >>> est
        4.0
    """
    if num_samples < 2:
        raise OppsigError(f"num_samples must be >= 2 (got {num_samples})")
    A: LinearOperator = as_operator(op, dim, dtype, device)
    g = torch.Generator().manual_seed(int(seed))
    vals = []
    for _ in range(int(num_samples)):
        z = (torch.randint(0, 2, (A.dim,), generator=g) * 2 - 1).to(device=A.device, dtype=A.dtype)
        vals.append(float(torch.dot(z.to(torch.float64), A.matvec(z).to(torch.float64))))
    t = torch.tensor(vals, dtype=torch.float64)
    return float(t.mean()), float(t.std() / len(vals) ** 0.5)
