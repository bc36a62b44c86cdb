"""File names, format version, and the one atomic-write helper of oppsig (store, checkpoints, results, reports)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from ..errors import StoreError

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


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a hidden temporary sibling of ``path`` for writing; on success it atomically replaces ``path``.

    Readers see either the old file or the new one, never a torn one. If the
    body raises (a full disk, a file-size limit, an interrupt), the temporary
    file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_open(tmp_path / "x.txt") as f:
        ...     _ = f.write("all or nothing")
        >>> (tmp_path / "x.txt").read_text()
        'all or nothing'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``.

    Raises:
        StoreError: when the file is missing, unreadable, not JSON or not an object (the message names it).
    """
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; the run directory is incomplete") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreError(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); restore it from a backup "
                         "or re-create the run") from None
    if not isinstance(d, dict):
        raise StoreError(f"{path} is damaged (holds a {type(d).__name__}, not an object); restore it from a backup "
                         "or re-create the run")
    return d


def check_zarr_format(store: Path) -> None:
    """Refuse a ``store.zarr`` that is not in :data:`ZARR_FORMAT` (e.g. one written by zarr-python 2).

    Raises:
        StoreError: naming the format found and what to do.
    """
    store = Path(store)
    if (store / "zarr.json").exists():
        return
    if (store / ".zgroup").exists():
        raise StoreError(f"{store} is in zarr format 2 (written with zarr-python 2); this oppsig reads zarr format "
                         f"{ZARR_FORMAT}: record the run again with this version")
    raise StoreError(f"{store} has no zarr metadata (zarr.json); the store is damaged or was not written by oppsig")


def code_revision() -> str | None:
    """The git revision of the oppsig source tree, with ``+dirty`` if it has local changes, or None."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
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
