"""Explain: what the members of a group share, in numbers and in words.

Every example gets a vector of input descriptors computed from its image
(``dataset.raw`` uint8 (N, 3, H, W) when present, else the standardised
``dataset.x``): overall brightness, brightness of the top/bottom/left/right
borders, of the whole background frame and of the centre, colour tints,
saturation, contrast, the dark- and bright-pixel fractions of the luminance
histogram, the colour histogram's red/green/blue shares, the colour (red/green/blue tint
and saturation) of the background frame and of the object in the centre, and
the input norm.

A group is compared with *its own classes*, not with the whole data set (a
group of frogs against all frogs): a descriptor's *effect size* is the mean over
the members of (value minus the mean of the member's class), in within-class
standard deviations; the largest ones are put into words ("bright top border",
"greenish background"). The group's mean input minus its classes' mean input
(each member's class weighted by its count) is the *direction image* of its
signal; its norm is compared with the typical distance of an example from its
class mean. When no descriptor reaches ``min_effect``, the explanation says
where the direction image lies (border or centre) and which colour it adds.

Example:
    >>> from oppsig.data import opposing_signals
    >>> ds = opposing_signals(n=500, seed=0)
    >>> desc = input_descriptors(ds)
    >>> desc.values.shape == (500, len(desc.names))
    True
    >>> g = explain_group(ds, np.flatnonzero(ds.groups == 0), desc)
    >>> "bright top border" in g["shared"]
    True
    >>> g["class_counts"]
    {'class0': 5}
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
    """The data's class-mean inputs and typical spread, computed once for many groups.

    Args:
        dataset: the data set (its standardised ``x``; ``y`` class labels when 1-D).
        sample: typical norms and projections use at most this many examples.
        seed: seed of that sample.
    """

    def __init__(self, dataset, sample: int = 5000, seed: int = 0) -> None:
        x = dataset.x
        self.shape = tuple(x.shape[1:])
        self.flat = x.reshape(len(x), -1)
        if not self.flat.is_floating_point():
            self.flat = self.flat.float()
        n = len(x)
        y = dataset.y.numpy() if dataset.y.ndim == 1 else np.zeros(n, dtype=np.int64)
        _, self.labels = np.unique(y, return_inverse=True)
        lab = torch.as_tensor(self.labels)
        counts = torch.bincount(lab).double()
        sums = torch.zeros((len(counts), self.flat.shape[1]), dtype=torch.float64)
        sums.index_add_(0, lab, self.flat.double())
        self.class_mean = sums / counts[:, None]  # (C, D)
        rng = np.random.default_rng(seed)
        idx = np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
        ti = torch.as_tensor(idx)
        self.cen = self.flat[ti].double() - self.class_mean[lab[ti]]
        self.typical = float(torch.linalg.vector_norm(self.cen, dim=1).median())

    def direction(self, rows: np.ndarray) -> dict:
        """See :func:`signal_direction`."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            raise SignalsError("cannot explain an empty group")
        tr = torch.as_tensor(rows)
        members = self.flat[tr].double() - self.class_mean[torch.as_tensor(self.labels[rows])]
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
    """The group's mean input minus its classes' mean input, and how large it is.

    Args:
        dataset: the data set (uses its standardised ``x`` and class labels ``y``).
        rows: the group's rows.
        sample: typical norms are measured on at most this many examples.

    Returns:
        dict with ``direction`` (shape of one input, float32: the members' mean of
        ``x_i - mean of x over class(i)``), ``norm`` (its norm), ``ratio`` (norm over
        the median ``||x_i - class mean||``) and ``projection_ratio`` (median
        projection of the members on the unit direction over the median absolute
        projection of all examples).

    Raises:
        SignalsError: for an empty group.
    """
    return InputSpace(dataset, sample, seed).direction(rows)


