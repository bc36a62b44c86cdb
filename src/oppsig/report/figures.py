"""Figures: pure functions from a run (and its signals) to a matplotlib Figure, no I/O inside.

Usable from notebooks::

    run = oppsig.open_run("runs/demo-cifar10")
    fig = oppsig.report.plot_loss(run)
    fig = oppsig.report.plot_group_losses(run, signals)
"""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # no display needed; figures are embedded as PNG
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

UP, DOWN, TOTAL = "#d62728", "#1f77b4", "#333333"


def _metric(run, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a metric where it was recorded (finite)."""
    m = run.metrics
    if key not in m or "step" not in m:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    s, v = np.asarray(m["step"]), np.asarray(m[key], dtype=float)
    ok = np.isfinite(v)
    return s[ok], v[ok]


def _unconverged(run, keys) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the eigenvalues under ``keys`` whose solve did not converge (``converged/<key>`` = 0)."""
    m = run.metrics
    ss, vv = [], []
    for k in keys:
        if k not in m or f"converged/{k}" not in m or "step" not in m:
            continue
        c, v = np.asarray(m[f"converged/{k}"], dtype=float), np.asarray(m[k], dtype=float)
        bad = (c == 0) & np.isfinite(v)
        ss.append(np.asarray(m["step"])[bad])
        vv.append(v[bad])
    return (np.concatenate(ss), np.concatenate(vv)) if ss else (np.zeros(0, np.int64), np.zeros(0))


def _spike_steps(signals) -> list[int]:
    if signals is None:
        return []
    return [int(s.step) for s in getattr(signals, "spikes", ())]


def plot_loss(run, signals=None, title: str | None = None) -> Figure:
    """Total training loss (log scale) and accuracy over steps, with detected spikes marked."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 4.6), sharex=True, height_ratios=(2, 1), layout="constrained")
    s, loss = _metric(run, "loss")
    a1.plot(s, loss, color=TOTAL, lw=1, label="train loss")
    ts, tl = _metric(run, "test_loss")
    if len(ts):
        a1.plot(ts, tl, "o-", color="#9467bd", ms=3, lw=1, label="test loss")
    a1.set_yscale("log")
    a1.set_ylabel("loss")
    for k, st in enumerate(_spike_steps(signals)):
        a1.axvline(st, color=UP, alpha=0.35, lw=1, label="detected spike" if k == 0 else None)
    a1.legend(loc="upper right", fontsize=8)
    s, acc = _metric(run, "accuracy")
    a2.plot(s, acc, color="#2ca02c", lw=1, label="train")
    ts, ta = _metric(run, "test_accuracy")
    if len(ts):
        a2.plot(ts, ta, "o-", color="#9467bd", ms=3, lw=1, label="test")
    a2.set_ylabel("accuracy")
    a2.set_xlabel("step")
    a2.legend(loc="lower right", fontsize=8)
    if title:
        a1.set_title(title)
    return fig


def plot_sharpness(run, title: str | None = None) -> Figure:
    """Top Hessian eigenvalues (and layer-wise, preconditioned ones) against the optimiser's stability threshold."""
    fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
    m = run.metrics
    keys = ["sharpness"] + sorted(k for k in m if k.startswith("sharpness_") and k != "sharpness_1")
    drawn = False
    for i, k in enumerate(keys):
        s, v = _metric(run, k)
        if len(s):
            ax.plot(s, v, "o-" if i == 0 else ".-", ms=3, lw=1.2 if i == 0 else 0.8,
                    color=TOTAL if i == 0 else None,
                    label="top eigenvalue" if i == 0 else f"eigenvalue {k.split('_')[1]}")
            drawn = True
    for k in sorted(k for k in m if k.startswith("layer/")):
        s, v = _metric(run, k)
        if len(s):
            ax.plot(s, v, ".--", ms=2, lw=0.7, label=k)
    s, v = _metric(run, "precond_sharpness")
    if len(s):
        ax.plot(s, v, "s-", ms=3, lw=1, color="#ff7f0e", label="preconditioned")
    s, v = _metric(run, "threshold")
    if len(s):
        label = "stability threshold" + (" (of the preconditioned sharpness)"
                                         if len(_metric(run, "precond_sharpness")[0]) else "")
        ax.plot(s, v, color=UP, lw=1.2, ls="--", label=label)
    bad = _unconverged(run, ["sharpness", "precond_sharpness", *keys[1:]])
    if len(bad[0]):
        ax.plot(*bad, "x", color="red", ms=7, mew=1.5, label="not converged (not certified)")
    if not drawn:
        ax.text(0.5, 0.5, "sharpness not recorded (set curvature.every)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("eigenvalue of the loss Hessian")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title)
    return fig


def layer_share_keys(run) -> list[str]:
    """The ``layer_share/<module>`` metrics of a run, in model order (empty when not recorded)."""
    return [k for k in run.metrics if k.startswith("layer_share/")]


def plot_layer_shares(run, title: str | None = None) -> Figure:
    """Where the top Hessian eigenvector lives: its squared norm in each layer (rows) at each measurement (columns).

    Each column sums to 1 (the curvature hook's ``layer_share/<module>`` metrics).
    """
    keys = layer_share_keys(run)
    fig, ax = plt.subplots(figsize=(8, max(2.2, 0.16 * len(keys) + 1.2)), layout="constrained")
    steps = _metric(run, keys[0])[0] if keys else np.zeros(0)
    if not len(steps):
        ax.text(0.5, 0.5, "layer shares not recorded (set curvature.every)", ha="center", va="center",
                transform=ax.transAxes)
        return fig
    share = np.stack([np.interp(steps, *_metric(run, k)) for k in keys])  # (layers, measurements)
    edges = np.concatenate([steps, [steps[-1] + (steps[-1] - steps[-2] if len(steps) > 1 else 1)]])
    im = ax.pcolormesh(edges, np.arange(len(keys) + 1) - 0.5, share, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the top eigenvector", fraction=0.03)
    ax.set_yticks(range(len(keys)), [k.split("/", 1)[1] for k in keys], fontsize=6 if len(keys) > 20 else 8)
    ax.invert_yaxis()
    ax.set_xlabel("step")
    ax.set_ylabel("layer")
    if title:
        ax.set_title(title)
    return fig


def plot_update_projection(run) -> Figure:
    """Each tracked step's update projected on the top Hessian eigenvector: \
its sign flips when GD bounces across the valley."""
    fig, ax = plt.subplots(figsize=(8, 2.6), layout="constrained")
    s, v = _metric(run, "update_proj")
    if len(s):
        ax.bar(s, v, width=max(1.0, (s.max() - s.min()) / max(len(s), 1) * 0.6),
               color=np.where(v > 0, UP, DOWN))
        ax.axhline(0, color="k", lw=0.5)
    else:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("update . top eigvec")
    return fig


def window_around(steps: np.ndarray, center: int, before: int = 30, after: int = 10) -> np.ndarray:
    """Row positions of recorded steps within ``[center - before, center + after]``."""
    steps = np.asarray(steps)
    return np.flatnonzero((steps >= center - before) & (steps <= center + after))


def _group_mean_loss(run, rows: np.ndarray, members: Sequence[int], log: bool = False) -> np.ndarray:
    """The group's mean loss over ``rows``; with ``log``, its mean ``log(L + floor)`` (the relative view's
    values, floor as in :func:`oppsig.signals.group.relative_losses`)."""
    block = np.asarray(run.losses[rows[0] : rows[-1] + 1], dtype=np.float64)[:, np.asarray(members, dtype=int)]
    if log:
        from ..signals.group import relative_floor

        return np.log(np.maximum(block, 0) + relative_floor(run.losses[0])).mean(1)
    return block.mean(1)


def plot_group_losses(run, signals, pair: Any = None, spike: Any = None, before: int = 30, after: int = 10) -> Figure:
    """The paper's anti-phase figure: total loss around a spike (top) and the two groups' mean losses (bottom;
    their mean log losses for a pair found on relative changes, ``pair.view == "relative"``).

    Every detected spike in view is marked, and the largest total loss in view is marked and labelled
    with its step. Each group's legend entry says what sets it apart from the other group
    (:func:`pair_contrast`).

    Args:
        run: an opened run.
        signals: the detection result (groups, pairs, spikes).
        pair: which pair (default: the strongest); its two groups are drawn.
        spike: which spike (default: the one the pair carries most, else the largest; else the whole run).
    """
    groups = {g.id: g for g in getattr(signals, "groups", ())}
    pairs = list(getattr(signals, "pairs", ()))
    if pair is None and pairs:
        pair = pairs[0]
    spikes = list(getattr(signals, "spikes", ()))
    if spike is None and pair is not None and getattr(pair, "spikes", ()):
        by_row = {s.row: s for s in spikes}
        own = [by_row[r] for r in pair.spikes if r in by_row]  # the spikes this pair carries most
        if own:
            spike = own[0]
    if spike is None and spikes:
        spike = max(spikes, key=lambda s: getattr(s, "height", 0.0))
    steps = run.steps
    rows = window_around(steps, int(spike.step), before, after) if spike is not None else np.arange(len(steps))
    if len(rows) == 0:
        rows = np.arange(len(steps))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 4.8), sharex=True, layout="constrained")
    total = np.asarray(run.losses[rows[0] : rows[-1] + 1], dtype=np.float64).mean(1)
    a1.plot(steps[rows], total, "o-", ms=3, color=TOTAL, lw=1)
    a1.set_ylabel("total train loss")
    lo, hi = int(steps[rows[0]]), int(steps[rows[-1]])
    shown = [s for s in spikes if lo <= int(s.step) <= hi]
    for k, s in enumerate(shown):
        a1.axvline(int(s.step), color=UP, alpha=0.35, lw=1, label="detected spike" if k == 0 else None)
    top = int(np.argmax(total))
    a1.plot([steps[rows][top]], [total[top]], "o", ms=7, mfc="none", mec=UP, mew=1.5,
            label=f"largest loss in view (step {int(steps[rows][top])})")
    if spike is not None:
        a1.set_title(f"around the spike at step {int(spike.step)}")
    a1.legend(fontsize=7, loc="upper left")
    relative = pair is not None and getattr(pair, "view", "raw") == "relative"
    if pair is not None:
        ga, gb = pair_groups(pair, groups)
        labels = pair_contrast(ga, gb) if ga is not None and gb is not None else ("", "")
        for g, col, lab in ((ga, UP, labels[0]), (gb, DOWN, labels[1])):
            if g is None:
                continue
            a2.plot(steps[rows], _group_mean_loss(run, rows, g.members, relative), "o-", ms=3, lw=1.2, color=col,
                    label=lab)
        a2.legend(fontsize=8)
    else:
        a2.text(0.5, 0.5, "no significant opposing pair", ha="center", va="center", transform=a2.transAxes)
    # a pair that opposes only in relative terms is drawn as the detection saw it: mean log loss
    a2.set_ylabel("group mean log loss" if relative else "group mean loss")
    a2.set_xlabel("step")
    return fig


def _class_words(g) -> str:
    cc = getattr(g, "class_counts", {}) or {}
    if not cc:
        return f"{len(g.members)} examples"
    name, cnt = next(iter(cc.items()))
    return f"{len(g.members)} {name}" if cnt == len(g.members) else f"{cnt}/{len(g.members)} {name}"


def pair_contrast(ga, gb) -> tuple[str, str]:
    """A legend label for each group of a pair saying what differs between them.

    The descriptor whose effect sizes differ most between the two groups is named for each group by
    its own side (e.g. ``"bright background (+1.6 sd)"`` vs ``"dark background (-1.3 sd)"``); the
    classes are named too. A descriptor both groups share says nothing about what opposes them.

    Example:
        >>> from oppsig.signals.result import Group
        >>> a = Group(0, (1, 2), (1, 2), class_counts={"frog": 2}, descriptors={"background": 1.6, "norm": 0.2})
        >>> b = Group(1, (3,), (3,), class_counts={"frog": 1}, descriptors={"background": -1.3, "norm": 0.1})
        >>> pair_contrast(a, b)
        ('group 0 (2 frog): bright background (+1.6 sd)', 'group 1 (1 frog): dark background (-1.3 sd)')
    """
    from ..signals.descriptors import DESCRIPTORS

    words = {name: (hi, lo) for name, hi, lo in DESCRIPTORS}
    da, db = dict(getattr(ga, "descriptors", {}) or {}), dict(getattr(gb, "descriptors", {}) or {})
    common = [k for k in da if k in db and np.isfinite(da[k]) and np.isfinite(db[k])]
    out = []
    if common:
        key = max(common, key=lambda k: abs(da[k] - db[k]))
        hi, lo = words.get(key, (f"high {key}", f"low {key}"))
        a_high = da[key] >= db[key]
        out = [f"{hi if a_high else lo} ({da[key]:+.1f} sd)", f"{lo if a_high else hi} ({db[key]:+.1f} sd)"]
    else:  # no descriptors: what each group says of itself, if it differs
        sa, sb = tuple(getattr(ga, "shared", ())), tuple(getattr(gb, "shared", ()))
        out = [next((w for w in sa if w not in sb), ""), next((w for w in sb if w not in sa), "")]
    return tuple(f"group {g.id} ({_class_words(g)})" + (f": {w}" if w else "") for g, w in zip((ga, gb), out))


def pair_groups(pair, groups: dict) -> tuple[Any, Any]:
    """The two :class:`~oppsig.signals.Group` objects of a pair (``pair.a``, ``pair.b`` are group ids)."""
    return groups.get(pair.a), groups.get(pair.b)


def plot_heatmap(run, examples: Sequence[int], labels: Sequence[str] | None = None, rows: np.ndarray | None = None,
                 title: str | None = None, blocks: Sequence[int] = ()) -> Figure:
    """Per-example loss over time (rows: examples, columns: recorded steps), for the given example columns.

    Args:
        labels: one label per example (e.g. ``"g3 #1234"``: group and stable id), drawn at a legible size.
        blocks: row positions where a new block (e.g. group) starts; a line is drawn above each.
    """
    examples = np.asarray(examples, dtype=int)
    fig, ax = plt.subplots(figsize=(8, max(2.2, 0.13 * len(examples) + 1.2)), layout="constrained")
    if len(examples) == 0:
        ax.text(0.5, 0.5, "no examples", ha="center", va="center", transform=ax.transAxes)
        return fig
    if rows is None:
        rows = np.arange(run.rows)
    order = np.argsort(examples)  # zarr orthogonal selection wants sorted columns
    block = np.asarray(run.losses[int(rows[0]) : int(rows[-1]) + 1][:, examples[order]], dtype=np.float64)
    block = block[:, np.argsort(order)]
    im = ax.imshow(np.log10(np.maximum(block.T, 1e-4)), aspect="auto", cmap="magma", interpolation="nearest",
                   extent=(run.steps[rows[0]], run.steps[rows[-1]], len(examples) - 0.5, -0.5))
    fig.colorbar(im, ax=ax, label="log10 loss", fraction=0.03)
    if labels is not None:
        ax.set_yticks(range(len(examples)), labels, fontsize=7)
    for b in blocks:
        if b > 0:
            ax.axhline(b - 0.5, color="white", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("example (group, id)" if labels is not None else "example")
    if title:
        ax.set_title(title)
    return fig


def image_mosaic(images: np.ndarray, ncols: int = 10, gap: int = 2, scale: int = 2) -> np.ndarray:
    """uint8 images (N, 3, H, W) or (N, H, W, 3) tiled into one (rows*H', cols*W', 3) uint8 array, white gaps.

    Each image is enlarged ``scale`` times (nearest neighbour), so 32 px CIFAR images show at 64 px.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype != np.uint8:
        images = np.clip(np.asarray(images, dtype=np.float64) * 255, 0, 255).astype(np.uint8)
    n, h, w = images.shape[:3]
    h, w = h * scale, w * scale
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    out = np.full((nrows * (h + gap) - gap, ncols * (w + gap) - gap, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        tile = images[i].repeat(scale, 0).repeat(scale, 1)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile[..., :3]
    return out


def plot_image_grid(images: np.ndarray, title: str = "", ncols: int = 10,
                    captions: Sequence[str] | None = None) -> Figure:
    """A grid of uint8 images (N, 3, H, W) (or (N, H, W, 3)), drawn as one mosaic; captions at 7 pt under each."""
    images = np.asarray(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    cap = 0.18 if captions is not None else 0.0
    fig = plt.figure(figsize=(ncols * 0.8, nrows * (0.8 + cap) + (0.3 if title else 0.05)))
    ax = fig.add_axes((0.005, 0.005, 0.99, 0.99 - (0.3 / fig.get_figheight() if title else 0.0)))
    ax.axis("off")
    if n == 0:
        return fig
    mos = image_mosaic(images, ncols, gap=2, scale=1)
    h = images.shape[2] if images.shape[1] in (1, 3) else images.shape[1]
    if captions is not None:  # room under every row for its captions
        rows = [mos[r * (h + 2): r * (h + 2) + h] for r in range(nrows)]
        pad = np.full((int(round(h * cap / 0.8)) + 2, mos.shape[1], 3), 255, np.uint8)
        mos = np.concatenate([np.concatenate([r, pad]) for r in rows])
        step = h + pad.shape[0]
        w = (mos.shape[1] + 2) / ncols
        for i, c in enumerate(captions[:n]):
            r, k = divmod(i, ncols)
            ax.text((k + 0.5) * w - 1, r * step + h + 1, c, ha="center", va="top", fontsize=7)
    ax.imshow(mos, interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=9, y=0.995, va="top")
    return fig


def plot_direction(direction: np.ndarray, title: str = "") -> Figure:
    """A group's signal direction in input space (mean image minus data mean), shown as an image."""
    d = np.asarray(direction, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.8, 1.9), layout="constrained")
    if d.ndim == 3 and d.shape[0] in (1, 3):
        d = d.transpose(1, 2, 0)
        lim = np.abs(d).max() or 1.0
        ax.imshow(np.clip(0.5 + 0.5 * d / lim, 0, 1).squeeze())
    else:
        ax.imshow(d.reshape(1, -1) if d.ndim == 1 else d, cmap="coolwarm")
    ax.axis("off")
    ax.set_title(title, fontsize=7)
    return fig


def plot_comparison(runs: Sequence, names: Sequence[str], key: str = "loss", log: bool = True) -> Figure:
    """One metric of several runs on shared axes (e.g. GD vs Adam vs SplitSGD)."""
    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    for run, name in zip(runs, names):
        s, v = _metric(run, key)
        if len(s):
            ax.plot(s, v, lw=1, label=name)
            if key == "sharpness":
                ts, tv = _metric(run, "threshold")
                if len(ts):
                    ax.plot(ts, tv, ls="--", lw=0.8, color=ax.lines[-1].get_color())
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.legend(fontsize=8)
    return fig
