"""Explain: what the members of a group share, in numbers and in words.

Every example gets a vector of input descriptors computed from its image
(``dataset.raw`` uint8 (N, 3, H, W) when present, else the standardised
``dataset.x``): overall brightness, brightness of the top/bottom/left/right
borders, of the whole background frame and of the centre, colour tints,
saturation, contrast, the dark- and bright-pixel fractions of the luminance
histogram, the colour histogram's red/green/blue shares, and the input norm.
A group's *effect size* for a descriptor is its mean minus the data mean, in
data standard deviations; the largest ones are put into words ("bright top
border", "dark background").

The group's mean input minus the data mean is the direction of its signal in
input space; its norm is compared with the typical distance of an example
from the mean.

Example:
    >>> from oppsig.data import opposing_signals
    >>> ds = opposing_signals(n=500, seed=0)
    >>> desc = input_descriptors(ds)
    >>> desc.values.shape == (500, len(desc.names))
    True
    >>> g = explain_group(ds, np.flatnonzero(ds.groups == 0), desc)
    >>> "bright top border" in g["shared"]
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .result import SignalsError

# (name, words when high, words when low)
DESCRIPTORS: tuple[tuple[str, str, str], ...] = (
    ("brightness", "bright image", "dark image"),
    ("background", "bright background", "dark background"),
    ("centre", "bright centre", "dark centre"),
    ("top", "bright top border", "dark top border"),
    ("bottom", "bright bottom border", "dark bottom border"),
    ("left", "bright left border", "dark left border"),
    ("right", "bright right border", "dark right border"),
    ("object_contrast", "centre brighter than background", "centre darker than background"),
    ("red_tint", "reddish", "cyan tint"),
    ("green_tint", "greenish", "purple tint"),
    ("blue_tint", "bluish", "yellow tint"),
    ("top_blue", "blue top (sky-like)", "yellow-brown top"),
    ("saturation", "colourful", "greyish"),
    ("contrast", "high contrast", "low contrast (flat)"),
    ("dark_pixels", "many dark pixels", "few dark pixels"),
    ("bright_pixels", "many bright pixels", "few bright pixels"),
    ("red_pixels", "many red pixels", "few red pixels"),
    ("green_pixels", "many green pixels", "few green pixels"),
    ("blue_pixels", "many blue pixels", "few blue pixels"),
    ("norm", "large input norm", "small input norm"),
    # text: one example per target token (see oppsig.data.text.token_examples)
    ("after_newline", "after a newline", "not after a newline"),
    ("after_space", "after a space", "not after a space"),
    ("inside_word", "inside a word", "at a word boundary"),
    ("target_space", "target is a space", "target is not a space"),
    ("target_newline", "target is a newline", "target is not a newline"),
    ("target_punct", "target is punctuation", "target is not punctuation"),
    ("target_upper", "target is a capital", "target is not a capital"),
    ("position", "late in the sequence", "early in the sequence"),
)


@dataclass(frozen=True)
class Descriptors:
    """Input descriptors of every example.

    Attributes:
        names: descriptor names, (F,).
        values: (N, F) float64 raw descriptor values.
        mean, std: (F,) over the data set (``std`` floored to avoid division by zero).
        z: (N, F) standardised values ``(values - mean) / std``.
    """

    names: tuple[str, ...]
    values: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    z: np.ndarray

    def effect(self, rows: np.ndarray) -> np.ndarray:
        """(F,) effect sizes of the examples ``rows``: their mean z per descriptor."""
        return self.z[np.asarray(rows, dtype=np.int64)].mean(axis=0)


def _image_descriptors(img: np.ndarray) -> dict[str, np.ndarray]:
    """Descriptors of images (n, 3, H, W) with values in [0, 1]."""
    n, c, h, w = img.shape
    if c == 3:
        lum = 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    else:
        lum = img.mean(axis=1)
    b = max(1, min(h, w) // 8)
    qh, qw = max(1, h // 4), max(1, w // 4)
    frame = np.zeros((h, w), dtype=bool)
    frame[:b, :] = frame[-b:, :] = frame[:, :b] = frame[:, -b:] = True
    centre = np.zeros((h, w), dtype=bool)
    centre[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    out = {
        "brightness": lum.mean(axis=(1, 2)),
        "background": lum[:, frame].mean(axis=1),
        "centre": lum[:, centre].mean(axis=1),
        "top": lum[:, :qh].mean(axis=(1, 2)),
        "bottom": lum[:, -qh:].mean(axis=(1, 2)),
        "left": lum[:, :, :qw].mean(axis=(1, 2)),
        "right": lum[:, :, -qw:].mean(axis=(1, 2)),
        "contrast": lum.std(axis=(1, 2)),
        "dark_pixels": (lum < 0.2).mean(axis=(1, 2)),
        "bright_pixels": (lum > 0.8).mean(axis=(1, 2)),
    }
    out["object_contrast"] = out["centre"] - out["background"]
    if c == 3:
        mean_c = img.mean(axis=(2, 3))  # (n, 3)
        grey = mean_c.mean(axis=1)
        out["red_tint"] = mean_c[:, 0] - grey
        out["green_tint"] = mean_c[:, 1] - grey
        out["blue_tint"] = mean_c[:, 2] - grey
        top = img[:, :, : h // 2]
        out["top_blue"] = top[:, 2].mean(axis=(1, 2)) - top[:, :2].mean(axis=(1, 2, 3))
        mx, mn = img.max(axis=1), img.min(axis=1)
        sat = mx - mn
        out["saturation"] = sat.mean(axis=(1, 2))
        dom = img.argmax(axis=1)
        coloured = sat > 0.15
        for k, name in enumerate(("red_pixels", "green_pixels", "blue_pixels")):
            out[name] = ((dom == k) & coloured).mean(axis=(1, 2))
    return out


def input_descriptors(dataset, chunk: int = 2048) -> Descriptors:
    """Descriptors of every example of ``dataset`` (see the module docstring).

    Args:
        dataset: an :class:`~oppsig.data.ArrayDataset`; image descriptors need
            ``raw`` (N, C, H, W) uint8 or 4-D ``x``; otherwise only the input norm is used.
        chunk: examples processed at a time.

    Returns:
        :class:`Descriptors` with ``values`` (N, F).

    Raises:
        SignalsError: when the data set has no examples.
    """
    n = len(dataset)
    if n == 0:
        raise SignalsError("the data set has no examples")
    x = dataset.x
    raw = getattr(dataset, "raw", None)
    cols: dict[str, list[np.ndarray]] = {}
    for s in range(0, n, chunk):
        xs = x[s : s + chunk]
        d: dict[str, np.ndarray] = {}
        if raw is not None and raw.ndim == 4:
            d.update(_image_descriptors(raw[s : s + chunk].numpy().astype(np.float32) / 255.0))
        elif xs.ndim == 4 and xs.is_floating_point():
            xa = xs.numpy().astype(np.float32)
            lo, hi = float(x.min()), float(x.max())
            d.update(_image_descriptors((xa - lo) / max(hi - lo, 1e-12)))
        if xs.is_floating_point():
            d["norm"] = torch.linalg.vector_norm(xs.reshape(len(xs), -1).double(), dim=1).numpy()
        extra = (getattr(dataset, "meta", None) or {}).get("descriptors")  # e.g. text descriptors per token
        if extra:
            d.update({k: np.asarray(v)[s : s + chunk] for k, v in extra.items()})
        for k, v in d.items():
            cols.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
    order = [name for name, _, _ in DESCRIPTORS if name in cols]
    if not order:
        values = np.zeros((n, 0))
    else:
        values = np.stack([np.concatenate(cols[k]) for k in order], axis=1)
    mean = values.mean(axis=0)
    std = np.maximum(values.std(axis=0), 1e-9)
    return Descriptors(tuple(order), values, mean, std, (values - mean) / std)


def describe_effects(
    effects: np.ndarray, names: tuple[str, ...], min_effect: float = 0.8, max_words: int = 3
) -> tuple[str, ...]:
    """Words for the strongest effect sizes (|effect| >= ``min_effect``), strongest first.

    Example:
        >>> describe_effects(np.array([1.5, -0.2]), ("top", "brightness"))
        ('bright top border',)
    """
    words = {name: (hi, lo) for name, hi, lo in DESCRIPTORS}
    order = np.argsort(-np.abs(effects), kind="stable")
    out = []
    for j in order:
        e = float(effects[j])
        if abs(e) < min_effect or len(out) >= max_words:
            break
        hi, lo = words.get(names[j], (f"high {names[j]}", f"low {names[j]}"))
        out.append(hi if e > 0 else lo)
    return tuple(out)


class InputSpace:
    """The data's mean input and typical spread, computed once for many groups.

    Args:
        dataset: the data set (its standardised ``x``).
        sample: typical norms and projections use at most this many examples.
        seed: seed of that sample.
    """

    def __init__(self, dataset, sample: int = 5000, seed: int = 0) -> None:
        x = dataset.x
        self.shape = tuple(x.shape[1:])
        self.flat = x.reshape(len(x), -1)
        if not self.flat.is_floating_point():
            self.flat = self.flat.float()
        self.mu = self.flat.double().mean(dim=0)
        rng = np.random.default_rng(seed)
        n = len(x)
        idx = np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
        self.cen = (self.flat[torch.as_tensor(idx)].double() - self.mu)
        self.typical = float(torch.linalg.vector_norm(self.cen, dim=1).median())

    def direction(self, rows: np.ndarray) -> dict:
        """See :func:`signal_direction`."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            raise SignalsError("cannot explain an empty group")
        members = self.flat[torch.as_tensor(rows)].double() - self.mu
        delta = members.mean(dim=0)
        norm = float(torch.linalg.vector_norm(delta))
        pr = float("nan")
        if norm > 0:
            u = delta / norm
            proj_all = float((self.cen @ u).abs().median())
            if proj_all > 0:
                pr = float((members @ u).median()) / proj_all
        return {
            "direction": delta.float().reshape(self.shape).numpy(),
            "norm": norm,
            "ratio": norm / self.typical if self.typical > 0 else float("nan"),
            "projection_ratio": pr,
        }


