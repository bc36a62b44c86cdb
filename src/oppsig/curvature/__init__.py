"""Curvature of the training loss: Hessian-vector products, operators, eigensolvers, sharpness.

- :mod:`.hvp`: ``make_hvp`` (double backprop or forward-over-reverse), the
  full-batch loss and gradient, over physical batches, as pure functions of a
  parameter dict.
- :mod:`.operators`: ``LinearOperator`` and the Hessian, Gauss-Newton,
  preconditioned and dense operators; parameter dict <-> flat vector helpers.
- :mod:`.lanczos`: ``lanczos`` (top-k, warm starts) and ``power_iteration``.
- :mod:`.quantities`: sharpness (full, per layer, Adam-preconditioned),
  stability thresholds, update projections, loss slices, trace estimates.
- :mod:`.hook`: ``CurvatureHook`` for the training loop.
- :mod:`.posthoc`: ``run_curvature``, the sharpness of a finished run at chosen
  steps, replayed from its checkpoints (``oppsig sharpness``).

Example:
    >>> import torch
    >>> from oppsig.models import build_model
    >>> from oppsig.losses import get_loss
    >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
    >>> b = make_batches(torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,)), 5)
    >>> r = sharpness(m, b, get_loss("mse"), k=1, tol=1e-6)
    >>> r.converged
    True
"""

from .hook import CurvatureHook
from .hvp import HVP, check_deterministic, full_loss, gradient, loss_and_gradient, make_batches, make_hvp, resolve_method
from .lanczos import EigResult, lanczos, power_iteration
from .operators import (
    CallableOperator,
    DenseOperator,
    GGNOperator,
    HessianOperator,
    LinearOperator,
    ParamLayout,
    PreconditionedOperator,
    as_operator,
    flatten_params,
    unflatten_params,
)
from .quantities import (
    adam_preconditioner,
    adam_threshold,
    gd_threshold,
    hutchinson_trace,
    layerwise_sharpness,
    loss_slice,
    momentum_threshold,
    optimizer_threshold,
    parameter_groups,
    preconditioned_sharpness,
    presample_rows,
    sharpness,
    top_hessian_eigs,
    update_projection,
)

__all__ = [
    "CurvatureHook",
    "HVP",
    "make_hvp",
    "make_batches",
    "resolve_method",
    "loss_and_gradient",
    "gradient",
    "full_loss",
    "check_deterministic",
    "EigResult",
    "lanczos",
    "power_iteration",
    "LinearOperator",
    "DenseOperator",
    "CallableOperator",
    "HessianOperator",
    "GGNOperator",
    "PreconditionedOperator",
    "ParamLayout",
    "as_operator",
    "flatten_params",
    "unflatten_params",
    "sharpness",
    "top_hessian_eigs",
    "presample_rows",
    "layerwise_sharpness",
    "parameter_groups",
    "preconditioned_sharpness",
    "adam_preconditioner",
    "gd_threshold",
    "momentum_threshold",
    "adam_threshold",
    "optimizer_threshold",
    "update_projection",
    "loss_slice",
    "hutchinson_trace",
]
