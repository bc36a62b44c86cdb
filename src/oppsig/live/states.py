"""The last few states of a run, kept in memory at every step for replays: :class:`StateRing`.

Each slot holds copies of the model's parameters and buffers and of the optimiser's state tensors in
preallocated tensors, filled by one fused copy per step (``torch._foreach_copy_``), so keeping a state
costs one memory copy of them and no allocation. A slot reads back as the ``{"model", "optimizer"}``
dict that :func:`~oppsig.training.actions.restore_state` loads.

Example:
    >>> import torch
    >>> m = torch.nn.Linear(2, 1); opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    >>> ring = StateRing(3)
    >>> for step in range(5):
    ...     ring.keep(step, m, opt)
    ...     m(torch.ones(1, 2)).sum().backward(); opt.step(); opt.zero_grad()
    >>> ring.steps(), bool(torch.equal(ring.get(4)["model"]["bias"], m.bias))
    ([2, 3, 4], False)
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _tensors(model: nn.Module, osd: dict) -> tuple[list[str], list[torch.Tensor], list[tuple], list[torch.Tensor]]:
    """Model state keys and tensors, optimiser state (``osd``: its state dict's ``state``) keys
    ``(param index, name)`` and tensors."""
    msd = model.state_dict(keep_vars=True)
    mkeys = list(msd)
    okeys, otens = [], []
    if osd:
        for i in sorted(osd):
            for k, v in osd[i].items():
                if isinstance(v, torch.Tensor):
                    okeys.append((i, k))
                    otens.append(v)
    return mkeys, [msd[k].detach() for k in mkeys], okeys, otens


class StateRing:
    """The states of the last ``size`` steps (kept just before each step's update)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a state ring needs at least one slot (got {size})")
        self.size = size
        self._slots: list[dict] = []
        self._layout: tuple | None = None
        self._next = 0

    def keep(self, step: int, model: nn.Module, optimizer) -> None:
        """Copy the state of ``model`` and ``optimizer`` into the oldest slot, as that of ``step``."""
        osd = optimizer.state_dict() if optimizer is not None else None
        mkeys, mt, okeys, ot = _tensors(model, osd["state"] if osd else {})
        layout = (tuple(mkeys), tuple(okeys), tuple((t.shape, t.dtype, t.device) for t in mt + ot))
        if layout != self._layout:  # the optimiser made its state (first step), or the model changed
            self._slots, self._layout, self._next = [], layout, 0
        if len(self._slots) < self.size:
            self._slots.append({"tensors": [t.clone() for t in mt + ot]})
            slot = self._slots[-1]
        else:
            slot = self._slots[self._next % self.size]
            torch._foreach_copy_(slot["tensors"], mt + ot)
        self._next += 1
        slot["step"] = int(step)
        slot["groups"] = copy.deepcopy(osd["param_groups"]) if osd is not None else None
        slot["other"] = _other_state(osd["state"] if osd else {})

    def clear(self) -> None:
        """Forget the kept states (the slots' memory is reused)."""
        for slot in self._slots:
            slot["step"] = None

    def steps(self) -> list[int]:
        """The steps kept, oldest first."""
        return sorted(s["step"] for s in self._slots if s["step"] is not None)

    def get(self, step: int) -> dict:
        """The state kept at ``step`` as ``{"model": state dict, "optimizer": state dict}``, views of the slot's
        tensors: load it with :func:`~oppsig.training.actions.restore_state`, which copies them, so that a replay
        leaves the slot as it is.

        Raises:
            KeyError: ``step`` is not kept.
        """
        slot = next((s for s in self._slots if s["step"] == step), None)
        if slot is None:
            raise KeyError(f"step {step} is not kept (kept: {self.steps()})")
        mkeys, okeys = self._layout[0], self._layout[1]
        t = slot["tensors"]
        out = {"model": dict(zip(mkeys, t[: len(mkeys)]))}
        if slot["groups"] is not None:
            state: dict = {i: dict(v) for i, v in slot["other"].items()}
            for (i, k), v in zip(okeys, t[len(mkeys):]):
                state.setdefault(i, {})[k] = v
            out["optimizer"] = {"state": state, "param_groups": slot["groups"]}
        return out


def _other_state(osd: dict) -> dict:
    """The optimiser's per-parameter state (``osd``) that is not a tensor (copied: it is small)."""
    return {i: {k: copy.deepcopy(v) for k, v in osd[i].items() if not isinstance(v, torch.Tensor)} for i in osd}
