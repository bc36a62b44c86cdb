"""Image grids of the groups found (matplotlib only, no global plotting state).

Example:
    >>> from oppsig.data import opposing_signals
    >>> import tempfile
    >>> from oppsig.signals.result import Group, SignalsResult
    >>> ds = opposing_signals(n=100, seed=0)
    >>> r = SignalsResult(n_rows=10, n_examples=100, groups=(Group(id=0, members=(1, 2, 3), ids=(1, 2, 3)),))
    >>> [p.name for p in save_group_grids(r, ds, tempfile.mkdtemp())]
    ['group_00.png']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..signals.result import SignalsError, SignalsResult
from ..store.format import atomic_open


def _images(dataset, rows: np.ndarray) -> np.ndarray:
    """(m, H, W, 3) float images in [0, 1] of ``rows``."""
    raw = getattr(dataset, "raw", None)
    if raw is not None and raw.ndim == 4:
        img = raw[rows].numpy().astype(np.float32) / 255.0
    else:
        x = dataset.x[rows].numpy().astype(np.float32)
        if x.ndim != 4:
            raise SignalsError(f"cannot draw examples of shape {tuple(x.shape[1:])}; expected images (C, H, W)")
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
        img = (x - lo) / np.maximum(hi - lo, 1e-12)
    img = np.transpose(img, (0, 2, 3, 1))
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.clip(img[..., :3], 0.0, 1.0)


def _direction_image(direction: np.ndarray) -> np.ndarray:
    """A signed (C, H, W) direction as an RGB image: grey is zero, brighter is positive."""
    d = np.asarray(direction, dtype=np.float32)
    if d.ndim != 3:
        raise SignalsError(f"direction must be (C, H, W), got {d.shape}")
    s = float(np.abs(d).max()) or 1.0
    img = np.transpose(0.5 + 0.5 * d / s, (1, 2, 0))
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.clip(img[..., :3], 0.0, 1.0)


def _class_name(classes: tuple, y: np.ndarray, r: int) -> str:
    c = int(y[r]) if y.ndim == 1 else -1
    return classes[c] if 0 <= c < len(classes) else str(c)


def save_group_grids(
    result: SignalsResult,
    dataset,
    out_dir: str | os.PathLike,
    max_images: int = 40,
    cols: int = 10,
    groups: list[int] | None = None,
    dpi: int = 100,
) -> list[Path]:
    """Write one PNG grid per group: its examples, and its mean input minus its classes' mean.

    The first panel shows the direction image (mean image of the group minus the
    mean image of its classes, each member's class weighted by its count; grey is
    zero, bright is above the mean); the others show up
    to ``max_images`` members (largest loss swing first, the order of
    ``Group.members``), each titled with its class and stable id.

    Args:
        result: a :class:`SignalsResult`.
        dataset: the data set the result was computed on (``raw`` images preferred).
        out_dir: folder to write ``group_XX.png`` files into (created).
        max_images: members drawn per group at most.
        cols: images per row.
        groups: group ids to draw (default: all).

    Returns:
        The paths written, in group order.

    Raises:
        SignalsError: when the data set does not match the result or holds no images.
        OSError: when a grid cannot be written (each is written atomically: no torn file is left).
    """
    if len(dataset) != result.n_examples:
        raise SignalsError(
            f"the data set has {len(dataset)} examples but the result was computed on {result.n_examples}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = tuple(getattr(dataset, "classes", ()))
    y = dataset.y.numpy()
    paths = []
    for g in result.groups:
        if groups is not None and g.id not in groups:
            continue
        rows = np.asarray(g.members[:max_images], dtype=np.int64)
        imgs = _images(dataset, rows)
        tiles = ([_direction_image(g.direction)] if g.direction is not None else []) + list(imgs)
        caps = (["mean - its classes' mean"] if g.direction is not None else []) + [
            f"{_class_name(classes, y, r)} {int(dataset.index[r])}" for r in rows]
        ncol = max(1, min(cols, len(tiles)))
        nrow = int(np.ceil(len(tiles) / ncol))
        mix = ", ".join(f"{k} {v}" for k, v in list(g.class_counts.items())[:3])
        words = ("against its classes: " + "; ".join(g.shared) if g.shared
                 else "no descriptor separates it from its classes; what does: the direction image (first tile)")
        # one mosaic in one axes (one subplot per image took ~4 s a group): 1.2 in per tile, 7 pt captions
        h, w = tiles[0].shape[:2]
        cap, gap = int(round(0.35 * h)), 2
        mos = np.ones((nrow * (h + cap), ncol * (w + gap) - gap, 3), np.float32)
        for i, t in enumerate(tiles):
            r, c = divmod(i, ncol)
            mos[r * (h + cap): r * (h + cap) + h, c * (w + gap): c * (w + gap) + w] = t
        fig = Figure(figsize=(1.2 * ncol, 1.2 * nrow * (h + cap) / w + 0.5), dpi=dpi)
        ax = fig.add_axes((0.005, 0.005, 0.99, 1 - 0.5 / fig.get_figheight()))
        ax.imshow(mos, interpolation="nearest", aspect="auto")
        ax.axis("off")
        for i, text in enumerate(caps):
            r, c = divmod(i, ncol)
            ax.text(c * (w + gap) + w / 2, r * (h + cap) + h + 1, text, ha="center", va="top", fontsize=7)
        fig.suptitle(f"group {g.id}: {g.size} examples ({mix})\n{words}", fontsize=8, y=0.995, va="top")
        p = out / f"group_{g.id:02d}.png"
        with atomic_open(p, "wb") as f:  # a full disk leaves the previous grid, never a torn one
            fig.savefig(f, format="png")
        paths.append(p)
    return paths
