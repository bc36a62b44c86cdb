"""What the framework callbacks share: the record, live attribution, actions, gathering by id.

:class:`LiveRecord` is framework-neutral: a callback tells it when an update is
about to happen (:meth:`LiveRecord.before_update`) and hands it each step's
per-example losses with their example ids afterwards
(:meth:`LiveRecord.after_update`). It gathers them across ranks by id, writes
them on rank 0 through :class:`oppsig.Recorder` (so ``oppsig detect``,
``oppsig report`` and ``open_run`` read the result unchanged), runs the live
spike attribution on every rank alike, and takes the actions asked for.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import LiveConfig
from ..errors import ConfigError
from ..signals.live import LiveAttribution
from ..store.recorder import Recorder
from ..training.actions import LrDrop, UpdateGuard, downweight, restore_state, snapshot


def dist_info() -> tuple[int, int]:
    """``(rank, world size)`` of the running ``torch.distributed`` job, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_by_id(ids: torch.Tensor, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's ``(ids (b,), values (b,))``, concatenated on every rank, each id once.

    Distributed samplers pad the last batch with repeated examples: a repeated id
    keeps its first value. Without ``torch.distributed`` this is a copy to numpy.
    """
    ids = torch.as_tensor(ids).detach().reshape(-1).to(torch.int64)
    values = torch.as_tensor(values).detach().reshape(-1).to(torch.float32)
    rank, world = dist_info()
    if world > 1:
        dev = values.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        ids, values = ids.to(dev), values.to(dev)
        n = torch.tensor([ids.numel()], device=dev)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        torch.distributed.all_gather(sizes, n)
        m = int(max(int(s) for s in sizes))
        pad_i = torch.full((m,), -1, dtype=torch.int64, device=dev)
        pad_v = torch.zeros(m, dtype=torch.float32, device=dev)
        pad_i[: ids.numel()], pad_v[: values.numel()] = ids, values
        all_i = [torch.empty_like(pad_i) for _ in range(world)]
        all_v = [torch.empty_like(pad_v) for _ in range(world)]
        torch.distributed.all_gather(all_i, pad_i)
        torch.distributed.all_gather(all_v, pad_v)
        ids = torch.cat([a[: int(s)] for a, s in zip(all_i, sizes)])
        values = torch.cat([a[: int(s)] for a, s in zip(all_v, sizes)])
    i, v = ids.cpu().numpy(), values.cpu().numpy()
    _, first = np.unique(i, return_index=True)
    first = np.sort(first)
    return i[first], v[first]


class SpikeActions:
    """The optional actions at a spike (``live.skip_update``, ``rollback``, ``lr_factor``/``lr_steps``,
    ``downweight_group``), shared by the callbacks and the hook of ``oppsig train``; each use is logged as an event.

    Args:
        cfg: the live settings.
        rollback_point: ``onset step -> (step, state dict with "model" and "optimizer")`` of the last kept
            state at or before it, or None when there is none.
    """

    def __init__(self, cfg: LiveConfig, rollback_point) -> None:
        self.cfg = cfg
        self.rollback_point = rollback_point
        self.guard = UpdateGuard()
        self.lr_drop = LrDrop(cfg.lr_factor, cfg.lr_steps) if cfg.lr_steps > 0 else None
        self.downweighted = False
        self.log: list[dict] = []

    def before_update(self, model: nn.Module, optimizer) -> None:
        """Just before the optimiser step: guard it (skip action) and lower the lr (when a drop is on)."""
        if self.cfg.skip_update:
            self.guard.take(model, optimizer)
        if self.lr_drop is not None and optimizer is not None:
            self.lr_drop.apply(optimizer)

    def after_update(self, optimizer) -> None:
        """Right after the optimiser step: the schedule's lr back (idempotent)."""
        if self.lr_drop is not None and optimizer is not None:
            self.lr_drop.undo(optimizer)

    def act(self, step: int, ev, model: nn.Module, optimizer, live: LiveAttribution,
            weights: torch.Tensor | None) -> None:
        """Take the actions asked for at the spike ``ev`` (None: no spike, drop the guard)."""
        if ev is None:
            self.guard.drop()
            return
        c = self.cfg

        def event(kind: str, message: str, **extra) -> None:
            e = {"kind": kind, "step": int(step), "message": message, **extra}
            self.log.append(e)
            live.log_event(e)
            if live.print_fn is not None:
                live.print_fn(message)

        if c.skip_update and self.guard.put_back(model, optimizer):
            event("skip_update", f"step {step}: update skipped (parameters and optimiser state restored)")
        if c.rollback:
            onset = ev.onset_step if ev.onset_step is not None else step
            point = self.rollback_point(onset)
            if point is None:
                event("rollback_unavailable", f"step {step}: no kept state at or before step {onset}; not rolled "
                      "back (keep checkpoints more often)")
            else:
                to, snap = point
                restore_state(model, optimizer, snap)
                event("rollback", f"step {step}: rolled back to step {to}; the batches of steps {to}..{step} "
                      "are skipped", to_step=int(to))
        if self.lr_drop is not None:
            self.lr_drop.trigger()
            event("lower_lr", f"step {step}: learning rate x{c.lr_factor:g} for the next {c.lr_steps} steps",
                  factor=c.lr_factor, steps=c.lr_steps)
        if c.downweight_group is not None and not self.downweighted and weights is not None:
            g = next((g for g in live.groups if str(g.id) == str(c.downweight_group)), None)
            if g is None:
                raise ConfigError(f"live.downweight_group {c.downweight_group!r} is not a group of {c.groups}; "
                                  f"its groups are {[x.id for x in live.groups]}")
            if any(str(x.get("id")) == str(g.id) for x in ev.groups):
                downweight(weights, g.cols, c.downweight)
                self.downweighted = True
                event("downweight", f"step {step}: group {g.id} ({g.name}) weighted x{c.downweight:g} from now on",
                      group=g.id, factor=c.downweight)

    def state_dict(self) -> dict:
        return {"lr_drop": self.lr_drop.state_dict() if self.lr_drop is not None else {},
                "downweighted": self.downweighted}

    def load_state_dict(self, d: dict) -> None:
        if self.lr_drop is not None:
            self.lr_drop.load_state_dict(d.get("lr_drop", {}))
        self.downweighted = bool(d.get("downweighted", False))


class LiveRecord:
    """Record + live attribution + actions for one training run in someone else's loop.

    Args:
        run_dir: the run directory (rank 0 writes it).
        index: the stable ids of the recorded examples (N,) (or ``num_examples``: ids ``0..N-1``).
        live: a :class:`~oppsig.config.LiveConfig` (``enabled=False``: record only).
        labels, classes: each recorded example's class (N,) and the class names, to name groups.
        config: a YAML-able description of the run, saved as ``config.yaml``.
        overwrite: replace a run already in ``run_dir``.
    """

    def __init__(self, run_dir, index=None, num_examples: int | None = None, live: LiveConfig | None = None,
                 labels=None, classes=None, config: dict | None = None, overwrite: bool = False,
                 dtype: str = "float32", print_fn: Any = "stderr") -> None:
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
        self.rec: Recorder | None = None
        self.live: LiveAttribution | None = None
        self.kept: OrderedDict[int, dict] = OrderedDict()  # in-memory checkpoints for rollback
        self.actions = SpikeActions(self.cfg, self._kept_point)
        self.weights: torch.Tensor | None = None
        self.rank, self.world = 0, 1
        self._saved: dict | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.rank, self.world = dist_info()
        if self.rank == 0:
            self.rec = Recorder(self.run_dir, index=self.index, config=self.config, overwrite=self.overwrite,
                                dtype=self.dtype)
        if self.cfg.enabled:
            tb = None
            if self.cfg.tensorboard and self.rank == 0:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(self.run_dir / "tb"))
            self.live = LiveAttribution(self.cfg, groups=self.cfg.groups, labels=self.labels, classes=self.classes,
                                        print_fn=self.print_fn if self.rank == 0 else None, tensorboard=tb)
            self.live.bind(self.run_dir if self.rank == 0 else None, self.index)
            if self._saved is not None:
                self.live.load_state_dict(self._saved.get("live", {}))
        if self._saved is not None:
            self.actions.load_state_dict(self._saved.get("actions", {}))
        if self.cfg.downweight_group is not None:
            self.weights = torch.ones(len(self.index))

    def close(self) -> None:
        if self.live is not None:
            self.live.flush()
            if self.live.tb is not None:
                self.live.tb.close()
        if self.rec is not None:
            self.rec.close()
            self.rec = None

    # ------------------------------------------------------------------ per step
    @property
    def lr_drop(self) -> LrDrop | None:
        return self.actions.lr_drop

    def _kept_point(self, onset: int):
        points = [s for s in self.kept if s <= onset]
        return (max(points), self.kept[max(points)]) if points else None

    def before_update(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Just before the optimiser step: guard it (skip action), keep a rollback point, lower the lr."""
        if self.cfg.rollback and step % self.cfg.checkpoint_every == 0:
            self.kept[step] = snapshot(model, optimizer)
            while len(self.kept) > 2:
                self.kept.popitem(last=False)
        self.actions.before_update(model, optimizer)

    def after_update(self, step: int, ids, losses, model: nn.Module | None = None,
                     optimizer: torch.optim.Optimizer | None = None, loss: float | None = None,
                     metrics: dict | None = None):
        """Right after the optimiser step, with the step's per-example ``losses`` (b,) of examples ``ids`` (b,).

        Returns the spike event (a :class:`~oppsig.signals.live.SpikeEvent`) or None.
        """
        self.actions.after_update(optimizer)
        i, v = gather_by_id(ids, losses)
        metrics = dict(metrics or {})
        if self.live is not None and "sharpness" in metrics:
            self.live.set_sharpness(metrics.get("sharpness"), metrics.get("threshold"))
        if self.rec is not None:
            self.rec.log(step, i, v)
            if metrics:
                self.rec.log_metrics(step, **{k: float(x) for k, x in metrics.items() if _is_number(x)})
        ev = self.live.observe(step, i, v, loss=loss) if self.live is not None else None
        if self.live is not None and model is not None:
            self.actions.act(step, ev, model, optimizer, self.live, self.weights)
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
        return {"live": self.live.state_dict() if self.live is not None else {},
                "actions": self.actions.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        """Continue a resumed run: the state is applied at :meth:`start`."""
        self._saved = d


def _is_number(x) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def callback_record(run_dir, num_examples, index, live, labels, classes, config, overwrite, *, probe,
                    probe_every: int, sharpness_every: int, sharpness_batch, batch_form: str) -> LiveRecord:
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
                      classes=classes, config=config, overwrite=overwrite)


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


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """``adam``/``adamw``/``sgd`` for the stability threshold of a torch optimiser."""
    if isinstance(optimizer, torch.optim.AdamW):
        return "adamw"
    if isinstance(optimizer, torch.optim.Adam):
        return "adam"
    return "sgd"


def sharpness_on(model: nn.Module, batch, loss_fn, optimizer) -> dict:
    """``{"sharpness", "threshold", "sharpness_converged"}`` of the model on one ``(x, y)`` batch.

    The top Hessian eigenvalue of the mean loss over the batch (Lanczos to the
    curvature code's default tolerance) and the optimiser's stability threshold
    at its current learning rate (2/lr for plain SGD; for Adam the threshold is
    that of the preconditioned sharpness, so the two are not comparable).
    """
    from ..curvature import optimizer_threshold, sharpness
    from ..losses import cross_entropy

    x, y = batch
    dev = next(model.parameters()).device
    r = sharpness(model, [(x.to(dev), y.to(dev))], loss_fn or cross_entropy, k=1)
    g = optimizer.param_groups[0] if optimizer is not None else {"lr": float("nan")}
    name = optimizer_name(optimizer) if optimizer is not None else "sgd"
    thr = optimizer_threshold(name, float(g["lr"]), momentum=float(g.get("momentum", 0.0) or 0.0),
                              betas=tuple(g.get("betas", (0.9, 0.999))))
    return {"sharpness": float(r.eigenvalues[0]), "threshold": float(thr),
            "sharpness_converged": float(bool(r.converged))}
