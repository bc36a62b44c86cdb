"""Opposing signals in a two-layer linear network: data model, exact GD/Adam, closed-form curvature.

A small model of the mechanism of arXiv 2311.04163: a rare, large-magnitude
feature that predicts opposite targets in two groups of examples is amplified
early, the network settles in a narrow valley that balances the groups,
sharpness grows while the small genuine signal is learned, and once it reaches
``2 / lr`` gradient descent oscillates across the valley with the two groups'
losses moving in anti-phase. Everything is exact (float64, closed forms,
checked against autograd in the tests).

Data model (:class:`OpposingDataConfig`, :func:`make_data`)
-------------------------------------------------------------
Targets ``y_i`` are +1 / -1, half each. Inputs ``x_i`` in R^d (d >= 2)::

    x_i[0]  = beta * (y_i + sigma_s * xi_i)        genuine signal: small magnitude beta, noisy
    x_i[1]  = alpha  if i in A or B, else 0         opposing feature, present in a fraction p
    x_i[2:] = sigma_n * N(0, I_{d-2})               noise coordinates

Group A holds ``n_A`` examples with ``y = +1`` that carry the feature, group B
``n_B`` examples with ``y = -1`` that carry it; ``n_A + n_B = round(p n)`` and
``n_A - n_B ~ imbalance * (n_A + n_B)``. The feature is identical in both
groups but their targets pull its weight in opposite directions; with
``imbalance > 0`` it also has a net correlation ``b_o = alpha (n_A - n_B) / n``
with the target, which is large when ``alpha`` is, so it is learned first.

Network and loss
----------------
``f(x) = v^T W x = u^T x`` with ``W`` (m, d), ``v`` (m,), ``u = W^T v`` (d,).
With ``r_i = f(x_i) - y_i``, ``Sigma = X^T X / n``, ``b = X^T y / n``::

    L = (1/2n) sum_i r_i^2 = (1/2) u^T Sigma u - b^T u + |y|^2 / (2n)
    g = dL/du = X^T r / n = Sigma u - b
    dL/dW = v g^T          dL/dv = W g

Hessian
-------
Perturb ``(W, v)`` by ``(dW, dv)``: ``u`` changes by ``du1 + du2`` with
``du1 = W^T dv + dW^T v`` (first order) and ``du2 = dW^T dv`` (second order).
Since ``L`` is quadratic in ``u``, ``L(u + du) = L + g^T du + du^T Sigma du / 2``,
and the second-order terms are ``du1^T Sigma du1 / 2 + g^T dW^T dv``. So::

    (dW, dv)^T H (dW, dv) = du1^T Sigma du1 + 2 dv^T dW g
    H = J^T Sigma J + C

with ``theta = (vec W row-major, v)`` of size ``P = m d + m``,
``J = [v^T kron I_d, W^T]`` (d, P) the Jacobian of ``u`` (Gauss-Newton part) and
``C`` the residual cross term: off-diagonal blocks ``I_m kron g`` (md, m) and
its transpose, zero diagonal blocks. It vanishes at a minimum (``g = 0``).
Hessian-vector product, with ``s = Sigma du1``::

    H (dW, dv) = (v s^T + dv g^T,  W s + dW g)

The top eigenvalue (the sharpness) is that of the dense (P, P) matrix; the
Gauss-Newton part alone has the top eigenvalue of the (d, d) matrix
``Sigma^(1/2) K Sigma^(1/2)`` with ``K = J J^T = |v|^2 I_d + W^T W``.

Sharpness along the opposing feature
------------------------------------
The parameter direction that moves the weight on the opposing feature,
``u_o = u . e_o``, fastest is its gradient
``t_o = d u_o / d theta = (v e_o^T, W e_o)``, with ``J t_o = K e_o`` and
``|t_o|^2 = e_o^T K e_o = |v|^2 + |W e_o|^2``. The curvature along it::

    kappa_o = t_o^T H t_o / |t_o|^2 = (e_o^T K Sigma K e_o + 2 u_o g_o) / (e_o^T K e_o)

In the valley (``Sigma`` dominated by ``Sigma_oo = alpha^2 (n_A + n_B) / n``)
``kappa_o ~ Sigma_oo (|v|^2 + |W e_o|^2)``, and ``t_o`` is the top eigenvector.

Groups' losses and anti-phase
-----------------------------
``L_G = (1/2|G|) sum_{i in G} r_i^2``. A small move ``delta`` of ``u_o``
changes them by ``dL_G ~ alpha delta mean_G(r)``. At the valley floor
``g_o = (alpha/n) (n_A mean_A(r) + n_B mean_B(r)) = 0``: the groups' mean
residuals have opposite signs, so each move across the valley lowers one
group's loss and raises the other's. While GD oscillates along ``t_o`` their
step-to-step changes are anti-correlated.

The valley and the predicted phase (:func:`predict_valley`)
-----------------------------------------------------------
Gradient flow conserves ``W W^T - v v^T``; from a small initialisation it is
~0, so ``W = v u^T / |v|^2`` and ``|v|^2 = |u|``. Every global minimum has
``u = u* = Sigma^+ b`` and ``g = 0``, so ``H = J^T Sigma J`` there and the
balanced minimum has sharpness::

    S_bal  = lambda_max(Sigma^(1/2) (|u*| I + u* u*^T / |u*|) Sigma^(1/2))  ~  alpha^2 p |u*|

The opposing feature sets the scale of the curvature, and the small genuine
signal, which needs ``|u*| ~ 1 / beta``, sets how far it grows: sharpness
rises while the signal is learned (progressive sharpening). Any minimum with
``|v|^2 = a`` has ``K >= a I + u* u*^T / a`` (Cauchy-Schwarz:
``|W z|^2 >= (v^T W z)^2 / |v|^2``), so no global minimum is flatter than::

    S_flat = min_a lambda_max(Sigma^(1/2) (a I + u* u*^T / a) Sigma^(1/2)).

Catapult bound. Let ``mu = |v|^2 + |W e_o|^2`` (so ``kappa_o ~ Sigma_oo mu``)
and let the gradient be concentrated on the opposing feature,
``g ~ g_o e_o``. One GD step changes ``|v|^2`` by ``-2 lr u_o g_o + lr^2 |W g|^2``
and ``|W e_o|^2`` by ``-2 lr u_o g_o + lr^2 |v|^2 g_o^2``, so::

    mu' - mu = lr g_o (lr g_o mu - 4 u_o).

With ``u_o = ubar + delta`` around the floor and ``g_o = Sigma_oo delta``,
averaged over an oscillation (``delta`` alternates sign) this is
``lr Sigma_oo delta^2 (lr kappa_o - 4)``: a growing oscillation lowers the
curvature (self-stabilisation, catapult) when ``lr kappa_o < 4`` and raises
it further (divergence) when ``lr kappa_o > 4``. If sharpening carries the
curvature to the balanced valley's ``S_bal`` before the oscillation has grown
(fast sharpening; slow sharpening starts the oscillation earlier and widens
the oscillating band), the prediction is::

    lr S_bal < 2         converges smoothly
    2 <= lr S_bal < 4    oscillates at the edge of stability (sharpness held near 2/lr)
    lr S_bal >= 4        diverges

(and when ``lr S_flat > 2`` no minimum is stable: GD cannot converge at all).

Adam (for contrast) is compared through its preconditioned sharpness
``lambda_max(P^(-1/2) H P^(-1/2))``, ``P = diag(sqrt(v_hat) + eps)``, against
``(2 + 2 beta1) / ((1 - beta1) lr)``.

Example:
    >>> data = make_data(OpposingDataConfig(n=64, seed=0))
    >>> W, v = init_params(data.X.shape[1], NetConfig(width=4, seed=0))
    >>> H = hessian(W, v, data.X, data.y)
    >>> H.shape
    torch.Size([28, 28])
    >>> traj = train(data, NetConfig(width=4), TrainConfig(lr=0.05, steps=20))
    >>> bool(traj.loss[-1] < traj.loss[0])
    True
"""

