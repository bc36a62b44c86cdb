"""Small exactly solvable models of the opposing-signals mechanism.

- :mod:`.linear`: a two-layer linear network on a data model with a rare,
  large-magnitude feature that two groups of examples pull in opposite
  directions; exact GD/Adam, the closed-form Hessian, its top eigenvalue, the
  curvature along the opposing feature, the groups' losses, and a phase diagram
  over ``(alpha, lr)`` against a predicted boundary.
- :mod:`.figures`: matplotlib figures of those results (no file I/O).
- :mod:`.valley`: a 2-D narrow valley, gradient descent against Adam.

Example:
    >>> from oppsig.toy import make_data, predict_valley
    >>> predict_valley(make_data(alpha=0.0)).s_balanced < predict_valley(make_data(alpha=4.0)).s_balanced
    True
"""

from . import linear as _linear
from .linear import *  # noqa: F401,F403 - the names of linear.__all__

__all__ = list(_linear.__all__)
