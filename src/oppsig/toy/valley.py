"""The narrow valley: gradient descent bounces across it, Adam runs along its floor.

The loss is a 2-D valley

    f(x, y) = 0.5 * b * x**2 + 0.5 * a * (y - c * x**2)**2,    a >> b,

whose floor is the curve ``y = c * x**2`` (a straight line for ``c = 0``, the
default: then ``f`` is the ill-conditioned quadratic
``0.5 * (b * x**2 + a * y**2)``). ``x`` runs along the valley, with curvature
``b``; ``u = y - c * x**2`` measures the distance across it, with curvature
``a``. This is the geometry the paper (arXiv 2311.04163) describes for opposing
signals: a sharp direction that balances two groups, and a flat one along which
training makes progress.

With a step size ``lr`` where ``1 < lr * a < 2``, gradient descent is stable
but overshoots the floor every step: ``u`` flips sign and shrinks only by
``|1 - lr * a|`` per step, while ``x`` creeps by the factor ``1 - lr * b``.
Adam at the same ``lr`` divides each coordinate's step by the running RMS of
its gradient: the large early gradients across the valley keep that RMS high,
so the steps across shrink as the floor nears and the path settles onto it;
along the valley the small gradient is normalised up to steps of about ``lr``.
(With ``c != 0`` the floor is not axis-aligned and per-coordinate
normalisation helps less.)

Functions:

- :func:`valley_trajectories`: run torch optimisers for ``steps`` steps from one
  start point and return the iterates;
- :func:`valley_figure`: the trajectories over the loss contours (a
  :class:`matplotlib.figure.Figure`; no file I/O, no pyplot state);
- :func:`valley_summary`: the numbers behind the picture (cross-valley
  oscillation, along-valley progress, ...).

Example:
    >>> traj = valley_trajectories(optimizers=("gd", "adam"), steps=60)
    >>> s = valley_summary(traj)
    >>> s["gd"]["cross_oscillation"] > 10 * s["adam"]["cross_oscillation"]
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..optim.signsgd import SignSGD
from ..optim.splitsgd import SplitSGD

_BLOWUP = 1e12  # a run whose loss exceeds this times max(f(start), 1) has diverged
OptimizerFactory = Callable[[list, float], torch.optim.Optimizer]


@dataclass(frozen=True)
class Valley:
    """``f(x, y) = 0.5 * b * x**2 + 0.5 * a * (y - c * x**2)**2``: ``a`` across, ``b`` along, ``c`` the bend.

    Raises:
        ValueError: ``a`` or ``b`` not positive, or a non-finite ``c``.
    """

    a: float = 100.0
    b: float = 0.1
    c: float = 0.0

    def __post_init__(self) -> None:
        for name in ("a", "b"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"Valley: {name} must be a finite number > 0 (got {v!r})")
        if not math.isfinite(self.c):
            raise ValueError(f"Valley: c must be finite (got {self.c!r})")

    def loss(self, xy):
        """``f`` at ``xy[..., 0], xy[..., 1]`` (a torch tensor or a numpy array)."""
        x, y = xy[..., 0], xy[..., 1]
        return 0.5 * self.b * x**2 + 0.5 * self.a * (y - self.c * x**2) ** 2

    def across(self, xy: np.ndarray) -> np.ndarray:
        """Signed distance across the valley, ``u = y - c * x**2``."""
        return xy[..., 1] - self.c * xy[..., 0] ** 2


def default_optimizers() -> dict[str, OptimizerFactory]:
    """Factories ``(params, lr) -> optimiser`` of the named optimisers :func:`valley_trajectories` knows.

    ``gd``: :class:`torch.optim.SGD`; ``momentum``: SGD with momentum 0.9;
    ``adam``: :class:`torch.optim.Adam` (default betas); ``splitsgd``:
    :class:`~oppsig.optim.splitsgd.SplitSGD` with momentum = dampening = 0.9 and
    the ``tensor`` split at threshold 1 (the coordinate whose gradient exceeds
    the RMS over both coordinates takes the normalised step, with
    ``split_lr = lr``); ``signsgd``: :class:`~oppsig.optim.signsgd.SignSGD`.
    """
    return {
        "gd": lambda params, lr: torch.optim.SGD(params, lr=lr),
        "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
        "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
        "splitsgd": lambda params, lr: SplitSGD(params, lr=lr, momentum=0.9, dampening=0.9, threshold=1.0,
                                                split="tensor"),
        "signsgd": lambda params, lr: SignSGD(params, lr=lr),
    }


def valley_trajectories(
    valley: Valley | None = None,
    optimizers: Sequence[str] | Mapping[str, OptimizerFactory] = ("gd", "adam", "splitsgd"),
    lr: float = 0.019,
    steps: int = 100,
    start: tuple[float, float] = (2.0, 1.0),
) -> dict[str, np.ndarray]:
    """Run each optimiser for ``steps`` steps from ``start`` on ``valley`` (float64).

    Every optimiser gets the same ``lr``; its parameter is one tensor ``(x, y)``
    and each step is ``opt.step(closure)`` (so closure-based optimisers such as
    :class:`~oppsig.optim.sam.SAM` work too). A run that leaves the finite
    numbers, or whose loss exceeds ``1e12`` times ``max(f(start), 1)``, is
    diverging: it stops at the last point before that; its remaining rows are
    ``nan``.

    Args:
        valley: the loss (default :class:`Valley()`).
        optimizers: names from :func:`default_optimizers`, or a mapping name -> ``factory(params, lr)``.
        lr: the learning rate of every optimiser, ``> 0``.
        steps: number of updates, ``>= 1``.
        start: the start point ``(x, y)``.

    Returns:
        name -> array ``(steps + 1, 2)`` of iterates, row 0 the start.

    Raises:
        ValueError: unknown optimiser name, ``lr <= 0``, ``steps < 1`` or a non-finite start.
    """
    valley = Valley() if valley is None else valley
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"valley_trajectories: lr must be a finite number > 0 (got {lr!r})")
    if steps < 1:
        raise ValueError(f"valley_trajectories: steps must be >= 1 (got {steps!r})")
    if len(start) != 2 or not all(math.isfinite(v) for v in start):
        raise ValueError(f"valley_trajectories: start must be two finite numbers (got {start!r})")
    if isinstance(optimizers, Mapping):
        factories = dict(optimizers)
    else:
        known = default_optimizers()
        unknown = [n for n in optimizers if n not in known]
        if unknown:
            raise ValueError(f"valley_trajectories: unknown optimizer {unknown[0]!r}; known: {', '.join(known)}")
        factories = {n: known[n] for n in optimizers}
    blowup = _BLOWUP * max(float(valley.loss(np.asarray(start, dtype=np.float64))), 1.0)
    out = {}
    for name, make in factories.items():
        w = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
        opt = make([w], lr)

        def closure(w=w, opt=opt):
            opt.zero_grad()
            loss = valley.loss(w)
            loss.backward()
            return loss

        traj = np.full((steps + 1, 2), np.nan)
        traj[0] = start
        for t in range(1, steps + 1):
            opt.step(closure)
            p = w.detach().numpy().copy()
            with np.errstate(all="ignore"):
                if not (np.all(np.isfinite(p)) and valley.loss(p) <= blowup):
                    break
            traj[t] = p
        out[name] = traj
    return out


def valley_summary(trajectories: Mapping[str, np.ndarray], valley: Valley | None = None) -> dict[str, dict[str, float]]:
    """Numbers of each trajectory: how much it bounces across the valley and how far it gets along it.

    With ``u_t`` the distance across (:meth:`Valley.across`) and ``x_t`` the
    position along, over the finite rows ``t = 0..N``:

    - ``cross_oscillation``: ``(sum_t |u_{t+1} - u_t| - |u_N - u_0|) / 2``, the
      cross-valley travel beyond the net displacement, halved: 0 for a path that
      approaches the floor without turning back, the sum of the overshoots for
      one that bounces;
    - ``cross_reversals``: how many times the cross-valley motion turns back;
    - ``cross_amplitude_late``: ``max |u_t|`` over the second half of the run;
    - ``along_progress``: ``1 - |x_N| / |x_0|``, the fraction of the way along
      the valley to the minimum (1: arrived; negative: moved away);
    - ``final_loss``: ``f`` at the last finite point;
    - ``diverged``: 1.0 when the run left the finite numbers, else 0.0.

    Raises:
        ValueError: a trajectory that is not an ``(N, 2)`` array with a finite first row.
    """
    valley = Valley() if valley is None else valley
    out = {}
    for name, traj in trajectories.items():
        traj = np.asarray(traj, dtype=np.float64)
        if traj.ndim != 2 or traj.shape[1] != 2 or traj.shape[0] < 1 or not np.all(np.isfinite(traj[0])):
            raise ValueError(f"valley_summary: trajectory {name!r} must be an (N, 2) array with a finite first row")
        finite = np.all(np.isfinite(traj), axis=1)
        n = int(np.argmin(finite)) if not finite.all() else len(traj)
        tr = traj[:n]
        u, x = valley.across(tr), tr[:, 0]
        du = np.diff(u)
        moving = du[du != 0]
        out[name] = {
            "cross_oscillation": float((np.abs(du).sum() - abs(u[-1] - u[0])) / 2),
            "cross_reversals": float(np.count_nonzero(np.sign(moving[1:]) != np.sign(moving[:-1]))),
            "cross_amplitude_late": float(np.abs(u[n // 2:]).max()),
            "along_progress": float(1 - abs(x[-1]) / abs(x[0])) if x[0] != 0 else math.nan,
            "final_loss": float(valley.loss(tr[-1])),
            "diverged": float(n < len(traj)),
        }
    return out


_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:gray")


def valley_figure(trajectories: Mapping[str, np.ndarray], valley: Valley | None = None, ax=None,
                  levels: int = 14, title: str | None = None):
    """The trajectories drawn over the contours of the valley's loss.

    Args:
        trajectories: name -> ``(N, 2)`` iterates (e.g. from :func:`valley_trajectories`).
        valley: the loss whose contours are drawn (default :class:`Valley()`).
        ax: draw into this :class:`matplotlib.axes.Axes` (default: a new figure).
        levels: number of log-spaced contour levels.
        title: the axes title (default: names the valley's parameters).

    Returns:
        the :class:`matplotlib.figure.Figure` (``ax.figure`` when ``ax`` is given).
        Nothing is written to disk and pyplot's global state is not touched.

    Raises:
        ValueError: no trajectory with a finite point.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    valley = Valley() if valley is None else valley
    pts = [np.asarray(t, dtype=np.float64) for t in trajectories.values()]
    pts = np.concatenate([t[np.all(np.isfinite(t), axis=1)] for t in pts]) if pts else np.empty((0, 2))
    if len(pts) == 0:
        raise ValueError("valley_figure: no trajectory with a finite point to draw")
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-3)
    lo, hi = lo - 0.15 * span, hi + 0.15 * span
    # the valley floor x = 0 .. min always in view
    lo[0], hi[0] = min(lo[0], -0.1 * span[0]), max(hi[0], 0.1 * span[0])

    if ax is None:
        fig = Figure(figsize=(7.0, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    f = valley.loss(np.stack([gx, gy], -1))
    fmin = max(float(f.min()), 1e-6 * float(f.max()), 1e-12)
    lv = np.geomspace(fmin, float(f.max()), levels)
    ax.contour(gx, gy, np.maximum(f, fmin), levels=lv, norm=LogNorm(), cmap="viridis", linewidths=0.8, alpha=0.7)
    xs = np.linspace(lo[0], hi[0], 200)
    ax.plot(xs, valley.c * xs**2, ls="--", lw=0.8, color="0.4", label="valley floor")
    for i, (name, traj) in enumerate(trajectories.items()):
        traj = np.asarray(traj, dtype=np.float64)
        traj = traj[np.all(np.isfinite(traj), axis=1)]
        colour = _COLOURS[i % len(_COLOURS)]
        ax.plot(traj[:, 0], traj[:, 1], "-o", color=colour, ms=2.2, lw=0.9, label=name)
        ax.plot(traj[-1:, 0], traj[-1:, 1], "s", color=colour, ms=5)
    first = next(iter(trajectories.values()))
    ax.plot([first[0][0]], [first[0][1]], "k*", ms=10, label="start")
    ax.plot([0.0], [0.0], "kx", ms=8)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("x (along the valley)")
    ax.set_ylabel("y (across the valley)")
    if title is None:
        across = "y²" if valley.c == 0 else f"(y - {valley.c:g} x²)²"
        title = f"narrow valley f = {valley.b:g}/2 x² + {valley.a:g}/2 {across}"
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return fig


__all__ = ["Valley", "default_optimizers", "valley_trajectories", "valley_summary", "valley_figure"]
