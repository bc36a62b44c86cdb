"""Scalars of a run as TensorBoard event files (needs the optional ``tensorboard`` extra): :func:`write_tensorboard`
after a run, :func:`summary_writer` for what is written while it runs (live spike events)."""

from __future__ import annotations

import math
from pathlib import Path

TB_DIR = "tb"  # a run's TensorBoard folder: <run>/tb


def summary_writer(log_dir: str | Path):
    """A ``torch.utils.tensorboard.SummaryWriter`` writing event files under ``log_dir``."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


def available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:
        return False
    return True


def write_tensorboard(run, signals=None, log_dir: str | Path | None = None) -> Path | None:
    """Write loss, accuracy, sharpness, threshold and group losses under ``<run>/tb``.

    Returns the folder written, or None when tensorboard is missing."""
    if not available():
        return None
    import numpy as np

    log_dir = Path(log_dir) if log_dir else Path(run.path) / TB_DIR
    w = summary_writer(log_dir)
    m = run.metrics
    steps = m.get("step", [])
    for key, vals in m.items():
        if key == "step":
            continue
        for s, v in zip(steps, vals):
            if math.isfinite(float(v)):
                w.add_scalar(key, float(v), int(s))
    if signals is not None:
        for g in list(getattr(signals, "groups", ()))[:8]:
            cols = np.sort(np.asarray(g.members, dtype=int))
            block = np.asarray(run.losses[:, cols]).mean(1)
            for s, v in zip(run.steps, block):
                w.add_scalar(f"group_loss/{g.id}", float(v), int(s))
    w.close()
    return log_dir
