"""A synthetic image data set with planted opposing signals (the embedded default).

Each 32x32 RGB image is smooth background noise plus a small class pattern (the
genuine, low-magnitude signal). A few rare groups of examples also carry a
large-magnitude feature shared across classes: for each planted *pair* a
feature (e.g. a bright sky over the top of the image) is added to a fraction of
the examples of class ``a`` and to a fraction of the examples of class ``b``.
The feature is the same in both groups but predicts opposite labels, so the
two groups pull the network's response to it in opposite directions: the
opposing signals of Rosenfeld & Risteski (arXiv 2311.04163), with known
membership so that detection can be scored.

Ground truth is returned in ``ArrayDataset.groups``: ``2*k`` for pair ``k``'s
class-``a`` group, ``2*k+1`` for its class-``b`` group, ``-1`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from .base import ArrayDataset, channel_stats, standardise

FEATURES = ("bright_top", "dark_border", "red_left", "bright_border")


def feature_map(name: str, size: int = 32) -> np.ndarray:
    """The planted feature ``name`` as a (3, size, size) pattern of unit peak amplitude (signed)."""
    f = np.zeros((3, size, size), dtype=np.float32)
    half, b = size // 2, max(2, size // 8)
    if name == "bright_top":  # a bright, slightly blue sky over the upper half
        f[:, :half, :] = 1.0
        f[2, :half, :] = 1.2
    elif name == "dark_border":  # a dark frame around the object
        f[:, :b, :] = f[:, -b:, :] = f[:, :, :b] = f[:, :, -b:] = -1.0
    elif name == "red_left":
        f[0, :, :half] = 1.0
        f[1:, :, :half] = -0.3
    elif name == "bright_border":
        f[:, :b, :] = f[:, -b:, :] = f[:, :, :b] = f[:, :, -b:] = 1.0
    else:
        raise ConfigError(f"unknown synthetic feature {name!r}; valid: {', '.join(FEATURES)}")
    return f


@dataclass(frozen=True)
class PlantedPair:
    """One planted opposing pair: ``feature`` added to a fraction of classes ``class_a`` and ``class_b``."""

    feature: str
    class_a: int
    class_b: int


def _smooth_noise(rng: np.random.Generator, n: int, size: int, coarse: int = 8) -> np.ndarray:
    """Low-frequency noise (n, 3, size, size): coarse Gaussian noise upsampled, plus fine noise."""
    c = rng.standard_normal((n, 3, coarse, coarse)).astype(np.float32)
    up = np.repeat(np.repeat(c, size // coarse, axis=2), size // coarse, axis=3)
    return 0.8 * up + 0.6 * rng.standard_normal((n, 3, size, size)).astype(np.float32)


def opposing_signals(
    n: int = 5000,
    num_classes: int = 10,
    pairs: tuple[PlantedPair, ...] | None = None,
    magnitude: float = 3.0,
    frequency: float = 0.1,
    signal: float = 0.05,
    seed: int = 0,
    standardize: bool = True,
    size: int = 32,
) -> ArrayDataset:
    """Make the synthetic opposing-signals data set.

    Args:
        n: number of examples; classes are balanced and interleaved.
        num_classes: number of classes (each gets a fixed random low-magnitude pattern).
        pairs: planted pairs; default two: ``bright_top`` on classes 0 vs 1 and
            ``dark_border`` on classes 2 vs 3.
        magnitude: amplitude of a planted feature, in units of the background's
            per-pixel standard deviation (0 gives the control data set: no planted signal).
        frequency: fraction of the examples of each paired class that carry the feature.
        signal: amplitude of the genuine class pattern (same units). The default
            0.05 keeps the classes hard to separate (as in natural images), so that
            full-batch GD trains for hundreds of steps at the edge of stability
            (e.g. fc-tanh 200-200, MSE, lr 0.1: sharpness ~2/lr from step ~50) and
            the planted groups' losses oscillate in anti-phase; at 0.35 the data
            are separated within ~50 steps and the oscillation dies out.
        seed: everything is drawn from this seed.

    Returns:
        An :class:`ArrayDataset` with ``groups`` set and ``meta["pairs"]``
        describing each planted pair.

    Raises:
        ConfigError: for sizes, fractions or classes out of range.
    """
    if pairs is None:
        pairs = (PlantedPair("bright_top", 0, 1), PlantedPair("dark_border", 2, 3))
    if n <= 0 or num_classes < 2:
        raise ConfigError(f"synthetic data needs n > 0 and num_classes >= 2 (got n={n}, num_classes={num_classes})")
    if not 0.0 <= frequency <= 1.0:
        raise ConfigError(f"synthetic frequency must lie in [0, 1], got {frequency}")
    if magnitude < 0 or not np.isfinite(magnitude):
        raise ConfigError(f"synthetic magnitude must be >= 0 and finite, got {magnitude}")
    for p in pairs:
        for c in (p.class_a, p.class_b):
            if not 0 <= c < num_classes:
                raise ConfigError(f"planted pair {p}: class {c} is outside 0..{num_classes - 1}")
        feature_map(p.feature, size)  # validates the name
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    patterns = rng.choice([-1.0, 1.0], size=(num_classes, 3, size, size)).astype(np.float32)
    x = _smooth_noise(rng, n, size) + signal * patterns[y]
    groups = np.full(n, -1, dtype=np.int64)
    for k, p in enumerate(pairs):
        f = feature_map(p.feature, size)
        for g, c in ((2 * k, p.class_a), (2 * k + 1, p.class_b)):
            idx = np.flatnonzero((y == c) & (groups == -1))
            m = int(round(frequency * len(idx)))
            members = np.sort(rng.choice(idx, size=m, replace=False)) if m else np.array([], dtype=np.int64)
            groups[members] = g
            x[members] += magnitude * f
    # to uint8 images (mid-grey background, ~40 grey levels per unit), then standardise like real images
    raw = torch.from_numpy(np.clip(np.rint(128.0 + 40.0 * x), 0, 255).astype(np.uint8))
    if standardize:
        mean, std = channel_stats(raw)
        xt = standardise(raw, mean, std)
    else:
        xt = raw.to(torch.float32) / 255.0
    meta = {
        "pairs": [
            {"feature": p.feature, "class_a": p.class_a, "class_b": p.class_b, "groups": [2 * k, 2 * k + 1]}
            for k, p in enumerate(pairs)
        ],
        "magnitude": magnitude,
        "frequency": frequency,
        "signal": signal,
        "seed": seed,
    }
    return ArrayDataset(
        x=xt,
        y=torch.from_numpy(y.astype(np.int64)),
        index=torch.arange(n, dtype=torch.int64),
        classes=tuple(f"class{c}" for c in range(num_classes)),
        raw=raw,
        groups=groups,
        name=f"synthetic-{n}",
        meta=meta,
    )
