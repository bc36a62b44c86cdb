"""What both framework callbacks use: :class:`LiveRecord` (the record and the live session of a run in someone
else's loop), :func:`callback_record`, :func:`live_config`, :func:`probe_pass` and
:func:`sharpness_on`.

:class:`LiveRecord` is framework-neutral: a callback tells it when an update is
about to happen (:meth:`LiveRecord.before_update`) and hands it each step's
per-example losses with their example ids afterwards
(:meth:`LiveRecord.after_update`). It gathers them across ranks by id, writes
them on rank 0 through :class:`oppsig.Recorder` (so ``oppsig detect``,
``oppsig report`` and ``open_run`` read the result unchanged), and runs a
:class:`~oppsig.live.session.LiveSession` on every rank alike (live attribution
and the actions asked for; a rollback goes back to in-memory snapshots).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import LiveConfig
from ..distributed import current_context, gather_by_id
from ..errors import ConfigError
from ..live.rollback import Snapshots
from ..live.session import LiveSession
from ..store.recorder import Recorder
from ..training.actions import LrDrop


class LiveRecord:
    """Record + live attribution + actions for one training run in someone else's loop.

    Args:
        run_dir: the run directory (rank 0 writes it).
        index: the stable ids of the recorded examples (N,) (or ``num_examples``: ids ``0..N-1``).
        live: a :class:`~oppsig.config.LiveConfig` (``enabled=False``: record only).
        labels, classes: each recorded example's class (N,) and the class names, to name groups.
        config: a YAML-able description of the run, saved as ``config.yaml``.
        overwrite: replace a run already in ``run_dir``.
        dataset: the training set (``x``, ``y``, ``index`` tensors, e.g. an ArrayDataset): meta.json records its
            data fingerprint, which detect, report and export check (default: none; they warn).
    """

    def __init__(self, run_dir, index=None, num_examples: int | None = None, live: LiveConfig | None = None,
                 labels=None, classes=None, config: dict | None = None, overwrite: bool = False,
                 dtype: str = "float32", print_fn: Any = "stderr", dataset=None) -> None:
        if index is None:
            if not num_examples or num_examples <= 0:
                raise ConfigError(f"pass the number of training examples (num_examples > 0) or their ids; "
                                  f"got num_examples={num_examples}")
            index = np.arange(num_examples)
        self.run_dir = Path(run_dir)
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        self.cfg = live if live is not None else LiveConfig()
        self.labels, self.classes, self.config = labels, classes, config
        self.overwrite, self.dtype, self.print_fn = overwrite, dtype, print_fn
        self.dataset = dataset
        self.rec: Recorder | None = None
        self.session = LiveSession(self.cfg, Snapshots(self.cfg.checkpoint_every))
        self.weights: torch.Tensor | None = None
        self.rank, self.world = 0, 1

    @property
    def live(self):
        """The session's :class:`~oppsig.live.attribution.LiveAttribution` (None before :meth:`start` or when
        live attribution is off)."""
        return self.session.live

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        ctx = current_context()
        self.rank, self.world = ctx.rank, ctx.world
        if self.rank == 0:
            self.rec = Recorder(self.run_dir, index=self.index, config=self.config, overwrite=self.overwrite,
                                dtype=self.dtype, dataset=self.dataset)
        self.session.start(self.run_dir, self.index, main=self.rank == 0, attribute=self.cfg.enabled,
                           labels=self.labels, classes=self.classes, print_fn=self.print_fn)
        if self.cfg.downweight_group is not None:
            self.weights = torch.ones(len(self.index))
            self.session.restore_weights(self.weights)  # a resumed run whose group was down-weighted already

    def close(self) -> None:
        self.session.close()
        if self.rec is not None:
            self.rec.close()
            self.rec = None

    # ------------------------------------------------------------------ per step
    @property
    def lr_drop(self) -> LrDrop | None:
        return self.session.lr_drop

    def before_update(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Just before the optimiser step: keep a rollback point, guard it (skip action), lower the lr."""
        self.session.before_update(step, model, optimizer)

    def after_update(self, step: int, ids, losses, model: nn.Module | None = None,
                     optimizer: torch.optim.Optimizer | None = None, loss: float | None = None,
                     metrics: dict | None = None):
        """Right after the optimiser step, with the step's per-example ``losses`` (b,) of examples ``ids`` (b,).

        Returns the spike event (a :class:`~oppsig.live.events.SpikeEvent`) or None.
        """
        self.session.after_update(optimizer)
        i, v = gather_by_id(ids, losses)
        metrics = dict(metrics or {})
        if self.rec is not None:
            self.rec.log(step, i, v)
            if metrics:
                self.rec.log_metrics(step, **{k: float(x) for k, x in metrics.items() if _is_number(x)})
        ev = self.session.observe(step, i, v, loss=loss, metrics=metrics)
        if self.live is not None and model is not None:
            self.session.act(step, ev, model, optimizer, self.weights)
        return ev

    def log_probe(self, step: int, ids, losses) -> None:
        """A probe set's per-example losses at ``step`` (recorded like a batch)."""
        i, v = gather_by_id(ids, losses)
        if self.rec is not None:
            self.rec.log(step, i, v)

    def weight_of(self, ids) -> torch.Tensor:
        """The loss weight of each example id (1 unless a group was down-weighted), shape (b,)."""
        ids = torch.as_tensor(ids).reshape(-1)
        if self.weights is None:
            return torch.ones(len(ids))
        cols = self.live.columns(ids.cpu().numpy()) if self.live is not None else ids.cpu().numpy()
        return self.weights[torch.as_tensor(cols)]

    def state_dict(self) -> dict:
        return self.session.state_dict()

    def load_state_dict(self, d: dict) -> None:
        """Continue a resumed run: the state is applied at :meth:`start`."""
        self.session.load_state_dict(d)


