"""Input descriptors: a vector of named numbers per example, computed from its image or its token.

Every example gets a vector of input descriptors computed from its image
(``dataset.raw`` uint8 (N, 3, H, W) when present, else the standardised
``dataset.x``): overall brightness, brightness of the top/bottom/left/right
borders, of the whole background frame and of the centre, colour tints,
saturation, contrast, the dark- and bright-pixel fractions of the luminance
histogram, the colour histogram's red/green/blue shares, the colour (red/green/blue tint
and saturation) of the background frame and of the object in the centre, and
the input norm. :data:`DESCRIPTORS` names each one with its words when high and low.

Example:
    >>> from oppsig.data import opposing_signals
    >>> desc = input_descriptors(opposing_signals(n=100, seed=0))
    >>> desc.values.shape == (100, len(desc.names))
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
    ("bg_red", "reddish background", "cyan-tinted background"),
    ("bg_green", "greenish background", "magenta-tinted background"),
    ("bg_blue", "bluish background", "yellowish background"),
    ("bg_saturation", "colourful background", "grey background"),
    ("obj_red", "reddish object (centre)", "cyan-tinted object (centre)"),
    ("obj_green", "greenish object (centre)", "magenta-tinted object (centre)"),
    ("obj_blue", "bluish object (centre)", "yellowish object (centre)"),
    ("obj_saturation", "colourful object (centre)", "grey object (centre)"),
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

    def effect(self, rows: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(F,) effect sizes of the examples ``rows`` against their own classes.

        With ``labels`` (N,): the mean over ``rows`` of (value minus the mean of
        the example's class), in pooled within-class standard deviations. Without:
        the mean z against the whole data set.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if labels is None or np.ndim(labels) != 1:
            return self.z[rows].mean(axis=0)
        w, sd = _within_class(self.values, np.asarray(labels))
        return w[rows].mean(axis=0) / sd


def _within_class(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values minus their class mean (N, F), and the pooled within-class standard deviation (F,)."""
    _, inv = np.unique(labels, return_inverse=True)
    counts = np.bincount(inv)
    sums = np.zeros((len(counts), values.shape[1]))
    np.add.at(sums, inv, values)
    w = values - (sums / counts[:, None])[inv]
    sd = np.sqrt((w * w).sum(axis=0) / max(1, len(values) - len(counts)))
    return w, np.maximum(sd, 1e-9)


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
        # hue and saturation of the background (border frame) and of the object (centre)
        for part, mask in (("bg", frame), ("obj", centre)):
            cm = img[:, :, mask].mean(axis=2)  # (n, 3) mean colour of the region
            g = cm.mean(axis=1, keepdims=True)
            for k, ch in enumerate(("red", "green", "blue")):
                out[f"{part}_{ch}"] = cm[:, k] - g[:, 0]
            out[f"{part}_saturation"] = sat[:, mask].mean(axis=1)
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
