"""File names, format version and small atomic-write helpers shared by the store's writer and reader."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

FORMAT_VERSION = 1
#: the on-disk zarr format of ``store.zarr`` (zarr-python 3 writes and reads it; pinned in pyproject)
ZARR_FORMAT = 3
STORE = "store.zarr"
PROGRESS = "progress.json"
METRICS = "metrics.jsonl"
META = "meta.json"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new file, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
    os.replace(tmp, path)


def check_zarr_format(store: Path) -> None:
    """Refuse a ``store.zarr`` that is not in :data:`ZARR_FORMAT` (e.g. one written by zarr-python 2).

    Raises:
        StoreError: naming the format found and what to do.
    """
    from ..errors import StoreError

    store = Path(store)
    if (store / "zarr.json").exists():
        return
    if (store / ".zgroup").exists():
        raise StoreError(f"{store} is in zarr format 2 (written with zarr-python 2); this oppsig reads zarr format "
                         f"{ZARR_FORMAT}: record the run again with this version")
    raise StoreError(f"{store} has no zarr metadata (zarr.json); the store is damaged or was not written by oppsig")


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def code_revision() -> str | None:
    """The git revision of the oppsig source tree, with ``+dirty`` if it has local changes, or None."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Versions and machine facts recorded beside every run."""
    import numpy
    import torch
    import zarr

    from ..version import __version__

    return {
        "format_version": FORMAT_VERSION,
        "oppsig_version": __version__,
        "code_revision": code_revision(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "zarr": zarr.__version__,
        "zarr_format": ZARR_FORMAT,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }
