"""A run's model at any recorded step, rebuilt by replaying training from a kept checkpoint.

Full-batch GD and oppsig's seeded mini-batch order are deterministic, so
training from the last kept checkpoint at or before a step reproduces the
parameters of that step exactly.
"""

from __future__ import annotations

from ..errors import StoreError
from .checkpoint import list_checkpoints, load_checkpoint
from .loop import train

__all__ = ["model_at"]


def model_at(run, step: int, data=None, progress: bool = False):
    """The run's model at parameters theta_step, replayed from the last kept checkpoint at or before ``step``.

    Args:
        progress: show a progress bar over the replayed steps.

    Returns:
        ``(model, train_set)``; the model is on the CPU in train mode.

    Raises:
        StoreError: when the run kept no checkpoint at or before ``step`` or was not trained by oppsig.
    """
    
    cfg = run.config
    if not hasattr(cfg, "data"):
        raise StoreError(f"{run.path} was not trained by oppsig train; cannot rebuild its model")
    kept = {s: p for s, p in list_checkpoints(run.path).items() if s <= step}
    if not kept:
        raise StoreError(f"{run.path} kept no checkpoint at or before step {step}")
    start = max(kept)
    ckpt = load_checkpoint(kept[start])
    if data is None:
        from ..data import build_datasets

        data = build_datasets(cfg.data, seed=cfg.seed)
    if step == start:  # no step to replay: load the checkpoint into a fresh model
        from ..models import build_from_config

        train_set = data[0]
        model = build_from_config(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes)
        model.load_state_dict(ckpt["model"])
        return model, train_set
    replay = cfg.replace([f"train.steps={step}", "record.enabled=false", "curvature.every=0",
                          "device=cpu", "train.checkpoint_every=0"])
    res = train(replay, run_dir=None, progress=progress, data=data, branch_from=ckpt)
    return res.model, data[0]
