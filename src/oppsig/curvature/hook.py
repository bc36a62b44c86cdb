"""Sharpness tracking during training, as a training-loop hook.

Every ``cfg.every`` steps (``cfg.schedule: fixed``), or at the steps the adaptive schedule of
:mod:`oppsig.curvature.schedule` chooses (``cfg.schedule: adaptive``: every ``cfg.min_every`` steps near the
optimiser's threshold, up to ``cfg.max_every`` apart when nothing changes), :class:`CurvatureHook` measures at
``on_step_start``
the top-``k`` Hessian eigenvalues of the mean loss at theta_t over the first
``cfg.n`` training examples, to ``cfg.tol`` by ``cfg.criterion``,
warm-started from the eigenvectors of the previous measurement (a few
Hessian-vector products when the eigenvectors moved little; the first
measurement starts from a ``cfg.presample`` fraction of the examples, see
:func:`~oppsig.curvature.spectrum.top_hessian_eigs`), and at ``on_step_end``
of the same step adds its metrics. A warm start explores little beyond the
previous eigenvectors, so an eigenvalue rising in a new direction could stay
unseen; every ``cfg.cold_every``-th measurement therefore starts cold (about
eight products with the presample on fc-tanh / 5k CIFAR-10, against two for a
warm one; under the adaptive schedule the first measurement ``cfg.cold_every * cfg.every`` steps or more
after the last cold one; under plain GD it keeps a copy of theta_t during each step, to hand the schedule the
step's length). Only measured steps carry these metrics:

- ``sharpness`` (top eigenvalue), ``sharpness_2`` ... ``sharpness_k``;
- ``threshold``: the optimiser's stability threshold at this step's lr
  (``2/lr`` for GD; momentum and Adam variants, see
  :func:`~oppsig.curvature.thresholds.stability`), written only beside the
  sharpness it is for: for Adam/AdamW beside ``precond_sharpness``
  (``cfg.preconditioned``), never for SAM or sign-SGD, which have none;
- ``eig_residual``: largest relative residual ``||Hv - lambda v|| / |lambda|`` of the top-k;
- ``eig_error``: largest relative error bound of the top-k eigenvalues;
- for every eigenvalue stored under a key ``K`` (``sharpness``, ``sharpness_2``,
  ``precond_sharpness``, ``layer/<module>``): ``err/K``, its error bound
  (absolute, see :func:`~oppsig.curvature.lanczos.lanczos`), and
  ``converged/K``, 1.0 when its solve met ``cfg.tol`` and 0.0 when it ran out of
  ``cfg.max_iter`` (the value is then not certified; reports mark it);
- ``hvps``: Hessian-vector products spent at this step (all solves; a
  presample's products count by their share of the rows);
- ``update_proj``: ``<theta_{t+1} - theta_t, u>`` for the unit top eigenvector u at theta_t;
- ``layer/<module>``: top eigenvalue of each module's diagonal block (``cfg.layerwise``);
- ``layer_share/<module>``: the share of the unit top eigenvector in each module's parameters,
  ``||u_module||^2`` (they sum to 1; every measurement, at no extra product), the paper's layer-wise view of
  where the sharpest direction lives (see :func:`layer_shares`);
- ``precond_sharpness``: top eigenvalue of ``P^{-1/2} H P^{-1/2}`` with Adam's
  preconditioner (``cfg.preconditioned``, adam/adamw, from the first step on
  which the optimiser has state);
- ``curv_time``: seconds spent.

The latest top eigenvector (flat over the trainable parameters in model order)
is shared as ``state.extras["top_eigvec"]`` with ``state.extras["top_eigvec_step"]``.
The model is only called functionally: no ``.grad``, mode or buffer changes.

Example:
    >>> from oppsig.config import CurvatureConfig
    >>> hook = CurvatureHook(CurvatureConfig(every=10, top_k=2))
    >>> hook.is_due(20), hook.is_due(21)
    (True, False)
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..distributed import exact_math
from ..errors import OppsigError
from .batches import make_batches
from .lanczos import lanczos
from .measures import update_projection
from .model_operators import HessianOperator, PreconditionedOperator, all_reduced
from .problem import make_hvp
from .results import eigen_metrics, warm_start
from .schedule import make_schedule
from .spectrum import adam_preconditioner, layer_eigs, parameter_groups, top_hessian_eigs
from .thresholds import stability

__all__ = ["CurvatureHook", "layer_shares"]


def _vec_ok(v: torch.Tensor | None, dim: int) -> bool:
    return v is not None and v.shape[0] == dim and bool(torch.isfinite(v).all())


def layer_shares(vec: torch.Tensor, layout, groups: dict[str, list[str]]) -> dict[str, float]:
    """``{"layer_share/<module>": ||vec_module||^2 / ||vec||^2}`` for a flat ``vec`` (d,) in ``layout`` order.

    Example:
        >>> from oppsig.curvature.layout import ParamLayout
        >>> lay = ParamLayout.from_dict({"a.w": torch.zeros(2), "b.w": torch.zeros(1)})
        >>> layer_shares(torch.tensor([1.0, 1.0, 2.0]), lay, {"a": ["a.w"], "b": ["b.w"]})
        {'layer_share/a': 0.3333333333333333, 'layer_share/b': 0.6666666666666666}
    """
    total = float(vec.double().square().sum())
    return {f"layer_share/{g}": sum(float(vec[layout.slice(n)].double().square().sum()) for n in names) / total
            for g, names in groups.items()}


def _plain_gd(state) -> bool:
    """Whether the step is ``theta - lr * grad`` of the mean loss over the measured examples (full batch)."""
    o = state.config.optim
    n = state.config.curvature.n
    return (o.name == "gd" and o.momentum == 0 and o.weight_decay == 0 and state.extras.get("example_weights") is None
            and (n is None or n >= len(state.train_data)))


class CurvatureHook:
    """Training hook that tracks sharpness (see the module docstring).

    Args:
        cfg: a :class:`~oppsig.config.CurvatureConfig` (``every`` 0 turns it off).

    Raises:
        ConfigError: at the first measurement, for an unknown ``cfg.hvp``.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self._vecs: torch.Tensor | None = None  # (d, k) warm start
        self._layer_vecs: dict[str, torch.Tensor] = {}
        self._precond_vec: torch.Tensor | None = None
        self._last_step: int | None = None
        self._count = 0  # measurements taken
        self._pending: dict[str, Any] | None = None
        self.schedule = make_schedule(cfg)
        self._cold_step: int | None = None  # adaptive: the step of the last cold solve
        self._theta: torch.Tensor | None = None  # adaptive under plain GD: theta_t, for the step's length

    # ------------------------------------------------------------------ protocol
    def is_due(self, step: int) -> bool:
        """Whether a measurement is taken at ``step``."""
        return self.cfg.every > 0 and self.schedule.due(step)

    def on_step_start(self, state) -> None:
        self._theta = None
        if self.cfg.every > 0 and self.schedule.kind == "adaptive" and _plain_gd(state):
            self._theta = torch.cat([q.detach().reshape(-1) for q in state.model.parameters()]).clone()
        if not self.is_due(state.step):
            return
        with exact_math():  # no TF32 / bf16 in curvature measurements (see oppsig.distributed.exact_math)
            self._measure(state)

    def _measure(self, state) -> None:
        t0 = time.perf_counter()
        cfg = self.cfg
        model = state.model
        data = state.train_data
        n = min(cfg.n or len(data), len(data))
        bs = cfg.physical_batch_size or state.config.train.physical_batch_size
        # under torch.distributed each rank takes its shard of the n examples and products are summed over ranks
        dctx = state.extras.get("dist")
        dist = dctx is not None and dctx.enabled
        lo, hi = dctx.shard(n) if dist else (0, n)
        batches = make_batches(data.x[lo:hi], data.y[lo:hi], bs)
        hvp = make_hvp(model, batches, state.loss_fn, method=cfg.hvp, device=state.device, num_examples=n)
        wrap = (lambda op: all_reduced(op, dctx)) if dist else (lambda op: op)
        d = hvp.layout.dim
        seed = int(getattr(state.config, "seed", 0)) + int(state.step)
        warm = _vec_ok(self._vecs, d) and not self._cold_due(int(state.step))
        self._count += 1
        if not warm:
            self._cold_step = int(state.step)
        res = top_hessian_eigs(hvp, k=min(cfg.top_k, d), tol=cfg.tol, max_iter=cfg.max_iter,
                               v0=self._vecs if warm else None, seed=seed,
                               criterion=cfg.criterion, presample=cfg.presample,
                               shards=dctx.shards(n) if dist else None, rank=dctx.rank if dist else 0, wrap=wrap)
        self._vecs = warm_start(res).detach()  # the block of Ritz vectors: the gap settles in one or two block products
        metrics: dict[str, float] = {}
        for i in range(res.eigenvalues.shape[0]):
            metrics.update(eigen_metrics("sharpness" if i == 0 else f"sharpness_{i + 1}", res, i))
        metrics["eig_residual"] = float(res.relative_residuals.max())
        metrics["eig_error"] = res.max_relative_error
        hvps = res.work

        optim_name = state.config.optim.name
        if cfg.preconditioned and optim_name in ("adam", "adamw"):
            try:
                diag = adam_preconditioner(state.optimizer, model, hvp.layout.names, dtype=hvp.dtype).to(hvp.device)
            except OppsigError:
                diag = None  # no optimiser state before the first step
            if diag is not None:
                op = PreconditionedOperator(wrap(HessianOperator(hvp)), diag)
                prev = self._precond_vec
                ok = _vec_ok(prev, d)
                r = lanczos(op, k=1, tol=cfg.tol, max_iter=cfg.max_iter, v0=prev if ok else None, seed=seed,
                            criterion=cfg.criterion)
                self._precond_vec = warm_start(r).detach()
                metrics.update(eigen_metrics("precond_sharpness", r))
                hvps += r.num_matvecs

        hvp.release()  # each layer's block builds its own graph: do not hold two at once
        if cfg.layerwise:
            layers = layer_eigs(hvp, parameter_groups(model), tol=cfg.tol, max_iter=cfg.max_iter,
                                v0=self._layer_vecs, seed=seed, criterion=cfg.criterion, wrap=wrap)
            for g, r in layers.items():
                self._layer_vecs[g] = warm_start(r).detach()
                metrics.update(eigen_metrics(f"layer/{g}", r))
                hvps += r.num_matvecs

        metrics["hvps"] = float(hvps)
        top = res.eigenvectors[:, 0].detach()
        metrics.update(layer_shares(top, hvp.layout, parameter_groups(model, hvp.layout.names)))
        theta = hvp.layout.flatten(hvp.params).clone() if cfg.projection else None
        self._pending = {"step": int(state.step), "metrics": metrics, "theta": theta, "vec": top,
                         "names": hvp.layout.names, "t": time.perf_counter() - t0}
        self._last_step = int(state.step)
        state.extras["top_eigvec"] = top
        state.extras["top_eigvec_step"] = int(state.step)

    def _cold_due(self, step: int) -> bool:
        cfg = self.cfg
        if cfg.cold_every <= 0 or self._count == 0:
            return False
        if self.schedule.kind == "fixed":
            return self._count % cfg.cold_every == 0
        return self._cold_step is None or step - self._cold_step >= cfg.cold_every * cfg.every

    def on_step_end(self, state) -> None:
        p = self._pending
        if p is None or p["step"] != state.step:
            self._observe_step(state)
            return
        self._pending = None
        t0 = time.perf_counter()
        metrics = dict(p["metrics"])
        o = state.config.optim
        st = stability(o.name, float(state.lr), momentum=o.momentum, dampening=o.dampening, nesterov=o.nesterov,
                       betas=o.betas)
        if st.against in metrics:  # only beside the sharpness it is for (Adam: the preconditioned one)
            metrics["threshold"] = st.threshold
        if p["theta"] is not None:
            params = dict(state.model.named_parameters())
            theta_next = torch.cat([params[n].detach().reshape(-1).to(p["theta"].dtype) for n in p["names"]])
            metrics["update_proj"] = update_projection(theta_next - p["theta"], p["vec"])
        metrics["curv_time"] = p["t"] + time.perf_counter() - t0
        state.metrics.update(metrics)
        if st.against in metrics:
            self.schedule.observe_measurement(int(state.step), metrics[st.against], metrics[f"err/{st.against}"],
                                              st.threshold)
        else:
            self.schedule.observe_measurement(int(state.step), metrics["sharpness"], metrics["err/sharpness"], None)
        self._observe_step(state)

    def _observe_step(self, state) -> None:
        """Hand the schedule this step's loss and, under plain GD, the step's squared length.

        Under torch.distributed the loss is left out: each rank's is its shard's, and every rank must choose the
        same steps (the measurement is a collective)."""
        if self.schedule.kind != "adaptive":
            return
        dctx = state.extras.get("dist")
        loss = None if dctx is not None and dctx.enabled else state.metrics.get("loss")
        step_sq = None
        if self._theta is not None:
            theta_next = torch.cat([q.detach().reshape(-1) for q in state.model.parameters()])
            step_sq = float((theta_next - self._theta).double().square().sum())
            self._theta = None
        self.schedule.observe_step(int(state.step), loss, step_sq, float(state.lr))

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """Warm-start vectors (on the CPU) and the step of the last measurement."""
        cpu = lambda v: None if v is None else v.detach().cpu().clone()  # noqa: E731
        return {
            "vecs": cpu(self._vecs),
            "layer_vecs": {g: cpu(v) for g, v in self._layer_vecs.items()},
            "precond_vec": cpu(self._precond_vec),
            "last_step": self._last_step,
            "count": self._count,
            "cold_step": self._cold_step,
            "schedule": self.schedule.state_dict(),
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore what :meth:`state_dict` saved (vectors move to the device at the next measurement).

        Raises:
            OppsigError: when ``d`` is not a state dict of this hook.
        """
        if not isinstance(d, dict) or "vecs" not in d:
            raise OppsigError("not a CurvatureHook state dict; pass what CurvatureHook.state_dict() returned")
        self._vecs = d["vecs"]
        self._layer_vecs = dict(d.get("layer_vecs") or {})
        self._precond_vec = d.get("precond_vec")
        self._last_step = d.get("last_step")
        self._count = int(d.get("count") or 0)
        self._cold_step = d.get("cold_step")
        self._pending = None
        sched = d.get("schedule")
        if sched is not None and sched.get("kind") == self.schedule.kind:  # a changed schedule starts afresh
            self.schedule.load_state_dict(sched)
