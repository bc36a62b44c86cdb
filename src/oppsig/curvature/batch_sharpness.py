"""The curvature a mini-batch run feels: batch sharpness and the top eigenvalues of mini-batch Hessians.

Under SGD the step is taken on the loss ``L_B`` of a mini-batch ``B``, whose
gradient ``g_B`` and Hessian ``H_B`` differ from the full-batch ones. Two
measures of that curvature, each a mean over sampled mini-batches with its
standard error over them:

- :func:`batch_sharpness`: the *batch sharpness* of Andreyev & Beneventano,
  "Edge of Stochastic Stability" (arXiv 2412.20553),
  ``E_B[ g_B^T H_B g_B / |g_B|^2 ]``: the curvature of each mini-batch's loss
  along its own gradient. They report that under SGD this, not the full-batch
  top eigenvalue, settles at the stability threshold. Exact per batch (one
  gradient and one Hessian-vector product); the only error is the sampling
  one.
- :func:`batch_top_eigenvalue`: ``E_B[ lambda_max(H_B) ]``, each by
  :func:`~oppsig.curvature.lanczos.lanczos` (a random start block per batch)
  with its certified error bound; the mean's bound is the mean of the bounds.
- :func:`batch_curvature`: both on the same batches, sharing each batch's
  graph; :func:`sample_batches` draws the batches (seeded);
  :class:`BatchSharpnessHook` measures both every ``k`` steps of a run.

Per batch, ``g^T H g / |g|^2 <= lambda_max(H_B)`` (a Rayleigh quotient). The
batch loss is the mean of the per-example losses of its rows (as the step's);
BatchNorm layers use the batch's statistics (``batchnorm="batch"`` of
:func:`~oppsig.curvature.problem.make_hvp`). The model is only called
functionally: no ``.grad``, mode or buffer changes.

Example:
    >>> import torch
    >>> from oppsig.models import build_model
    >>> from oppsig.losses import get_loss
    >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
    >>> x, y = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
    >>> b = sample_batches(x, y, batch_size=8, num_batches=4, seed=0)
    >>> c = batch_curvature(m, b, get_loss("ce"), tol=1e-8)
    >>> c.sharpness.value <= c.top_eigenvalue.value + c.top_eigenvalue.bound, c.top_eigenvalue.converged
    (True, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..distributed import exact_math
from ..errors import ConfigError, OppsigError
from .engine import HVP
from .hvp import LossFn
from .lanczos import lanczos
from .model_operators import HessianOperator
from .problem import make_hvp

__all__ = ["BatchEstimate", "BatchCurvature", "sample_batches", "batch_sharpness", "batch_top_eigenvalue",
           "batch_curvature", "estimate_metrics", "BatchSharpnessHook"]


@dataclass(frozen=True)
class BatchEstimate:
    """A mean over sampled mini-batches.

    Attributes:
        value: the mean over the batches.
        stderr: its standard error over them, ``std(ddof=1) / sqrt(m)`` (NaN for one batch).
        per_batch: the ``m`` values, in batch order.
        bound: certified bound of the mean's numerical error (the mean of the per-batch eigensolver bounds;
            0.0 for the batch sharpness, exact up to rounding). The sampling error is ``stderr``.
        converged: whether every per-batch solve met its tolerance (always True for the batch sharpness).
        hvps: Hessian-vector products spent.
    """

    value: float
    stderr: float
    per_batch: tuple[float, ...]
    bound: float = 0.0
    converged: bool = True
    hvps: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float], bounds: Sequence[float] = (), converged: bool = True,
           hvps: float = 0.0) -> "BatchEstimate":
        """The mean of ``values`` with its standard error (and the mean of ``bounds``)."""
        v = torch.tensor(list(values), dtype=torch.float64)
        se = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
        bound = float(torch.tensor(list(bounds), dtype=torch.float64).mean()) if len(bounds) else 0.0
        return cls(float(v.mean()), se, tuple(float(a) for a in v), bound, bool(converged), float(hvps))


@dataclass(frozen=True)
class BatchCurvature:
    """:func:`batch_curvature`'s result: the batch sharpness and the mean top batch-Hessian eigenvalue (or None)."""

    sharpness: BatchEstimate
    top_eigenvalue: BatchEstimate | None


