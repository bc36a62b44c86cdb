"""Sharpness of a finished run at chosen steps, measured after the fact.

:func:`run_curvature` rebuilds the run's parameters at each asked step by
replaying training from the last kept checkpoint at or before it (full-batch GD
and oppsig's seeded mini-batch order are deterministic, so the replay is exact),
and measures the top-``k`` Hessian eigenvalues there over the run's training
data, with the optimiser's stability threshold at that step's learning rate.
Solves are warm-started from the previous step's eigenvectors, as during
training. ``oppsig sharpness RUN`` is its command line.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import OppsigError, StoreError
from ..curvature.batches import make_batches
from ..curvature.problem import make_hvp
from ..curvature.results import UNCONVERGED_MARK, warm_start
from ..curvature.spectrum import layer_eigs, top_hessian_eigs
from ..curvature.thresholds import optimizer_threshold

__all__ = ["StepCurvature", "run_curvature"]


ADAPTIVE = ("adam", "adamw")  # their threshold applies to the preconditioned sharpness


@dataclasses.dataclass(frozen=True)
class StepCurvature:
    """The curvature of a run's training loss at one step.

    Attributes:
        step: the step (parameters before that step's update).
        eigenvalues: the top-k Hessian eigenvalues, descending.
        error_bounds: the absolute error bound of each (see :func:`~oppsig.curvature.lanczos.lanczos`).
        converged: whether the solve met ``tol`` (False: it ran out of
            iterations and the values are not certified).
        threshold: the optimiser's stability threshold at this step's lr.
        preconditioned_threshold: True for Adam/AdamW, whose threshold applies to
            the preconditioned sharpness (not measured here): no ratio is given.
        hvps: Hessian-vector products spent (in full products).
        seconds: time of the measurement, replay excluded.
        layers: ``{module: (top eigenvalue of its diagonal block, error bound, converged)}`` (when asked).
        data_mismatch: None, or (measured with ``allow_other_data`` on data that are not the run's)
            what differs (:func:`~oppsig.store.fingerprint.check_fingerprint`).
    """

    step: int
    eigenvalues: tuple[float, ...]
    error_bounds: tuple[float, ...]
    converged: bool
    threshold: float
    hvps: float
    seconds: float
    preconditioned_threshold: bool = False
    layers: dict[str, tuple[float, float, bool]] = dataclasses.field(default_factory=dict)
    data_mismatch: dict | None = None

    @property
    def sharpness(self) -> float:
        """The top eigenvalue."""
        return self.eigenvalues[0]

    @property
    def error_bound(self) -> float:
        """The largest relative error bound of the eigenvalues."""
        return max(b / max(abs(v), 1e-30) for v, b in zip(self.eigenvalues, self.error_bounds))

    @property
    def ratio(self) -> float | None:
        """``sharpness / threshold``, None when the threshold is for the preconditioned sharpness."""
        return None if self.preconditioned_threshold else self.sharpness / self.threshold

    def to_dict(self) -> dict:
        """A JSON-ready dict (with ``error_bound``, the largest relative bound, and ``ratio``)."""
        d = dataclasses.asdict(self)
        d["eigenvalues"], d["error_bounds"] = list(self.eigenvalues), list(self.error_bounds)
        d["layers"] = {g: {"eigenvalue": v, "error_bound": e, "converged": c} for g, (v, e, c) in self.layers.items()}
        return {**d, "error_bound": self.error_bound, "ratio": self.ratio}

    def describe(self) -> str:
        """One line: the sharpness with its bound, marked when not converged, against the threshold."""
        mark = "" if self.converged else f" {UNCONVERGED_MARK}"
        if self.preconditioned_threshold:
            against = f"{OPTIM_NOTE}"
        else:
            against = f"threshold {self.threshold:.4g}, {self.ratio:.2f}x"
        other = "" if self.data_mismatch is None else ", on OTHER DATA than the run's"
        return f"sharpness {self.sharpness:.4g} +- {self.error_bounds[0]:.2g}{mark} ({against}{other})"


OPTIM_NOTE = "Adam's threshold applies to the preconditioned sharpness, not measured here"


def run_curvature(
    run_dir: str | Path,
    steps: Sequence[int] | None = None,
    *,
    k: int = 1,
    tol: float = 1e-3,
    n: int | None = None,
    layerwise: bool = False,
    max_iter: int | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[StepCurvature], None] | None = None,
    allow_other_data: bool = False,
) -> list[StepCurvature]:
    """Top Hessian eigenvalues of a recorded run at ``steps``.

    Args:
        run_dir: a run directory written by ``oppsig train``.
        steps: the steps to measure (default: every kept checkpoint).
        k: eigenvalues per step.
        tol: relative accuracy of each eigenvalue (Lanczos' eigenvalue rule);
            a solve that cannot reach it within its iterations is returned with
            ``converged=False`` and its residual bounds.
        n: use the first ``n`` training examples (default: the run's
            ``curvature.n``, else all of them).
        layerwise: also the top eigenvalue of each module's diagonal block.
        max_iter: most products per solve (default: the run's
            ``curvature.max_iter``, at least 60).
        device: replay and measure there (default: the device the run was
            trained on; another one warns that the replay is not bit-exact).
        log: a function taking a progress line per step (e.g. ``print``), or None.
        on_step: a function called with each step's :class:`StepCurvature` as soon as it is measured
            (e.g. to print a table row by row), or None.
        allow_other_data: go on when the rebuilt data are not those the run trained on (its data fingerprint);
            each result then says so (``data_mismatch``).

    Returns:
        one :class:`StepCurvature` per step, in increasing step order.

    Raises:
        StoreError: when the run was not trained by oppsig, kept no checkpoint
            at or before a step, or a step lies outside the run.
        OppsigError: for ``k < 1`` or ``tol <= 0``.
        DataMismatchError: when the rebuilt data differ from the run's and ``allow_other_data`` is False.

    Example (skipped as a doctest: it needs a trained run of ``configs/fc-tanh-mse-gd-cifar5k.yaml``):
        >>> res = run_curvature("runs/fc-tanh-mse-gd-cifar5k", [200, 1000], k=2)  # doctest: +SKIP
        >>> [(r.step, round(r.sharpness, 1), r.threshold) for r in res]  # doctest: +SKIP
        [(200, 68.8, 100.0), (1000, 102.5, 100.0)]
    """
    from ..data import build_datasets
    from ..losses import get_loss
    from ..training.replay import model_at
    from ..store import open_run
    from ..store.fingerprint import check_run_data, mismatch_text
    from ..training.checkpoint import list_checkpoints
    from ..optim import lr_at

    if k < 1 or not tol > 0 or (max_iter is not None and max_iter < k):
        raise OppsigError(f"need k >= 1, tol > 0 and max_iter >= k (got k={k}, tol={tol}, max_iter={max_iter})")
    run = open_run(run_dir)
    cfg = run.config
    if not hasattr(cfg, "data"):
        raise StoreError(f"{run_dir} was not trained by oppsig train; cannot rebuild its model")
    kept = sorted(list_checkpoints(run.path))
    last = int(run.meta.get("next_step") or run.config_at(2**62).train.steps)
    wanted = sorted({int(s) for s in steps}) if steps is not None else kept
    if not wanted:
        raise StoreError(f"{run_dir} kept no checkpoint; pass --steps (replayed from step 0 only if it was kept)")
    for s in wanted:
        if not 0 <= s <= last:
            raise StoreError(f"step {s} lies outside the run (steps 0..{last}); pass steps in that range")
    data = build_datasets(cfg.data, seed=cfg.seed)
    mismatch = check_run_data(run, data[0], allow_other_data)
    loss_fn = get_loss(cfg.train.loss)
    say = log or (lambda *_: None)
    if mismatch is not None:
        say(f"warning: {mismatch_text(mismatch)}")
    out: list[StepCurvature] = []
    vecs = None
    layer_vecs: dict[str, torch.Tensor] = {}
    max_iter = int(max_iter) if max_iter is not None else max(cfg.curvature.max_iter, 60)
    for s in wanted:
        model, train_set = model_at(run, s, data, device=device)
        m = min(n or cfg.curvature.n or len(train_set), len(train_set))
        t0 = time.perf_counter()
        batches = make_batches(train_set.x, train_set.y, cfg.train.physical_batch_size, m)
        hvp = make_hvp(model, batches, loss_fn, method=cfg.curvature.hvp)
        warm = vecs is not None and vecs.shape[0] == hvp.layout.dim
        res = top_hessian_eigs(hvp, k=min(k, hvp.layout.dim), tol=tol, max_iter=max_iter,
                               v0=vecs if warm else None, seed=cfg.seed + s)
        vecs = warm_start(res)
        hvps = res.work
        layers = {}
        hvp.release()  # each layer's block builds its own graph
        if layerwise:
            for g, r in layer_eigs(hvp, tol=tol, max_iter=max_iter, v0=layer_vecs, seed=cfg.seed + s,
                                   criterion="eigenvalue").items():
                layer_vecs[g] = warm_start(r)
                layers[g] = (float(r.eigenvalues[0]), float(r.error_bounds[0]), bool(r.converged))
                hvps += r.num_matvecs
        o = run.config_at(s).optim  # the lr in force at this step (a resume may have changed it)
        thr = optimizer_threshold(o.name, lr_at(o, s), momentum=o.momentum, dampening=o.dampening,
                                  nesterov=o.nesterov, betas=o.betas)
        sc = StepCurvature(step=s, eigenvalues=tuple(float(x) for x in res.eigenvalues),
                           error_bounds=tuple(float(x) for x in res.error_bounds), converged=bool(res.converged),
                           threshold=thr, hvps=float(hvps), seconds=time.perf_counter() - t0,
                           preconditioned_threshold=o.name in ADAPTIVE, layers=layers, data_mismatch=mismatch)
        out.append(sc)
        if on_step is not None:
            on_step(sc)
        say(f"step {s}: {sc.describe()}, {hvps:.1f} HVPs, {sc.seconds:.1f} s")
    return out
