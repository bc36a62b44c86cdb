"""Figures of the two-layer linear model of opposing signals (:mod:`oppsig.toy.linear`).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot
(no global state, no file I/O); save it with ``fig.savefig(path)``.

- :func:`trajectory_figure`: sharpness and the opposing-feature curvature
  against ``2/lr``, the groups' losses, the weights on the two features.
- :func:`antiphase_figure`: a zoom on the oscillation, the groups' losses
  moving in anti-phase.
- :func:`comparison_figure`: several runs side by side (e.g. ``alpha -> 0``).
- :func:`phase_diagram_figure`: observed phases over ``(alpha, lr)`` with the
  predicted boundaries ``lr = 2 / S_bal`` and ``lr = 4 / S_bal``.

Example:
    >>> from oppsig.toy.linear import make_data, train, TrainConfig
    >>> fig = trajectory_figure(train(make_data(n=64), config=TrainConfig(lr=0.1, steps=20)))
    >>> [ax.get_ylabel() for ax in fig.axes[:3]]
    ['curvature', 'loss', 'u . e_opposing']
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .linear import PHASES, PhaseDiagram, Trajectory, oscillation_window

__all__ = ["trajectory_figure", "antiphase_figure", "comparison_figure", "phase_diagram_figure"]

_PHASE_COLOURS = ("#4c9be8", "#f2a93b", "#d9534f")  # smooth, eos, diverges


def _figure(nrows: int, ncols: int = 1, size: tuple[float, float] = (8.0, 8.0), sharex: bool = True):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    return fig, axes


def _measured(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(values)
    return t[keep], values[keep]


def trajectory_figure(trajectory: Trajectory, title: str | None = None):
    """Three panels over the steps of one run.

    1. sharpness (top Hessian eigenvalue) and the curvature along the opposing feature, with ``2/lr``
       (for Adam also the preconditioned sharpness against its threshold);
    2. the losses of group A, group B and all examples (log scale);
    3. the weights ``u . e_o`` (opposing feature) and ``u . e_s`` (signal, right axis).

    Args:
        trajectory: from :func:`oppsig.toy.linear.train`.
        title: figure title (default: optimiser and step size).

    Returns:
        a :class:`matplotlib.figure.Figure`.
    """
    tr = trajectory
    t = tr.steps
    fig, axes = _figure(3)
    ax = axes[0, 0]
    ax.plot(*_measured(t, tr.sharpness), label="sharpness (top eigenvalue)", lw=1.2)
    ax.plot(*_measured(t, tr.opposing_curvature), label="curvature along the opposing feature", lw=1.0, ls=":")
    ax.axhline(2.0 / tr.config.lr, color="0.3", ls="-.", lw=1, label=f"2/lr = {2.0 / tr.config.lr:.3g}")
    ax.set_ylabel("curvature")
    handles = ax.get_lines()
    if tr.config.optimizer == "adam":  # on its own scale, right axis
        axp = ax.twinx()
        axp.plot(*_measured(t, tr.precond_sharpness), label="preconditioned sharpness (right)", lw=1.0, color="C2")
        axp.axhline(tr.threshold, color="C2", ls="--", lw=1, label=f"Adam threshold = {tr.threshold:.3g} (right)")
        axp.set_ylabel("preconditioned")
        handles = handles + axp.get_lines()
    ax.legend(handles, [h.get_label() for h in handles], loc="lower right", fontsize=8)
    ax = axes[1, 0]
    ax.semilogy(t, tr.loss_a, label="group A (feature, y=+1)", lw=1.0)
    ax.semilogy(t, tr.loss_b, label="group B (feature, y=-1)", lw=1.0)
    ax.semilogy(t, tr.loss, label="all examples", lw=1.2, color="k")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[2, 0]
    ax.plot(t, tr.u_opposing, label="weight on the opposing feature", color="C3", lw=1.0)
    ax.set_ylabel("u . e_opposing")
    ax.set_xlabel("step")
    ax2 = ax.twinx()
    ax2.plot(t, tr.u_signal, color="C2", lw=1.0, label="weight on the signal")
    ax2.set_ylabel("u . e_signal")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize=8)
    status = " (diverged)" if tr.diverged else ""
    fig.suptitle(title or f"{tr.config.optimizer.upper()}, lr = {tr.config.lr:.3g}{status}")
    return fig


def antiphase_figure(trajectory: Trajectory, length: int = 80, window: np.ndarray | None = None,
                     title: str | None = None):
    """The groups' losses and the opposing weight over ``length`` steps from the start of the oscillation.

    Args:
        trajectory: from :func:`oppsig.toy.linear.train`.
        length: number of steps shown.
        window: steps of the oscillation (default :func:`oppsig.toy.linear.oscillation_window`); when
            empty, the last ``length`` steps are shown.
        title: figure title.

    Returns:
        a :class:`matplotlib.figure.Figure` with two panels.
    """
    tr = trajectory
    w = oscillation_window(tr) if window is None else np.asarray(window)
    T = len(tr.loss)
    start = int(w[0]) if w.size else max(0, T - length)
    sl = slice(start, min(T, start + length))
    t = tr.steps[sl]
    fig, axes = _figure(2, size=(8.0, 5.0))
    ax = axes[0, 0]
    ax.plot(t, tr.loss_a[sl] - np.mean(tr.loss_a[sl]), marker=".", lw=0.8, label="group A (minus its mean)")
    ax.plot(t, tr.loss_b[sl] - np.mean(tr.loss_b[sl]), marker=".", lw=0.8, label="group B (minus its mean)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.plot(t, tr.u_opposing[sl], marker=".", lw=0.8, color="C3")
    ax.set_ylabel("u . e_opposing")
    ax.set_xlabel("step")
    fig.suptitle(title or ("groups' losses during the oscillation" if w.size else "groups' losses (no oscillation)"))
    return fig


def comparison_figure(trajectories: Mapping[str, Trajectory], title: str | None = None):
    """Runs side by side: sharpness over its threshold, and the gap between the groups' losses.

    Args:
        trajectories: label -> trajectory (e.g. ``{"alpha=4": ..., "alpha=0": ...}``).
        title: figure title.

    Returns:
        a :class:`matplotlib.figure.Figure` with two panels.
    """
    fig, axes = _figure(2, size=(8.0, 6.0))
    for label, tr in trajectories.items():
        t, s = _measured(tr.steps, tr.sharpness)
        axes[0, 0].plot(t, s * tr.config.lr / 2.0, lw=1.0, label=label)
        axes[1, 0].plot(tr.steps, tr.loss_a - tr.loss_b, lw=0.8, label=label)
    axes[0, 0].axhline(1.0, color="k", ls="--", lw=1)
    axes[0, 0].set_ylabel("sharpness / (2/lr)")
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].set_ylabel("loss A - loss B")
    axes[1, 0].set_xlabel("step")
    fig.suptitle(title or "sharpness and the groups' losses")
    return fig


def phase_diagram_figure(diagram: PhaseDiagram, title: str | None = None):
    """Observed phases over ``(alpha, lr)`` (colours), the predicted boundaries (lines) and mismatches (x).

    Args:
        diagram: from :func:`oppsig.toy.linear.phase_diagram`.
        title: figure title (default: the agreement).

    Returns:
        a :class:`matplotlib.figure.Figure`.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    pd = diagram
    fig, axes = _figure(1, size=(7.0, 5.0), sharex=False)
    ax = axes[0, 0]
    a, lr = pd.alphas, pd.lrs

    def edges(x: np.ndarray, log: bool) -> np.ndarray:
        z = np.log(x) if log else x
        if z.size == 1:
            e = np.array([z[0] - 0.5, z[0] + 0.5])
        else:
            mid = (z[1:] + z[:-1]) / 2
            e = np.concatenate([[z[0] - (mid[0] - z[0])], mid, [z[-1] + (z[-1] - mid[-1])]])
        return np.exp(e) if log else e

    cmap = ListedColormap(_PHASE_COLOURS)
    ax.pcolormesh(edges(a, False), edges(lr, True), pd.observed.T, cmap=cmap,
                  norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3), shading="flat")
    ax.set_yscale("log")
    fine = np.linspace(a.min(), a.max(), 200) if a.size > 1 else a
    s_fine = np.interp(fine, a, pd.s_balanced)
    with np.errstate(divide="ignore"):
        ax.plot(fine, 2.0 / s_fine, color="k", lw=1.5, label="predicted: lr = 2 / S_bal")
        ax.plot(fine, 4.0 / s_fine, color="k", lw=1.5, ls="--", label="predicted: lr = 4 / S_bal")
    miss = np.argwhere(pd.observed != pd.predicted)
    if miss.size:
        ax.scatter(a[miss[:, 0]], lr[miss[:, 1]], marker="x", color="k", s=25, label="prediction wrong")
    ax.set_ylim(edges(lr, True)[0], edges(lr, True)[-1])
    ax.set_xlabel("alpha (opposing feature magnitude)")
    ax.set_ylabel("lr")
    handles = [Patch(color=c, label=f"observed: {p}") for c, p in zip(_PHASE_COLOURS, PHASES)]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="upper right")
    ax.set_title(title or f"GD phases; prediction agrees on {100 * pd.agreement:.0f}% of cells")
    return fig
