"""Where a rollback goes back to: one interface, :class:`RollbackSource`, and its two sources.

- :class:`KeptCheckpoints`: the checkpoints that ``oppsig train`` keeps in the run
  directory (``train.keep_checkpoints``, one every ``train.checkpoint_every`` steps);
- :class:`Snapshots`: in-memory copies of the model and optimiser state, taken by
  the framework callbacks every ``live.checkpoint_every`` steps (the last two kept).

Example:
    >>> import torch
    >>> m = torch.nn.Linear(2, 1); opt = torch.optim.SGD(m.parameters(), lr=0.1)
    >>> src = Snapshots(every=10)
    >>> for step in range(25):
    ...     src.keep(step, m, opt)
    >>> sorted(src.kept), src.point_at_or_before(15)[0], src.point_at_or_before(5)
    ([10, 20], 10, None)
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..training.actions import snapshot


class RollbackSource(Protocol):
    """Kept states of a run to roll back to."""

    def keep(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Just before the update of ``step``: keep the state if this source keeps it at that step."""

    def point_at_or_before(self, step: int) -> tuple[int, dict] | None:
        """``(step, state dict with "model" and "optimizer")`` of the last kept state at or before ``step``;
        None when there is none."""


class KeptCheckpoints:
    """The checkpoints of an ``oppsig train`` run directory (the loop writes them; :meth:`keep` does nothing).

    Args:
        run_dir: the run directory (None: no checkpoints).
        device: where a loaded checkpoint's tensors go.
    """

    def __init__(self, run_dir: str | Path | None, device=None) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = device

    def keep(self, step: int, model: nn.Module, optimizer) -> None:
        return None

    def point_at_or_before(self, step: int) -> tuple[int, dict] | None:
        from ..training.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint

        if self.run_dir is None:
            return None
        kept = {s: p for s, p in list_checkpoints(self.run_dir).items() if s <= step}
        path = kept[max(kept)] if kept else checkpoint_path(self.run_dir)
        if not path.exists():
            return None
        ck = load_checkpoint(path, map_location=self.device)
        return (int(ck["step"]), ck) if int(ck["step"]) <= step else None


class Snapshots:
    """In-memory snapshots (:func:`oppsig.training.actions.snapshot`) every ``every`` steps, the last ``keep_last``."""

    def __init__(self, every: int, keep_last: int = 2) -> None:
        self.every, self.keep_last = every, keep_last
        self.kept: OrderedDict[int, dict] = OrderedDict()

    def keep(self, step: int, model: nn.Module, optimizer) -> None:
        if step % self.every == 0:
            self.kept[step] = snapshot(model, optimizer)
            while len(self.kept) > self.keep_last:
                self.kept.popitem(last=False)

    def point_at_or_before(self, step: int) -> tuple[int, dict] | None:
        points = [s for s in self.kept if s <= step]
        return (max(points), self.kept[max(points)]) if points else None