def sample_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, num_batches: int,
                   seed: int | torch.Generator = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num_batches`` mini-batches of ``batch_size`` rows of ``(x, y)``, each drawn without replacement.

    The batches are independent draws (a seeded permutation each, on the CPU), so they are samples of the
    uniform distribution over mini-batches that the batch sharpness is an expectation over; the same seed gives
    the same batches.

    Args:
        x: inputs ``(N, ...)``; y: targets ``(N,)`` (or ``(N, T)``).
        batch_size: rows per batch, ``1 <= batch_size <= N``.
        num_batches: how many batches, ``>= 1``.
        seed: an int or a :class:`torch.Generator` (CPU).

    Raises:
        ConfigError: for a batch size outside ``1..N``, ``num_batches < 1``, or ``x`` and ``y`` of different lengths.

    Example:
        >>> b = sample_batches(torch.arange(10.0)[:, None], torch.arange(10), batch_size=4, num_batches=3, seed=0)
        >>> [tuple(xb.shape) for xb, _ in b]
        [(4, 1), (4, 1), (4, 1)]
    """
    n = int(x.shape[0])
    if int(y.shape[0]) != n:
        raise ConfigError(f"x has {n} rows but y has {int(y.shape[0])}; pass matching inputs and targets")
    if not 1 <= int(batch_size) <= n:
        raise ConfigError(f"batch_size {batch_size} must lie in 1..{n} (the number of examples); pass a smaller one")
    if int(num_batches) < 1:
        raise ConfigError(f"num_batches must be >= 1 (got {num_batches}); pass how many mini-batches to average over")
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(int(num_batches)):
        rows = torch.randperm(n, generator=g)[: int(batch_size)].to(x.device)
        out.append((x.index_select(0, rows), y.index_select(0, rows.to(y.device))))
    return out


def _checked(batches) -> list:
    batches = list(batches)
    if not batches:
        raise ConfigError("no mini-batches given; pass at least one (x, y) pair, e.g. sample_batches(x, y, 128, 8)")
    for i, b in enumerate(batches):
        if not isinstance(b, (tuple, list)) or len(b) not in (2, 3):
            raise ConfigError(f"mini-batch {i} is not an (x, y) or (index, x, y) tuple; pass a list of them")
        if int(b[-2].shape[0]) == 0:
            raise ConfigError(f"mini-batch {i} has no rows; pass batches of at least one example")
    return batches


def _rayleigh(hvp: HVP, i: int) -> float:
    """``g^T H g / |g|^2`` of one batch's problem (from its cached graph when there is one)."""
    _, grad = hvp.loss_and_gradient()
    g = hvp.layout.flatten(grad)
    gg = float(g.double() @ g.double())
    if not gg > 0:
        raise OppsigError(f"mini-batch {i} has a zero gradient, so g^T H g / |g|^2 is undefined there; "
                          "leave that batch out or measure at another point")
    return float(g.double() @ hvp.matvec(g).double()) / gg


