"""Scalars of a run as TensorBoard event files (needs the optional ``tensorboard`` extra)."""

from __future__ import annotations

import math
from pathlib import Path


def available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:
        return False
    return True


def write_tensorboard(run, signals=None, log_dir: str | Path | None = None) -> Path | None:
    """Write loss, accuracy, sharpness, threshold and group losses under ``<run>/tb`` (None if tensorboard is missing)."""
    if not available():
        return None
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir) if log_dir else Path(run.path) / "tb"
    w = SummaryWriter(str(log_dir))
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