from .data import OPPOSING, PHASES, SIGNAL, OpposingDataConfig, ToyData, make_data
from .dynamics import Trajectory, TrainConfig, antiphase_correlation, classify, oscillation_window, train
from .network import (
    NetConfig,
    flatten,
    gauss_newton_sharpness,
    gradients,
    group_losses,
    hessian,
    hvp,
    hvp_operator,
    init_params,
    lanczos_sharpness,
    loss,
    loss_flat,
    opposing_curvature,
    opposing_direction,
    predict,
    sharpness,
    unflatten,
)
from .phase import PhaseDiagram, phase_diagram
from .prediction import ValleyPrediction, predict_valley, predicted_phase

__all__ = [
    "SIGNAL", "OPPOSING", "PHASES", "OpposingDataConfig", "ToyData", "make_data",
    "NetConfig", "init_params", "flatten", "unflatten", "predict", "loss", "loss_flat", "gradients",
    "hessian", "hvp", "hvp_operator", "sharpness", "gauss_newton_sharpness", "lanczos_sharpness",
    "opposing_direction", "opposing_curvature", "group_losses",
    "ValleyPrediction", "predict_valley", "predicted_phase",
    "TrainConfig", "Trajectory", "train", "classify", "oscillation_window", "antiphase_correlation",
    "PhaseDiagram", "phase_diagram",
]