def batch_curvature(model: nn.Module, batches, loss_fn: LossFn, *, eigen: bool = True, tol: float = 1e-3,
                    max_iter: int = 100, seed: int = 0, criterion: str = "eigenvalue", method: str = "auto",
                    dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                    batchnorm: str = "batch") -> BatchCurvature:
    """The batch sharpness and (with ``eigen``) the mean top batch-Hessian eigenvalue over ``batches``.

    Each batch is one problem (:func:`~oppsig.curvature.problem.make_hvp` of that batch alone, its loss the mean
    over its rows); its top eigenvalue is solved first, so the gradient and ``H g`` reuse the graph built there.

    Args:
        model: the network (called functionally, never modified).
        batches: a non-empty sequence of ``(x, y)`` or ``(index, x, y)`` mini-batches, e.g. :func:`sample_batches`.
        loss_fn: per-example loss ``(B, C), (B,) -> (B,)``.
        eigen: also solve each batch's top eigenvalue (about 10-30 products per batch, the sharpness one gradient
            and one product).
        tol, max_iter, seed, criterion: of :func:`~oppsig.curvature.lanczos.lanczos` (batch ``i`` uses ``seed + i``).
        method, dtype, device, batchnorm: of :func:`~oppsig.curvature.problem.make_hvp`.

    Returns:
        a :class:`BatchCurvature`.

    Raises:
        ConfigError: for no batches, a malformed or empty batch, or an unknown method.
        OppsigError: for a batch whose gradient is zero.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
        >>> b = sample_batches(torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 3, (20,)), 5, 3)
        >>> len(batch_curvature(m, b, get_loss("mse"), eigen=False).sharpness.per_batch)
        3
    """
    batches = _checked(batches)
    ratios, tops, bounds, ok, hvps, eig_hvps = [], [], [], True, 0, 0
    for i, b in enumerate(batches):
        hvp = make_hvp(model, [b], loss_fn, method=method, dtype=dtype, device=device, batchnorm=batchnorm)
        if eigen:
            r = lanczos(HessianOperator(hvp), k=1, tol=tol, max_iter=max_iter, seed=seed + i, criterion=criterion)
            tops.append(r.top)
            bounds.append(float((r.error_bounds if r.error_bounds is not None else r.residuals)[0]))
            ok = ok and r.converged
            eig_hvps += r.num_matvecs
        before = hvp.num_hvps
        ratios.append(_rayleigh(hvp, i))
        hvps += hvp.num_hvps - before
        hvp.release()
    top = BatchEstimate.of(tops, bounds, ok, eig_hvps) if eigen else None
    return BatchCurvature(BatchEstimate.of(ratios, hvps=hvps), top)


def batch_sharpness(model: nn.Module, batches, loss_fn: LossFn, **kw) -> BatchEstimate:
    """The batch sharpness ``mean over batches of g_B^T H_B g_B / |g_B|^2`` (arXiv 2412.20553), with its stderr.

    Arguments and errors as :func:`batch_curvature` (``method``, ``dtype``, ``device``, ``batchnorm``).

    Example:
        >>> from oppsig.losses import get_loss
        >>> lin = torch.nn.Linear(3, 2).double()
        >>> b = sample_batches(torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 2, (30,)), 10, 2)
        >>> batch_sharpness(lin, b, get_loss("ce")).value > 0
        True
    """
    return batch_curvature(model, batches, loss_fn, eigen=False, **kw).sharpness


def batch_top_eigenvalue(model: nn.Module, batches, loss_fn: LossFn, **kw) -> BatchEstimate:
    """The mean over batches of ``lambda_max(H_B)``, each solved by Lanczos with its bound, with the stderr.

    Arguments and errors as :func:`batch_curvature`; ``bound`` is the mean of the per-batch bounds and
    ``converged`` whether every solve converged.

    Example:
        >>> from oppsig.losses import get_loss
        >>> lin = torch.nn.Linear(3, 2).double()
        >>> b = sample_batches(torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 2, (30,)), 10, 2)
        >>> batch_top_eigenvalue(lin, b, get_loss("ce"), tol=1e-8).converged
        True
    """
    return batch_curvature(model, batches, loss_fn, eigen=True, **kw).top_eigenvalue


def estimate_metrics(key: str, est: BatchEstimate, certified: bool = False) -> dict[str, float]:
    """``{key, se/key}`` and, for an eigensolver's estimate (``certified``), ``err/key`` and ``converged/key``.

    Example:
        >>> sorted(estimate_metrics("batch_eig", BatchEstimate.of([1.0, 2.0], [0.1, 0.1]), certified=True))
        ['batch_eig', 'converged/batch_eig', 'err/batch_eig', 'se/batch_eig']
    """
    out = {key: est.value, f"se/{key}": est.stderr}
    if certified:
        out.update({f"err/{key}": est.bound, f"converged/{key}": 1.0 if est.converged else 0.0})
    return out


