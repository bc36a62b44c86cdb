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

from .linear import (
    OPPOSING,
    PHASES,
    SIGNAL,
    NetConfig,
    OpposingDataConfig,
    PhaseDiagram,
    ToyData,
    Trajectory,
    TrainConfig,
    ValleyPrediction,
    antiphase_correlation,
    classify,
    gauss_newton_sharpness,
    gradients,
    group_losses,
    hessian,
    hvp,
    hvp_operator,
    init_params,
    lanczos_sharpness,
    loss,
    make_data,
    opposing_curvature,
    opposing_direction,
    oscillation_window,
    phase_diagram,
    predict_valley,
    predicted_phase,
    sharpness,
    train,
)

__all__ = [
    "SIGNAL",
    "OPPOSING",
    "PHASES",
    "OpposingDataConfig",
    "ToyData",
    "make_data",
    "NetConfig",
    "init_params",
    "loss",
    "gradients",
    "hessian",
    "hvp",
    "hvp_operator",
    "sharpness",
    "gauss_newton_sharpness",
    "lanczos_sharpness",
    "opposing_direction",
    "opposing_curvature",
    "group_losses",
    "ValleyPrediction",
    "predict_valley",
    "predicted_phase",
    "TrainConfig",
    "Trajectory",
    "train",
    "classify",
    "oscillation_window",
    "antiphase_correlation",
    "PhaseDiagram",
    "phase_diagram",
]
