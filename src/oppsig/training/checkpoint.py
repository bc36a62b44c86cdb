"""Checkpoints: model, optimiser, step, RNG and hook state, written atomically and loaded safely.

Hook state is stored by hook name, ``{"hooks": {name: state}}``: the name is the hook's ``name``
attribute, else its class name, with ``#2``, ``#3``, ... on repeats (:func:`hook_names`). A resumed
run hands each saved state to the hook of that name only (:func:`load_hook_states`), so turning a
hook on or off between segments gives no hook another's state.

Example:
    >>> class Count:
    ...     name = "count"
    ...     def __init__(self): self.n = 0
    ...     def state_dict(self): return {"n": self.n}
    ...     def load_state_dict(self, d): self.n = d["n"]
    >>> a, b = Count(), Count(); a.n = 3
    >>> saved = hook_states([object(), a, b]); saved
    {'count': {'n': 3}, 'count#2': {'n': 0}}
    >>> c = Count(); load_hook_states([c], {"count": {"n": 3}}); c.n
    3
"""

from __future__ import annotations

import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import OppsigWarning, StoreError
from ..store.format import CHECKPOINTS, atomic_open
from ..store.rundir import start_over_command


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
    """Write ``state`` to ``<run_dir>/checkpoints/last.pt`` atomically (a temporary file, then a rename).

    With ``keep``, the same file is also linked as ``step_NNNNNN.pt`` (NNNNNN = ``state["step"]``).
    A failed write (full disk, file-size limit) leaves the previous checkpoint and no temporary file.

    Raises:
        StoreError: when the checkpoint cannot be written (one line, with the cause).
    """
    p = checkpoint_path(run_dir)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(p, "wb") as f:
            torch.save(state, f)
        if keep:
            kept = step_checkpoint_path(run_dir, int(state["step"]))
            if kept.exists() or kept.is_symlink():
                kept.unlink()
            os.link(p, kept)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as a RuntimeError
        if isinstance(e, OSError) and e.strerror:
            cause = e.strerror
        else:
            cause = f"the write broke off: disk full or a file-size limit? torch says: {_first_line(e)}"
        then = ("the previous checkpoint is kept: fix the cause and resume the run" if p.exists() else
                "fix the cause and start the run again with --overwrite")
        raise StoreError(f"cannot write the checkpoint {p} ({cause}); {then}") from None
    return p


def _first_line(e: BaseException) -> str:
    """The gist of a torch writer error: its first line without the ``[enforce fail at file:line] .`` prefix."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if line.startswith("[enforce fail") and "] " in line:
        line = line.split("] ", 1)[1].lstrip(". ")
    return line[:160]


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary objects are unpickled).

    Raises:
        StoreError: when the file is missing.
        DamagedCheckpointError: when it is truncated, damaged or not an oppsig checkpoint.
        LoadFailedError: when it cannot be loaded for another reason (out of memory, a device this machine
            lacks, a read error): not damage, so no older checkpoint is resumed instead.
    """
    p = Path(path)
    if p.is_dir():
        p = checkpoint_path(p)
    if not p.exists():
        raise StoreError(f"no checkpoint at {p}")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except _DAMAGE as e:  # truncated zip, bad magic, unsafe object...
        _not_damage(e, p, map_location)
        raise DamagedCheckpointError(
            p, f"checkpoint {p} is damaged or not an oppsig checkpoint ({type(e).__name__}); --resume continues "
               "from the newest intact checkpoint (a kept step_*.pt), or start over with --overwrite") from None
    except (MemoryError, OSError) as e:
        _not_damage(e, p, map_location)
        raise
    if not isinstance(state, dict) or "model" not in state or not isinstance(state.get("step"), int):
        raise DamagedCheckpointError(p, f"checkpoint {p} lacks model or step; it is not an oppsig checkpoint")
    return state


# what a damaged file raises in torch.load (a RuntimeError that is not about memory or a device)
_DAMAGE = (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, KeyError, IndexError, TypeError,
           AttributeError, struct.error)