def describe_direction(direction: np.ndarray) -> str:
    """Where a (C, H, W) direction image lies and which colour it adds, in words.

    Example:
        >>> d = np.zeros((3, 32, 32)); d[1, :4, :] = 1.0
        >>> describe_direction(d)
        'mostly in the border (100% of its energy), adding green'
    """
    d = np.asarray(direction, dtype=np.float64)
    if d.ndim != 3 or d.shape[1] < 4 or d.shape[2] < 4:
        return f"a direction of norm {np.linalg.norm(d):.2f}"
    c, h, w = d.shape
    b = max(1, min(h, w) // 8)
    frame = np.zeros((h, w), dtype=bool)
    frame[:b, :] = frame[-b:, :] = frame[:, :b] = frame[:, -b:] = True
    e = (d**2).sum(axis=0)
    tot = float(e.sum())
    if tot <= 0:
        return "no direction (the members match their classes' mean exactly)"
    share = float(e[frame].sum()) / tot
    area = float(frame.mean())
    where = (f"mostly in the border ({100 * share:.0f}% of its energy)" if share > max(0.5, 1.5 * area)
             else f"mostly in the centre ({100 * (1 - share):.0f}% of its energy)" if share < 0.5 * area
             else "spread over the image")
    if c != 3:
        sign = "brighter" if d.mean() > 0 else "darker"
        return f"{where}, {sign}"
    m = d.mean(axis=(1, 2))
    grey = m.mean()
    tint = m - grey
    names = {(1, 0, 0): "red", (0, 1, 0): "green", (0, 0, 1): "blue",
             (1, 1, 0): "yellow", (0, 1, 1): "cyan", (1, 0, 1): "magenta"}
    if np.abs(tint).max() < 0.25 * max(abs(grey), 1e-12):
        return f"{where}, {'brighter' if grey > 0 else 'darker'}"
    key = tuple(int(t > 0) for t in tint)
    colour = names.get(key, "grey")
    return f"{where}, adding {colour}"


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
    """Class mix, what sets the group apart from its own classes (numbers and words), and its direction image.

    Args:
        dataset: an :class:`~oppsig.data.ArrayDataset`.
        rows: (n,) the group's rows in the data set.
        descriptors: precomputed :func:`input_descriptors` (computed if ``None``).
        min_effect: smallest |effect size| (within-class standard deviations) put into words.
        max_words: at most this many words.
        space: precomputed :class:`InputSpace` (computed if ``None``).

    Returns:
        dict with ``class_counts``, ``descriptors`` ({name: effect size against the
        group's classes}), ``shared`` (words), ``direction`` (mean input minus its
        classes' mean), ``direction_norm``, ``direction_ratio``, ``projection_ratio``
        and ``explanation`` (one line; when no descriptor reaches ``min_effect`` it
        says where the direction image lies and which colour it adds).

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
    labels = dataset.y.numpy()
    eff = desc.effect(rows, labels if labels.ndim == 1 else None)
    shared = describe_effects(eff, desc.names, min_effect, max_words)
    cc = class_counts(labels, rows, tuple(dataset.classes))
    dirn = (space or InputSpace(dataset)).direction(rows)
    mix = ", ".join(f"{k} {v}" for k, v in list(cc.items())[:3])
    strongest = np.argsort(-np.abs(eff), kind="stable")[: len(shared)]
    size = (f"mean input - its classes' mean has norm {dirn['ratio']:.2f}x a typical example's distance "
            "from its class mean")
    if shared:
        words = ", ".join(f"{w} ({eff[j]:+.1f} sd)" for w, j in zip(shared, strongest))
        line = f"{len(rows)} examples ({mix}); against their classes: {words}; {size}"
    else:
        line = (f"{len(rows)} examples ({mix}); no descriptor separates them from their classes "
                f"(all below {min_effect:g} sd); what does is the direction image (mean input - its classes' "
                f"mean), {describe_direction(dirn['direction'])}; {size}")
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


def coherence_features(dataset, descriptors: Descriptors, n_pcs: int = 16, seed: int = 0) -> np.ndarray:
    """(N, F + n_pcs) input features for the coherence test: the descriptors and the leading input PCs.

    The principal components of the flattened standardised inputs (randomised
    SVD with two power iterations) catch shared input structure that no named
    descriptor describes.
    """
    feats = [descriptors.values]
    x = dataset.x
    if n_pcs > 0 and x.is_floating_point() and len(x) > n_pcs + 1:
        flat = x.reshape(len(x), -1).numpy().astype(np.float32)
        flat = flat - flat.mean(axis=0)
        q = min(n_pcs, flat.shape[1], len(x) - 1)
        w = min(q + 8, flat.shape[1])
        y = flat @ np.random.default_rng(seed).standard_normal((flat.shape[1], w)).astype(np.float32)
        for _ in range(2):
            y, _ = np.linalg.qr(y)
            y = flat @ (flat.T @ y)
        qm, _ = np.linalg.qr(y)
        u, sv, _ = np.linalg.svd(qm.T @ flat, full_matrices=False)
        feats.append(((qm @ u[:, :q]) * sv[:q]).astype(np.float64))
    return np.concatenate(feats, axis=1)
