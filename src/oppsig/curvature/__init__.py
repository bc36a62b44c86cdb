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

from importlib import import_module as _import_module

from .hook import *  # noqa: F401,F403 - each submodule's __all__
from .hvp import *  # noqa: F401,F403
from .lanczos import *  # noqa: F401,F403
from .operators import *  # noqa: F401,F403
from .quantities import *  # noqa: F401,F403

__all__ = [name for mod in ("hook", "hvp", "lanczos", "operators", "quantities")
           for name in _import_module(f"{__name__}.{mod}").__all__]