def signal_direction(dataset, rows: np.ndarray, sample: int = 5000, seed: int = 0) -> dict:
    """The group's mean input minus the data mean, and how large it is.

    Args:
        dataset: the data set (uses its standardised ``x``).
        rows: the group's rows.
        sample: typical norms are measured on at most this many examples.

    Returns:
        dict with ``direction`` (shape of one input, float32), ``norm`` (its
        norm), ``ratio`` (norm over the median ``||x_i - mean||``) and
        ``projection_ratio`` (median projection of the members on the unit
        direction over the median absolute projection of all examples).

    Raises:
        SignalsError: for an empty group.
    """
    return InputSpace(dataset, sample, seed).direction(rows)


def class_counts(labels: np.ndarray, rows: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
    """``{class name: count}`` of ``labels[rows]``, most common first."""
    y = np.asarray(labels)[np.asarray(rows, dtype=np.int64)]
    if y.ndim != 1:
        return {}
    vals, cnt = np.unique(y, return_counts=True)
    order = np.argsort(-cnt, kind="stable")
    name = lambda c: classes[int(c)] if 0 <= int(c) < len(classes) else str(int(c))  # noqa: E731
    return {name(vals[i]): int(cnt[i]) for i in order}


def explain_group(
    dataset,
    rows: np.ndarray,
    descriptors: Descriptors | None = None,
    min_effect: float = 0.8,
    max_words: int = 3,
    space: InputSpace | None = None,
) -> dict:
    """Class mix, shared descriptors (numbers and words) and signal direction of a group.

    Args:
        dataset: an :class:`~oppsig.data.ArrayDataset`.
        rows: (n,) the group's rows in the data set.
        descriptors: precomputed :func:`input_descriptors` (computed if ``None``).
        min_effect: smallest |effect size| put into words.
        max_words: at most this many words.
        space: precomputed :class:`InputSpace` (computed if ``None``).

    Returns:
        dict with ``class_counts``, ``descriptors`` ({name: effect size}),
        ``shared`` (words), ``direction``, ``direction_norm``, ``direction_ratio``,
        ``projection_ratio`` and ``explanation`` (one line).

    Raises:
        SignalsError: for an empty group or rows outside the data set.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(dataset)
    if len(rows) == 0:
        raise SignalsError("cannot explain an empty group")
    if rows.min() < 0 or rows.max() >= n:
        raise SignalsError(f"group rows must lie in 0..{n - 1}, got {rows.min()}..{rows.max()}")
    desc = descriptors if descriptors is not None else input_descriptors(dataset)
    eff = desc.effect(rows)
    shared = describe_effects(eff, desc.names, min_effect, max_words)
    cc = class_counts(dataset.y.numpy(), rows, tuple(dataset.classes))
    dirn = (space or InputSpace(dataset)).direction(rows)
    mix = ", ".join(f"{k} {v}" for k, v in list(cc.items())[:3])
    strongest = np.argsort(-np.abs(eff), kind="stable")[: len(shared)]
    words = ", ".join(f"{w} ({eff[j]:+.1f} sd)" for w, j in zip(shared, strongest)) or "no descriptor stands out"
    line = (
        f"{len(rows)} examples ({mix}); shared: {words}; mean input - data mean has norm "
        f"{dirn['ratio']:.2f}x a typical example's distance from the mean"
    )
    return {
        "class_counts": cc,
        "descriptors": {k: float(v) for k, v in zip(desc.names, eff)},
        "shared": shared,
        "direction": dirn["direction"],
        "direction_norm": dirn["norm"],
        "direction_ratio": dirn["ratio"],
        "projection_ratio": dirn["projection_ratio"],
        "explanation": line,
    }
