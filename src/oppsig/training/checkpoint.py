"""Checkpoints: model, optimiser, step, RNG and hook state, written atomically and loaded safely."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import StoreError
from ..store.format import CHECKPOINTS


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS / "last.pt"


def step_checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:06d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> dict[int, Path]:
    """The kept checkpoints of a run, ``{next step: path}``, in step order."""
    d = Path(run_dir) / CHECKPOINTS
    out = {}
    for f in sorted(d.glob("step_*.pt")) if d.exists() else []:
        try:
            out[int(f.stem.split("_")[1])] = f
        except ValueError:
            continue
    return out


def save_checkpoint(run_dir: str | os.PathLike, state: dict, keep: bool = False) -> Path:
    """Write ``state`` to ``<run_dir>/checkpoints/last.pt`` via a temporary file and an atomic rename.

    With ``keep``, the same file is also linked as ``step_NNNNNN.pt`` (NNNNNN = ``state["step"]``).
    """
    p = checkpoint_path(run_dir)
    tmp = p.with_name(f".last.pt.{os.getpid()}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        if keep:
            kept = step_checkpoint_path(run_dir, int(state["step"]))
            if kept.exists():
                kept.unlink()
            os.link(tmp, kept)
        os.replace(tmp, p)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StoreError(f"cannot write the checkpoint {p}: {e.strerror or e}") from None
    return p


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary objects are unpickled).

    Raises:
        StoreError: when the file is missing, truncated or not a checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        p = checkpoint_path(p)
    if not p.exists():
        raise StoreError(f"no checkpoint at {p}")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad magic, unsafe object...
        raise StoreError(f"checkpoint {p} is damaged or not an oppsig checkpoint ({type(e).__name__}); "
                         "delete it to restart the run from scratch") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise StoreError(f"checkpoint {p} lacks model or step; it is not an oppsig checkpoint")
    return state
