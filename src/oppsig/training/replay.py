"""A run's model at any recorded step, rebuilt by replaying training from a kept checkpoint.

Full-batch GD and oppsig's seeded mini-batch order are deterministic, so
training from the last kept checkpoint at or before a step reproduces the
parameters of that step exactly, on the same device with the same precision
settings (``dtype``, ``tf32``, ``bf16``). :func:`model_at` therefore replays on
the device the run was trained on (``meta.json``, else its config) with its
config's precision, and refuses when that device is not available here, saying
so; a replay elsewhere must be asked for (``device=``) and warns that it is not
bit-exact.
"""

from __future__ import annotations

import json
import warnings

import torch

from ..errors import StoreError
from .checkpoint import list_checkpoints, load_checkpoint
from .loop import train

__all__ = ["model_at", "run_device", "ReplayWarning"]


class ReplayWarning(UserWarning):
    """A replay on another device or precision than the run's: the parameters may differ in the last bits."""


def run_device(run) -> str:
    """The device a run was trained on: ``meta.json``'s ``device`` (e.g. ``cuda:0``), else its config's.

    Example (``run`` is what :func:`~oppsig.store.open_run` returns; any object with ``meta`` will do):
        >>> from types import SimpleNamespace
        >>> run_device(SimpleNamespace(meta={"device": "cuda:0"}))
        'cuda:0'
    """
    meta = getattr(run, "meta", None) or {}
    if not meta and hasattr(run, "path"):
        p = run.path / "meta.json"
        meta = json.loads(p.read_text()) if p.exists() else {}
    dev = meta.get("device") or getattr(run.config, "device", "cpu")
    return "cpu" if dev == "auto" else str(dev)


def _available(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return False


def _config_between(run, start: int, step: int):
    """The config in force over the replayed steps ``start .. step - 1`` (the same at each of them).

    Raises:
        StoreError: a setting changed within them (a resume from a checkpoint that was not kept).
    """
    mid = [c["step"] for c in getattr(run, "config_changes", []) if start < c["step"] < step]
    if mid:
        raise StoreError(f"{run.path} changed its settings at step {mid[0]} (meta.json config_changes), between the "
                         f"kept checkpoint of step {start} and step {step}, and no checkpoint of step {mid[0]} is "
                         f"kept; replay cannot apply the change exactly: measure at a step before {mid[0]} or from "
                         "one on")
    return run.config_at(start) if hasattr(run, "config_at") else run.config


def model_at(run, step: int, data=None, device: str | None = None, progress: bool = False):
    """The run's model at parameters theta_step, replayed from the last kept checkpoint at or before ``step``.

    Args:
        run: an opened run (:func:`~oppsig.store.open_run`).
        step: the step whose parameters (before its update) are wanted.
        data: the run's ``(train_set, test_set)`` when already built (else rebuilt from its config).
        device: where to replay (default: the device the run was trained on). Another device
            than the run's is a replay that is not bit-exact: it warns (:class:`ReplayWarning`).
        progress: show a progress bar over the replayed steps.

    Returns:
        ``(model, train_set)``; the model is on the replay device in train mode,
        trained with the run's own precision settings (``dtype``, ``tf32``, ``bf16``) and the settings in force
        at each replayed step (a resume that changed the lr: see :mod:`oppsig.training.changes`).

    Raises:
        StoreError: when the run was not trained by oppsig, kept no checkpoint
            at or before ``step``, or was trained on a device this machine does
            not have (the message says how to replay elsewhere).
    """
    cfg = run.config
    if not hasattr(cfg, "data"):
        raise StoreError(f"{run.path} was not trained by oppsig train; cannot rebuild its model")
    own = run_device(run)
    target = torch.device(device or own)
    if device is None and not _available(target):
        raise StoreError(
            f"{run.path} was trained on {own}, which this machine does not have, so its steps cannot be replayed "
            f"exactly here; replay it on a machine with {own}, or pass device='cpu' (oppsig sharpness --device cpu) "
            "to replay on the CPU (parameters not bit-exact)")
    if not _available(target):
        raise StoreError(f"device {target} is not available here; pass device='cpu'")
    if target.type != torch.device(own).type:
        warnings.warn(f"replaying {run.path} on {target}, but it was trained on {own} "
                      f"(dtype {cfg.dtype}, tf32 {cfg.tf32}, bf16 {cfg.bf16}): the replayed parameters are not "
                      "bit-exact", ReplayWarning, stacklevel=2)
    all_kept = list_checkpoints(run.path)
    kept = {s: p for s, p in all_kept.items() if s <= step}
    if not kept:
        have = f"kept checkpoints: steps {', '.join(map(str, sorted(all_kept)))}" if all_kept else \
            "no checkpoint is kept in checkpoints/"
        raise StoreError(f"{run.path} kept no checkpoint at or before step {step} ({have}); replay needs one: "
                         "train with train.checkpoint_every=N (step 0 is kept too), or measure at a later step")
    start = max(kept)
    cfg = _config_between(run, start, step)
    ckpt = load_checkpoint(kept[start])
    if data is None:
        from ..data import build_datasets

        data = build_datasets(cfg.data, seed=cfg.seed)
    if step == start:  # no step to replay: load the checkpoint into a fresh model
        from ..models import build_from_config

        train_set = data[0]
        model = build_from_config(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes, target,
                                  getattr(torch, cfg.dtype))
        model.load_state_dict(ckpt["model"])
        return model, train_set
    replay = cfg.replace([f"train.steps={step}", "record.enabled=false", "curvature.every=0",
                          f"device={target}", "train.checkpoint_every=0"])
    res = train(replay, run_dir=None, progress=progress, data=data, branch_from=ckpt)
    return res.model, data[0]