def _is_number(x) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def callback_record(run_dir, num_examples, index, live, labels, classes, config, overwrite, *, probe,
                    probe_every: int, sharpness_every: int, sharpness_batch, batch_form: str,
                    dataset=None) -> LiveRecord:
    """The :class:`LiveRecord` of a framework callback, after checking the probe and sharpness arguments.

    Raises:
        ConfigError: ``probe_every`` without ``probe``, ``sharpness_every`` without ``sharpness_batch``
            (``batch_form`` says what to pass), or a bad ``live``.
    """
    if probe_every and probe is None:
        raise ConfigError("probe_every is set but no probe loader was given; pass probe=DataLoader(...)")
    if sharpness_every and sharpness_batch is None:
        raise ConfigError(f"sharpness_every is set but no sharpness_batch was given; pass sharpness_batch={batch_form}")
    return LiveRecord(run_dir, index=index, num_examples=num_examples, live=live_config(live), labels=labels,
                      classes=classes, config=config, overwrite=overwrite, dataset=dataset)


def live_config(live: Any) -> LiveConfig:
    """A :class:`LiveConfig` from ``True`` / ``False`` / a LiveConfig / a dict of its fields.

    Raises:
        ConfigError: for another type or an unknown field (the message names it).
    """
    from ..config import from_dict

    if live is True:
        return LiveConfig(enabled=True)
    if live is False or live is None:
        return LiveConfig(enabled=False)
    if isinstance(live, LiveConfig):
        return live
    if isinstance(live, dict):
        return from_dict({"enabled": True, **live}, LiveConfig, "live")
    raise ConfigError(f"live must be True, False, a LiveConfig or a dict of its fields; got {type(live).__name__}")


@torch.no_grad()
def probe_pass(model: nn.Module, loader, loss_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example losses of a probe loader of ``(idx, x, y)`` batches at the model's current parameters.

    One no-grad forward per batch; the model's train/eval mode is left as it is.
    Sequence losses ``(B, T)`` are averaged over T. Returns ``(ids (n,), losses (n,))`` on the CPU.
    """
    from ..losses import cross_entropy

    fn = loss_fn or cross_entropy
    dev = next(model.parameters()).device
    ids, vals = [], []
    for idx, x, y in loader:
        lv = fn(model(x.to(dev)), y.to(dev)).float()
        if lv.dim() > 1:
            lv = lv.flatten(1).mean(1)
        ids.append(torch.as_tensor(idx).reshape(-1).cpu())
        vals.append(lv.reshape(-1).cpu())
    return torch.cat(ids), torch.cat(vals)


def sharpness_on(model: nn.Module, batch, loss_fn, optimizer) -> dict:
    """The sharpness of the model on one ``(x, y)`` batch, with the optimiser's threshold beside the one it is for.

    ``sharpness`` (the top Hessian eigenvalue of the mean loss over the batch,
    Lanczos to the curvature code's default tolerance) and ``sharpness_converged``;
    for Adam/AdamW also ``precond_sharpness`` (of ``P^-1/2 H P^-1/2`` with Adam's
    preconditioner, once the optimiser has state). ``threshold`` is the one of
    :func:`~oppsig.curvature.thresholds.stability_of` at the current lr, the same as
    ``oppsig train`` writes, and only when the sharpness it is compared with was
    measured: none for SAM, sign-SGD or an optimiser oppsig does not know.
    """
    from ..curvature import preconditioned_sharpness, sharpness, stability_of
    from ..curvature.thresholds import unwrap
    from ..errors import OppsigError
    from ..losses import cross_entropy

    x, y = batch
    dev = next(model.parameters()).device
    batches, fn = [(x.to(dev), y.to(dev))], loss_fn or cross_entropy
    r = sharpness(model, batches, fn, k=1)
    out = {"sharpness": float(r.eigenvalues[0]), "sharpness_converged": float(bool(r.converged))}
    st = stability_of(optimizer) if optimizer is not None else None
    if st is not None and st.against == "precond_sharpness":
        try:
            p = preconditioned_sharpness(model, batches, fn, unwrap(optimizer), k=1)
            out["precond_sharpness"] = float(p.eigenvalues[0])
        except OppsigError:
            pass  # no Adam state before the first step
    if st is not None and st.against in out:
        out["threshold"] = float(st.threshold)
    return out
