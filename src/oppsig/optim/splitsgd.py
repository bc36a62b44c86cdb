"""SplitSGD: dampened-momentum SGD that takes normalised steps on outsized gradient coordinates.

Motivation. Opposing signals (Rosenfeld & Risteski, arXiv 2311.04163) are
groups of training examples whose large, consistent features pull a few
directions of parameter space hard and in opposite ways. Plain (full-batch or
mini-batch) SGD moves each coordinate in proportion to its gradient, so once the
network sits in the narrow valley that balances the two groups, the latest
gradient along those sharp directions throws the parameters across the valley
and the loss of one group, then the other, spikes. The paper's case study
credits Adam's robustness to two ingredients: (1) along coordinates whose
gradients are large, its step is divided by a running root mean square of the
gradient, so it is *smaller* than SGD's exactly where the curvature is high;
(2) its first moment is an exponential average, so the latest gradient enters
with weight ``1 - beta1`` rather than 1 (dampening). SplitSGD keeps SGD on most
coordinates and adds only these two ingredients, applied where they matter.

Definition. For each parameter tensor, step ``t = 1, 2, ...``, with gradient
``g`` (plus ``weight_decay * p`` when ``weight_decay > 0``, coupled L2 as in
:class:`torch.optim.SGD`):

- momentum, exactly as :class:`torch.optim.SGD`: ``m_1 = g_1`` and
  ``m_t = momentum * m_{t-1} + (1 - dampening) * g_t``; with ``momentum = 0``,
  ``m_t = g_t`` (dampening is then ignored, as in torch);
- second moment: ``v_t = beta2 * v_{t-1} + (1 - beta2) * g_t**2`` (``v_0 = 0``)
  and ``r_t = sqrt(v_t / (1 - beta2**t))``, the bias-corrected running RMS;
- split: coordinate ``i`` is *outsized* when ``|g_i| >= threshold * s_i``, where
  ``s_i = r_i`` for ``split="rms"`` (against its own history) or, for
  ``split="tensor"``, ``s_i = sqrt(mean_j g_j**2)`` over the tensor's
  coordinates (against the other coordinates of the same step);
- update: outsized coordinates take the normalised step
  ``p_i -= split_lr * m_i / (r_i + eps)``; the others take the momentum step
  ``p_i -= lr * m_i``.

``threshold = inf`` selects no coordinate, so the optimiser *is*
``torch.optim.SGD(lr, momentum, dampening, weight_decay)`` (bitwise: the
momentum coordinates go through the same ``add_`` as torch's); ``threshold = 0``
selects every coordinate, so every step is the normalised rule. With
``dampening = momentum`` the normalised rule is Adam's update with
``betas = (momentum, beta2)`` except for the first moment's start
(``m_1 = g_1`` instead of Adam's bias correction).

Reporting. After each :meth:`~SplitSGD.step`, :attr:`~SplitSGD.last_split_fraction`
is the fraction of all updated coordinates that took the normalised step
(``1 -`` it took the momentum step), :attr:`~SplitSGD.last_split_counts` the two
counts, and ``state[p]["split_fraction"]`` the per-tensor fraction (a 0-d
tensor). Reading the properties synchronises with the device.

Limits.

- With ``split="rms"``, ``v_t`` contains ``g_t`` itself, so
  ``|g_i| / r_i <= sqrt((1 - beta2**t) / (1 - beta2))``: at ``t = 1`` the ratio
  is exactly 1 (for ``g_i != 0``), and thresholds above
  ``1 / sqrt(1 - beta2)`` (about 31.6 for ``beta2 = 0.999``) never split. The
  rule detects *jumps* of a coordinate's gradient against its own history; a
  coordinate that has been large all along is not outsized.
- The split is per coordinate: it does not see directions that mix
  coordinates, so on a sharp direction that is not axis-aligned the
  normalisation helps less (as for Adam).
- ``split_lr`` and ``lr`` are separate scales (a normalised step moves each
  coordinate by about ``split_lr``); a learning-rate schedule that changes only
  ``group["lr"]`` also moves the normalised side only when ``split_lr`` is
  ``None`` (then it follows ``lr``).
- No Nesterov, no ``maximize``, no sparse gradients; one state tensor
  (``exp_avg_sq``) more than SGD with momentum.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from ._base import CheckedOptimizer

SPLIT_RULES = ("rms", "tensor")


class SplitSGD(CheckedOptimizer):
    """SGD with dampened momentum and normalised (Adam-like) steps on outsized gradient coordinates.

    See the module docstring for the definition, its motivation and its limits.

    Args:
        params: parameters or parameter groups.
        lr: step size of the momentum side (``p -= lr * m``).
        momentum: momentum factor ``beta`` in ``[0, 1)``.
        dampening: weight ``1 - dampening`` of the latest gradient in the momentum, in ``[0, 1]``.
        split_lr: step size of the normalised side; ``None`` uses ``lr`` (and follows it).
        threshold: a coordinate is outsized when ``|g_i| >= threshold * s_i``; ``inf``: never, ``0``: always.
        split: ``"rms"`` (``s_i`` = the coordinate's bias-corrected running RMS) or
            ``"tensor"`` (``s_i`` = the RMS of the current gradient over the tensor).
        beta2: decay of the running mean of ``g**2``, in ``[0, 1)``.
        eps: added to the RMS in the normalised step, ``> 0``.
        weight_decay: coupled L2 penalty added to the gradient, ``>= 0``.

    Raises:
        ValueError: an invalid hyperparameter (the message names it).
        RuntimeError: from :meth:`step`, for a sparse gradient.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> opt = SplitSGD([w], lr=0.1, momentum=0.9, dampening=0.9, threshold=0.0)
        >>> (w * torch.tensor([100.0, 1.0])).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # every coordinate normalised: both move by split_lr = lr
        tensor([0.9000, 0.9000])
        >>> opt.last_split_fraction
        1.0
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.9,
        split_lr: float | None = None,
        threshold: float = 3.0,
        split: str = "rms",
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, split_lr=split_lr,
                                      threshold=threshold, split=split, beta2=beta2, eps=eps,
                                      weight_decay=weight_decay))
        self._counts: list[torch.Tensor] = []
        self._total = 0

    name = "SplitSGD"

    @staticmethod
    def check_group(group: dict) -> None:
        _validate(group)

    @property
    def last_split_counts(self) -> tuple[int, int]:
        """(normalised, momentum) coordinate counts of the last step; ``(0, 0)`` before the first."""
        n = int(sum(int(c) for c in self._counts))
        return n, self._total - n

    @property
    def last_split_fraction(self) -> float:
        """Fraction of the last step's coordinates that took the normalised step (``nan`` before the first)."""
        if self._total == 0:
            return math.nan
        return self.last_split_counts[0] / self._total

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One update; ``closure`` (optional) re-evaluates the loss with gradients and returns it."""
        loss = self.closure_loss(closure)
        counts: list[torch.Tensor] = []
        total = 0
        for group in self.param_groups:
            _validate(group)
            lr, beta, damp = group["lr"], group["momentum"], group["dampening"]
            split_lr = lr if group["split_lr"] is None else group["split_lr"]
            thr, beta2, eps, wd = group["threshold"], group["beta2"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self.decayed_grad(p, wd)
                st = self.state[p]
                if "exp_avg_sq" not in st:
                    st["step"] = 0
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                if beta != 0:
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = g.detach().clone()
                        st["momentum_buffer"] = buf
                    else:
                        buf.mul_(beta).add_(g, alpha=1 - damp)
                    m = buf
                else:
                    m = g
                v = st["exp_avg_sq"]
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                total += p.numel()

                if thr == math.inf:  # plain momentum SGD, torch's exact update
                    p.add_(m, alpha=-lr)
                    sel = torch.zeros((), dtype=torch.int64, device=p.device)
                else:
                    rms = (v / (1 - beta2 ** st["step"])).sqrt()
                    if thr == 0:
                        mask = None
                    elif group["split"] == "rms":
                        mask = g.abs() >= thr * rms
                    else:
                        mask = g.abs() >= thr * g.pow(2).mean().sqrt()
                    normalised = m / rms.add_(eps)
                    if mask is None:
                        p.add_(normalised, alpha=-split_lr)
                        sel = torch.full((), p.numel(), dtype=torch.int64, device=p.device)
                    else:
                        zero = torch.zeros((), dtype=m.dtype, device=m.device)
                        p.add_(torch.where(mask, zero, m), alpha=-lr)
                        p.add_(torch.where(mask, normalised, zero), alpha=-split_lr)
                        sel = mask.sum()
                st["split_fraction"] = sel.to(torch.float32) / max(p.numel(), 1)
                counts.append(sel)
        self._counts, self._total = counts, total
        return loss


def _validate(group: dict) -> None:
    def bad(name: str, what: str) -> None:
        raise ValueError(f"SplitSGD: {name} {what} (got {group[name]!r})")

    def num(name: str) -> float:
        v = group[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            bad(name, "must be a number")
        return v

    if "lr" in group and not (math.isfinite(num("lr")) and group["lr"] >= 0):
        bad("lr", "must be a finite number >= 0")
    if "momentum" in group and not 0 <= num("momentum") < 1:
        bad("momentum", "must lie in [0, 1)")
    if "dampening" in group and not 0 <= num("dampening") <= 1:
        bad("dampening", "must lie in [0, 1]")
    if group.get("split_lr") is not None and not (math.isfinite(num("split_lr")) and group["split_lr"] >= 0):
        bad("split_lr", "must be a finite number >= 0 or None")
    if "threshold" in group and not num("threshold") >= 0:
        bad("threshold", "must be >= 0 (inf: never split)")
    if "split" in group and group["split"] not in SPLIT_RULES:
        bad("split", f"must be one of {', '.join(SPLIT_RULES)}")
    if "beta2" in group and not 0 <= num("beta2") < 1:
        bad("beta2", "must lie in [0, 1)")
    if "eps" in group and not (math.isfinite(num("eps")) and group["eps"] > 0):
        bad("eps", "must be a finite number > 0")
    if "weight_decay" in group and not (math.isfinite(num("weight_decay")) and group["weight_decay"] >= 0):
        bad("weight_decay", "must be a finite number >= 0")


__all__ = ["SplitSGD", "SPLIT_RULES"]
