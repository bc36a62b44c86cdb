"""What to do at a loss spike, as users already do by hand (all off by default).

- skip the update of the spiking step (:class:`UpdateGuard`: the parameters and
  optimiser state before the update, put back after it);
- roll back to the last checkpoint at or before the spike's onset, which skips
  the batches that followed (:func:`restore_state`);
- lower the learning rate for N steps (:class:`LrDrop`);
- down-weight a named group of examples (:func:`downweight`).

These are small pure helpers over a model and an optimiser; the training hook
(:class:`oppsig.live.LiveHook`) and the framework callbacks
decide when to use them and log each use as an event.

Example:
    >>> import torch
    >>> m = torch.nn.Linear(2, 1); opt = torch.optim.SGD(m.parameters(), lr=0.1)
    >>> g = UpdateGuard(); g.take(m, opt)
    >>> before = m.weight.detach().clone()
    >>> m(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> g.put_back(m, opt), bool(torch.equal(m.weight, before))
    (True, True)
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """A copy of the model's parameters and buffers and the optimiser state (on their devices)."""
    snap = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if optimizer is not None:
        snap["optimizer"] = copy.deepcopy(optimizer.state_dict())
    return snap


def restore_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, snap: dict) -> None:
    """Put a :func:`snapshot` (or an oppsig checkpoint) back into ``model`` and ``optimizer``, in place.

    The optimiser's current learning rates are kept (the schedule stays where it is). ``snap`` is left as it
    is, so that it can be restored again: the optimiser gets copies of its tensors (``load_state_dict`` would
    share them, and the next update would change the snapshot's momenta in place).
    """
    model.load_state_dict(snap["model"])
    if optimizer is not None and "optimizer" in snap:
        lrs = [g["lr"] for g in optimizer.param_groups]
        osd = snap["optimizer"]
        optimizer.load_state_dict({**osd, "state": {i: {k: v.clone() if isinstance(v, torch.Tensor) else v
                                                         for k, v in st.items()} for i, st in osd["state"].items()}})
        for g, lr in zip(optimizer.param_groups, lrs):
            g["lr"] = lr


class UpdateGuard:
    """Holds the state before one update so that the update can be undone ("skip this step").

    Costs one copy of the parameters and optimiser state per guarded step.
    """

    def __init__(self) -> None:
        self._snap: dict | None = None

    def take(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        self._snap = snapshot(model, optimizer)

    def put_back(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> bool:
        """Undo the update since :meth:`take`; False when nothing was taken."""
        if self._snap is None:
            return False
        restore_state(model, optimizer, self._snap)
        self._snap = None
        return True

    def drop(self) -> None:
        self._snap = None


class LrDrop:
    """Scale the learning rate by ``factor`` for ``steps`` steps after each trigger.

    Call :meth:`apply` just before an optimiser step and :meth:`undo` just after
    it: the schedule's own learning rate is left untouched in between steps.
    """

    def __init__(self, factor: float, steps: int) -> None:
        if not (0 < factor <= 1) or steps < 0:
            raise ValueError(f"lr drop needs 0 < factor <= 1 and steps >= 0 (got {factor}, {steps})")
        self.factor, self.steps = factor, steps
        self.left = 0
        self._saved: list[float] | None = None

    def trigger(self) -> None:
        self.left = self.steps

    @property
    def active(self) -> bool:
        return self.left > 0

    def apply(self, optimizer: torch.optim.Optimizer) -> float | None:
        """Scale the learning rates for this step; returns the first group's new lr (None when inactive)."""
        if not self.active:
            return None
        self._saved = [g["lr"] for g in optimizer.param_groups]
        for g in optimizer.param_groups:
            g["lr"] = g["lr"] * self.factor
        return optimizer.param_groups[0]["lr"]

    def undo(self, optimizer: torch.optim.Optimizer) -> None:
        if self._saved is not None:
            for g, lr in zip(optimizer.param_groups, self._saved):
                g["lr"] = lr
            self._saved = None
            self.left -= 1

    def state_dict(self) -> dict:
        return {"left": self.left}

    def load_state_dict(self, d: dict) -> None:
        self.left = int(d.get("left", 0))


def downweight(weights: torch.Tensor, cols, factor: float) -> None:
    """Multiply the weights of rows ``cols`` by ``factor``, in place (weights (N,) float)."""
    if not (0 <= factor <= 1):
        raise ValueError(f"down-weight factor must lie in [0, 1] (got {factor})")
    idx = torch.as_tensor(cols, dtype=torch.long, device=weights.device)
    weights[idx] = weights[idx] * factor