class BatchSharpnessHook:
    """Training hook: every ``every`` steps, the batch sharpness and the mean top batch-Hessian eigenvalue.

    At ``on_step_start`` of a due step (parameters theta_t) it draws ``num_batches`` mini-batches of the run's
    batch size (``train.batch_size``, or ``batch_size``) from the training set with a generator seeded by
    ``seed`` (default: the run's seed) plus the step, so a resumed run measures the same batches, and measures
    both (:func:`batch_curvature`); at ``on_step_end`` it adds to the step's metrics:

    - ``batch_sharpness``, ``se/batch_sharpness``: the batch sharpness and its standard error over the batches;
    - ``batch_eig``, ``se/batch_eig``, ``err/batch_eig``, ``converged/batch_eig``: the mean top eigenvalue of the
      batch Hessians, its standard error, the mean of the eigensolver bounds, and whether every solve converged
      (with ``eigen=True``);
    - ``batch_hvps``, ``batch_time``: products and seconds spent.

    The full-batch ``sharpness`` and its ``threshold`` come from
    :class:`~oppsig.curvature.hook.CurvatureHook` (``curvature.every``): give both hooks the same ``every`` to have
    all of them in the same rows. Under torch.distributed every rank measures the same batches. Example weights
    of the run are not applied (each batch loss is the plain mean over its rows).

    Example:
        >>> hook = BatchSharpnessHook(every=50, num_batches=8)
        >>> hook.is_due(100), hook.is_due(101)
        (True, False)
    """

    name = "batch_sharpness"

    def __init__(self, every: int, num_batches: int = 8, *, batch_size: int | None = None, eigen: bool = True,
                 tol: float = 1e-3, max_iter: int = 100, seed: int | None = None, method: str = "auto"):
        if int(every) < 0 or int(num_batches) < 1:
            raise ConfigError(f"BatchSharpnessHook needs every >= 0 and num_batches >= 1 (got {every}, {num_batches})")
        self.every, self.num_batches, self.batch_size = int(every), int(num_batches), batch_size
        self.eigen, self.tol, self.max_iter, self.seed, self.method = eigen, tol, max_iter, seed, method
        self._pending: dict[str, Any] | None = None

    def is_due(self, step: int) -> bool:
        """Whether a measurement is taken at ``step``."""
        return self.every > 0 and step % self.every == 0

    def on_step_start(self, state) -> None:
        if not self.is_due(state.step):
            return
        t0 = time.perf_counter()
        data = state.train_data
        bs = min(int(self.batch_size or state.config.train.batch_size), len(data))
        seed = int(self.seed if self.seed is not None else getattr(state.config, "seed", 0)) + int(state.step)
        batches = sample_batches(data.x, data.y, bs, self.num_batches, seed)
        with exact_math():  # no TF32 / bf16 in curvature measurements
            c = batch_curvature(state.model, batches, state.loss_fn, eigen=self.eigen, tol=self.tol,
                                max_iter=self.max_iter, seed=seed, method=self.method, device=state.device)
        metrics = estimate_metrics("batch_sharpness", c.sharpness)
        hvps = c.sharpness.hvps
        if c.top_eigenvalue is not None:
            metrics.update(estimate_metrics("batch_eig", c.top_eigenvalue, certified=True))
            hvps += c.top_eigenvalue.hvps
        metrics["batch_hvps"] = float(hvps)
        metrics["batch_time"] = time.perf_counter() - t0
        self._pending = {"step": int(state.step), "metrics": metrics}

    def on_step_end(self, state) -> None:
        p = self._pending
        if p is None or p["step"] != state.step:
            return
        self._pending = None
        state.metrics.update(p["metrics"])
