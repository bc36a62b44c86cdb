"""Small exactly solvable models of the opposing-signals mechanism.

- :mod:`.linear` (a package: data, network, prediction, dynamics, phase): a two-layer linear
  network on a data model with a rare, large-magnitude feature that two groups of examples pull in opposite
  directions; exact GD/Adam, the closed-form Hessian, its top eigenvalue, the
  curvature along the opposing feature, the groups' losses, and a phase diagram
  over ``(alpha, lr)`` against a predicted boundary.
- :mod:`.figures`: matplotlib figures of those results (no file I/O).
- :mod:`.valley`: a 2-D narrow valley, gradient descent against Adam.

Example:
    >>> from oppsig.toy.linear import make_data, predict_valley
    >>> predict_valley(make_data(alpha=0.0)).s_balanced < predict_valley(make_data(alpha=4.0)).s_balanced
    True

The toy's names (``train``, ``hvp``, ``sharpness``, ``loss``...) stay in their
modules, where they cannot be mistaken for the library's own.
"""
