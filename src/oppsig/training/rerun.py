"""Steps of a run done again, from a kept state, with some examples left out of every batch.

:class:`StepReplayer` is what the loop offers its hooks (``state.extras["replayer"]``) so that live
attribution can check a spike by replay: from the parameters and optimiser state at the spike's onset,
train the same steps again (the same seeded batches, augmentations, learning rates and precision) on a
scratch copy of the model, once as they were, once with a named group's examples dropped from every
batch and once with a random control dropped, and measure the loss on a fixed set of examples at the end.
Only the optimiser steps are replayed; a live action that changed the lr of a replayed step is not.

Example:
    >>> from oppsig.config import load_config
    >>> from oppsig.training import build_run
    >>> from oppsig.training.build import TrainOptions
    >>> parts = build_run(load_config(None, ["data.n=64", "model.widths=[8]", "train.steps=3",
    ...                                      "optim.name=sgd", "train.batch_size=16"]),
    ...                   TrainOptions(run_dir=None, progress=False))
    >>> rp = StepReplayer(parts)
    >>> model, opt = rp.scratch(parts.model, parts.optimizer)
    >>> before = rp.losses(model, parts.train_set.index.numpy()).mean()
    >>> rp.run(model, opt, 0, 3, drop=np.array([0, 1, 2]))
    >>> bool(rp.losses(model, parts.train_set.index.numpy()).mean() != before)
    True
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..store.ids import IdIndex
from ..store.recorder import probe_losses
from .step import full_batch_backward, optimizer_step, precision, step_batch


class StepReplayer:
    """Replays steps of a run (:class:`~oppsig.training.build.RunParts`) on a scratch model and optimiser.

    A run split over processes (DDP) has no replayer: each process holds part of a batch. Its batches are a
    function of the seed, so it replays steps the run has not reached yet too (``ahead``).
    """

    ahead = True

    def __init__(self, parts) -> None:
        self.parts = parts
        self._ids = IdIndex(parts.train_set.index.cpu().numpy())
        self._scratch: tuple[nn.Module, torch.optim.Optimizer] | None = None

    def rows_of(self, ids) -> np.ndarray:
        """Row positions in the training set of example ``ids`` (ids it lacks are left out)."""
        pos, found = self._ids.lookup(ids)
        return pos[found]

    def scratch(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        """A copy of ``(model, optimizer)`` to replay on (made once, reused: load a state into it first)."""
        if self._scratch is None:
            self._scratch = copy.deepcopy((model, optimizer))  # one deepcopy keeps the optimiser on the copy
        return self._scratch

    def run(self, model: nn.Module, optimizer: torch.optim.Optimizer, start: int, stop: int,
            drop: np.ndarray | None = None, how: str = "zero") -> None:
        """The updates of steps ``start .. stop - 1`` on ``model``/``optimizer``, without the examples of ids
        ``drop``: ``how="zero"`` takes their loss terms out and divides each batch's sum by its full size (every
        other example's part of the update as trained); ``"mean"`` takes the mean over the examples left."""
        p = self.parts
        dropped = np.zeros(len(self._ids), dtype=bool)
        if drop is not None and len(drop):
            dropped[self.rows_of(drop)] = True
        dropped_t = torch.as_tensor(dropped, device=p.device)
        for step in range(start, stop):
            lr = p.lr(step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            batch = step_batch(p, step)
            # data rows of the batch's x (augmented batches hold their own copy of the mini-batch's images)
            in_x = batch.rows if batch.rows is not None else torch.arange(batch.x.shape[0], device=p.device)
            augmented = p.cfg.data.augment != "none" and batch.all_rows is not None
            data_rows = batch.all_rows[in_x] if augmented else in_x
            rows = in_x[~dropped_t[data_rows]]
            if len(rows) == 0:
                continue

            def backward(rows=rows, batch=batch):
                with precision(p.cfg, p.device):
                    full_batch_backward(model, batch.x, batch.y, p.loss_fn, p.cfg.train.physical_batch_size,
                                        rows=rows, weights=batch.w,
                                        denominator=batch.size if how == "zero" else None)

            backward()
            optimizer_step(optimizer, backward)

    def losses(self, model: nn.Module, ids) -> np.ndarray:
        """Per-example losses (n,) of examples ``ids`` at ``model``'s parameters, as the run's probe measures
        them (physical batches, the run's precision), in the order of ``ids``."""
        p = self.parts
        rows = self.rows_of(ids)
        with precision(p.cfg, p.device):
            _, lv, _ = probe_losses(model, p.train_set.take(rows), p.loss_fn, p.cfg.train.physical_batch_size,
                                    per_token=False)
        return np.asarray(lv, dtype=np.float64)
