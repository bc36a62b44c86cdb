"""Curvature of the training loss: Hessian-vector products, operators, eigensolvers, sharpness.

- :mod:`.hvp`: the products as pure :mod:`torch.func` functions of a parameter
  dict (``hvp_fwd_rev``, ``hvp_rev_rev``, ``ggn_vp``) and the choice of method;
  :mod:`.engine`: ``HVP``, their sum over physical batches; :mod:`.problem`:
  ``make_hvp`` and the full-batch loss and gradient; :mod:`.batches`:
  ``make_batches``; :mod:`.layout`: parameter dict <-> flat vector.
- :mod:`.operators`: ``LinearOperator`` and its composition, dense and callable
  operators; :mod:`.model_operators`: the Hessian, Gauss-Newton and
  preconditioned operators.
- :mod:`.lanczos`: ``lanczos`` (top-k, warm starts) and ``power_iteration``;
  :mod:`.results`: ``EigResult`` and ``warm_start``; :mod:`.bounds`: the error
  bounds; :mod:`.basis`: start vectors and orthonormal bases.
- :mod:`.spectrum`: sharpness (full, per layer, Adam-preconditioned);
  :mod:`.thresholds`: the optimisers' stability thresholds; :mod:`.measures`:
  update projections, loss slices, trace estimates.
- :mod:`.hook`: ``CurvatureHook`` for the training loop.

The sharpness of a finished run at chosen steps, replayed from its checkpoints
(``oppsig sharpness``), composes training and curvature:
:func:`oppsig.experiments.run_curvature`.

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

from .batches import make_batches
from .hook import CurvatureHook
from .hvp import ggn_vp, hvp_fwd_rev, hvp_rev_rev
from .lanczos import lanczos, power_iteration
from .layout import ParamLayout, flatten_params, unflatten_params
from .measures import hutchinson_trace, loss_slice, update_projection
from .model_operators import GGNOperator, HessianOperator, PreconditionedOperator
from .operators import DenseOperator, as_operator
from .problem import check_deterministic, full_loss, gradient, loss_and_gradient, make_hvp
from .results import warm_start
from .spectrum import (
    adam_preconditioner,
    layerwise_sharpness,
    parameter_groups,
    preconditioned_sharpness,
    presample_rows,
    sharpness,
    top_hessian_eigs,
)
from .thresholds import Stability, adam_threshold, gd_threshold, momentum_threshold, optimizer_threshold, stability
from .thresholds import stability_of

__all__ = [
    "CurvatureHook",
    "DenseOperator",
    "GGNOperator",
    "HessianOperator",
    "ParamLayout",
    "PreconditionedOperator",
    "adam_preconditioner",
    "adam_threshold",
    "as_operator",
    "check_deterministic",
    "flatten_params",
    "full_loss",
    "gd_threshold",
    "ggn_vp",
    "gradient",
    "hutchinson_trace",
    "hvp_fwd_rev",
    "hvp_rev_rev",
    "lanczos",
    "layerwise_sharpness",
    "loss_and_gradient",
    "loss_slice",
    "make_batches",
    "make_hvp",
    "momentum_threshold",
    "optimizer_threshold",
    "Stability",
    "stability",
    "stability_of",
    "parameter_groups",
    "power_iteration",
    "preconditioned_sharpness",
    "presample_rows",
    "sharpness",
    "top_hessian_eigs",
    "unflatten_params",
    "update_projection",
    "warm_start",
]