def _not_damage(e: BaseException, p: Path, map_location) -> None:
    """Raise the error of a load that failed for a reason other than damage (memory, device, a read error)."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        raise LoadFailedError(f"out of memory while loading the checkpoint {p} (onto {map_location}); free memory "
                              "(other processes?) and resume again, or resume on another device with --device=cpu"
                              ) from None
    if isinstance(e, OSError):
        raise LoadFailedError(f"cannot read the checkpoint {p} ({e.strerror or e}); fix the cause (permissions, "
                              "a disk error) and resume again") from None
    msg = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, RuntimeError) and ("device" in msg.lower() or "cuda" in msg.lower()):
        raise LoadFailedError(f"cannot load the checkpoint {p} onto {map_location}: {msg[:160]}; resume on a "
                              "device this machine has, e.g. --device=cpu") from None


class LoadFailedError(StoreError):
    """A checkpoint that may be intact could not be loaded here (memory, device, a read error): not damage."""


class DamagedCheckpointError(StoreError):
    """A checkpoint file that is damaged or not an oppsig checkpoint; ``path`` names it. The message advises
    training (``--resume``, ``--overwrite``); commands that only read a run give their own advice."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


def newest_intact(run_dir: str | os.PathLike, usable=None, map_location="cpu") -> tuple[dict, Path, list[str]]:
    """The newest checkpoint of a run that loads and that ``usable`` accepts: last.pt, else the newest kept one.

    Args:
        usable: ``usable(step) -> None`` when a checkpoint of ``step`` may be resumed from, else the
            reason why not (e.g. the record lacks steps before it).

    Returns:
        ``(state, path, skipped)``: the loaded checkpoint, its file, and one line per newer
        checkpoint that was passed over (damaged, or not usable) saying why.

    Raises:
        StoreError: when no checkpoint is intact and usable; the message lists each one tried and
            the choices (start over with ``--overwrite``).
    """
    run_dir = Path(run_dir)
    candidates = [checkpoint_path(run_dir)] + [p for _, p in sorted(list_checkpoints(run_dir).items(), reverse=True)]
    skipped: list[str] = []
    seen: set = set()
    for p in candidates:
        if not p.exists():
            if p == candidates[0]:
                skipped.append(f"{p.name} is missing")
            continue
        ident = (p.stat().st_dev, p.stat().st_ino)
        try:
            state = load_checkpoint(p, map_location=map_location)
        except LoadFailedError:  # not damage: a resume from an older checkpoint would hide it
            raise
        except DamagedCheckpointError:
            if ident not in seen:
                skipped.append(f"{p.name} is damaged")
            seen.add(ident)
            continue
        why = usable(int(state["step"])) if usable is not None else None
        if why is None:
            return state, p, skipped
        skipped.append(f"{p.name} (step {state['step']}): {why}")
    tried = "; ".join(skipped) if len(skipped) > 1 or skipped[0] != "last.pt is missing" else \
        f"there is no checkpoint in {run_dir / CHECKPOINTS}"
    raise StoreError(f"cannot resume {run_dir}: no intact checkpoint to continue from ({tried}); start over with "
                     f"`{start_over_command(run_dir)}` (this replaces the record)")


def hook_names(hooks: Sequence[Any]) -> list[str]:
    """The name of each hook in checkpoints: its ``name`` attribute (a string), else its class name;
    the second, third, ... hook of one name get ``#2``, ``#3``, ..."""
    names, seen = [], {}
    for h in hooks:
        base = getattr(h, "name", None)
        base = base if isinstance(base, str) and base else type(h).__name__
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


def hook_states(hooks: Sequence[Any]) -> dict[str, dict]:
    """``{name: hook.state_dict()}`` of every hook that has ``state_dict`` (names from :func:`hook_names`)."""
    return {name: h.state_dict() for name, h in zip(hook_names(hooks), hooks) if hasattr(h, "state_dict")}


def load_hook_states(hooks: Sequence[Any], saved: dict) -> None:
    """Hand each saved hook state to the hook of its name (a hook with none saved starts fresh).

    A saved state whose hook is not in ``hooks`` is ignored with an :class:`~oppsig.errors.OppsigWarning`
    naming it. Checkpoints that key hook states by position (``"0"``, ``"1"``, ...) are read by position.
    """
    if saved and all(isinstance(k, str) and k.isdigit() for k in saved):  # keyed by position
        named = {str(i): h for i, h in enumerate(hooks)}
    else:
        named = dict(zip(hook_names(hooks), hooks))
        lost = [k for k in saved if k not in named]
        if lost:
            warnings.warn(f"the checkpoint holds the state of hook(s) {', '.join(map(repr, lost))}, which this run "
                          "does not have; their state is ignored", OppsigWarning, stacklevel=3)
    for key, h in named.items():
        d = saved.get(key)
        if d is not None and hasattr(h, "load_state_dict"):
            h.load_state_dict(d)
