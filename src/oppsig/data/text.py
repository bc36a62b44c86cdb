"""Character-level text data from a plain text file (e.g. tinyshakespeare).

The text is cut into non-overlapping windows of ``block_size + 1`` characters;
example ``i`` is window ``i``: inputs ``x[i] = chars[s : s+T]``, targets
``y[i] = chars[s+1 : s+T+1]`` with ``s = i * (T + 1)``. Token ids index the
sorted set of characters of the whole file (``classes``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFormatError, DataNotFoundError
from .base import ArrayDataset

TEXT_HINT = (
    "pass a text file with --data.path, or put tinyshakespeare/input.txt under --data-dir / $OPPSIG_DATA "
    "(https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt)"
)


def find_text(path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Path:
    """The text file to use: ``path``, else ``<data dir>/tinyshakespeare/input.txt``."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise DataNotFoundError(f"text file {p} not found; {TEXT_HINT}")
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("OPPSIG_DATA"):
        roots.append(Path(os.environ["OPPSIG_DATA"]))
    from .cifar import cache_dir

    roots.append(cache_dir())
    for r in roots:
        p = r.expanduser() / "tinyshakespeare" / "input.txt"
        if p.is_file():
            return p
    raise DataNotFoundError(f"tinyshakespeare not found; {TEXT_HINT}")


def char_dataset(
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    block_size: int = 64,
    n: int | None = None,
) -> ArrayDataset:
    """Windows of a character-level text as an :class:`ArrayDataset` with x, y of shape (N, block_size)."""
    p = find_text(path, data_dir)
    text = p.read_text(encoding="utf-8", errors="replace")
    if len(text) < block_size + 1:
        raise DataFormatError(f"{p}: {len(text)} characters, fewer than block_size + 1 = {block_size + 1}")
    chars = sorted(set(text))
    lut = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((lut[c] for c in text), dtype=np.int64, count=len(text))
    w = block_size + 1
    m = len(ids) // w
    if n is not None:
        m = min(m, n)
    win = ids[: m * w].reshape(m, w)
    return ArrayDataset(
        x=torch.from_numpy(win[:, :-1].copy()),
        y=torch.from_numpy(win[:, 1:].copy()),
        index=torch.arange(m, dtype=torch.int64),
        classes=tuple(chars),
        name=f"text-{p.name}-{m}x{block_size}",
        meta={"path": str(p), "block_size": block_size},
    )
