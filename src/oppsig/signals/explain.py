"""Explain: what the members of a group share, in numbers and in words.

Every example gets a vector of input descriptors computed from its image
(:mod:`~oppsig.signals.descriptors`: brightness of the borders, background and
centre, colour tints and shares, contrast, the input norm).

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


import numpy as np
import torch

from .descriptors import DESCRIPTORS, Descriptors, input_descriptors
from .result import SignalsError


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
