"""The training loop's extension points.

A hook is any object with some of the methods of :class:`Hook`; the loop calls
them in this order at every step ``t`` (0-based):

1. ``on_step_start(state)``: parameters are theta_t, nothing of step t computed yet
   (curvature at theta_t is measured here).
2. the loop computes the per-example losses at theta_t, the gradient, and the update
   to theta_{t+1}.
3. ``on_step_end(state)``: parameters are theta_{t+1}; ``state.per_example_loss``
   holds the losses at theta_t; hooks add scalars of step t to ``state.metrics``.
4. the loop writes ``state.metrics`` as the metrics row of step t.

``on_train_start`` runs once before the first step (also after a resume), and
``on_train_end`` once after the last one (also after an interruption).
Hooks that keep state across a resume implement ``state_dict`` /
``load_state_dict``; it is saved in each checkpoint under the hook's name (its
``name`` attribute, else its class name; see :func:`~oppsig.training.checkpoint.hook_names`)
and handed back to the hook of that name when the run resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..data.base import ArrayDataset
from ..losses import LossFn


@dataclass
class TrainState:
    """What hooks see of a run.

    Attributes:
        step: the current step t (0-based).
        model: the network (do not change its train/eval mode or leave ``.grad`` behind).
        optimizer: the torch optimiser.
        config: the run's :class:`~oppsig.config.Config`.
        train_data: the training set, on ``device``.
        loss_fn: per-example loss, ``(B, C), (B,) -> (B,)``.
        device: where the model lives.
        lr: learning rate used at this step.
        metrics: scalars of this step (``loss``, ``accuracy``, ...); hooks add keys.
        per_example_loss: float (N,) losses at theta_t of every training example in
            ``train_data`` order (full-batch GD), or None when not computed at this step.
        per_example_correct: bool (N,) likewise.
        per_example_rows: the rows of ``train_data`` that ``per_example_loss`` holds, in its order (a mini-batch
            run's step), or None when it holds every example.
        run_dir: the run directory, or None when running without one.
        extras: free space for hooks to share results (e.g. the top eigenvector). The loop puts
            ``extras["dist"]`` (its distributed context) and ``extras["example_weights"]``: the (N,)
            loss weights the loop reads at every step (None when the run has none); a hook may
            change them in place (the live hook's down-weight action does); ``extras["replayer"]``: a
            :class:`~oppsig.training.rerun.StepReplayer` of the run's steps (None under DDP).
    """

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: Any
    train_data: ArrayDataset
    loss_fn: LossFn
    device: torch.device
    lr: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    per_example_loss: torch.Tensor | None = None
    per_example_correct: torch.Tensor | None = None
    per_example_rows: torch.Tensor | None = None
    run_dir: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Hook(Protocol):
    """Methods a hook may implement (all optional)."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_step_start(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, d: dict) -> None: ...


def call(hooks: list, name: str, state: TrainState) -> None:
    """Call ``hook.<name>(state)`` on every hook that has it."""
    for h in hooks:
        fn = getattr(h, name, None)
        if fn is not None:
            fn(state)
