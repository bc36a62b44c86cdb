"""oppsig in a PyTorch Lightning run: a ``lightning.pytorch.Callback`` (``pip install "oppsig[lightning]"``).

The lines to add (the batch yields stable example ids ``idx``; ``training_step``
returns its per-example losses beside the loss it trains on)::

    from oppsig.integrations.lightning import OppsigCallback

    class Net(L.LightningModule):
        def training_step(self, batch, batch_idx):
            idx, x, y = batch
            losses = F.cross_entropy(self(x), y, reduction="none")          # per example
            return {"loss": losses.mean(), "per_example_loss": losses}       # what oppsig records

    cb = OppsigCallback("runs/mine", num_examples=len(train_set))
    L.Trainer(callbacks=[cb], ...).fit(Net(), loader)

Then ``oppsig detect runs/mine`` and ``oppsig report runs/mine`` as for any run.

What it records, into the same run directory format as ``oppsig train``:

- every step, the batch's own per-example losses from the user's forward pass
  (no second forward), keyed by example id; under DDP the ranks' losses are
  gathered by id and rank 0 writes. In mini-batches (fewer examples an update
  than the training set) they go to the sparse batch record, and a seeded probe
  subset of the train loader's data set is measured every k steps by an extra
  no-grad forward (the model's train/eval mode is left as it is), its size and k
  chosen within ``budget`` (default 10% of training time; printed at the start, the
  measured share at the end and in ``meta.json``); full batches: the dense record;
- with ``probe=loader, probe_every=k``: every example of that probe set (a
  loader of ``(idx, x, y)``) every k steps instead of the planned subset;
- ``labels`` and ``classes``, when given, in ``labels.npz`` (detect names groups by class);
- with ``sharpness_every=k, sharpness_batch=(x, y)``: the top Hessian eigenvalue
  on that batch every k steps, in ``metrics.jsonl``, with the optimiser's stability
  threshold as ``oppsig train`` writes it (:func:`~oppsig.integrations.record.sharpness_on`:
  Adam's beside the preconditioned sharpness, none for SAM or an optimiser oppsig
  does not know);
- with gradient accumulation (``accumulate_grad_batches``), one step per update,
  holding the losses of all its micro-batches;
- the loss and learning rate of each step (``metrics.jsonl``) and the run's
  versions (``meta.json``);
- live spike attribution (on by default): a one-line message and an event in
  ``events.jsonl`` at each loss spike, and the actions of ``live`` (off by default).
  In mini-batches the event names the groups from a probe at states kept over the
  last ``live.replay_window`` steps and checks them by replay from the batches the
  callback kept (:class:`~oppsig.integrations.replay.BatchReplayer`: the mean of
  ``loss_fn(module(x), y)`` over each batch, so an approximation of a
  ``training_step`` that adds more; the event's ``replay.approximate``); none with
  gradient accumulation, over several processes or without the train loader's
  data set. Each event and action also goes to the Trainer's loggers
  (``logger.log_metrics``: ``oppsig/spike_rise``, ``oppsig/replay_removed``, ...,
  :func:`~oppsig.integrations.record.logged_values`; the message as text where the
  logger takes text, as TensorBoard's does), at the spike's step.

The callback never changes the model or optimiser unless an action is asked for;
``enabled=False`` switches it off. Its live state is saved with Lightning's
checkpoints (``state_dict``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..config import LiveConfig
from ..errors import ConfigError
from .record import callback_record, logged_values, probe_pass, sharpness_on, start_record
from .replay import BatchReplayer, ExampleSource, dataset_inputs

try:
    from lightning.pytorch import Callback, LightningModule
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('oppsig.integrations.lightning needs Lightning: pip install "oppsig[lightning]"') from e


class OppsigCallback(Callback):
    """Records per-example losses and attributes loss spikes live in a Lightning run.

    Args:
        run_dir: the run directory to write (rank 0).
        num_examples: N, when example ids are ``0..N-1``; else pass ``index``.
        index: the stable ids of the training examples (N,).
        live: ``True`` (default settings), ``False``, a :class:`~oppsig.config.LiveConfig`
            or a dict of its fields (e.g. ``{"groups": "runs/old/signals.json", "skip_update": True}``).
        labels, classes: each example's class (N,) in ``index`` order and the class names, to name groups.
        probe: a loader of ``(idx, x, y)`` batches recorded every ``probe_every`` steps (default: a seeded subset
            of the train loader's data set, planned from ``budget``, in a mini-batch run).
        probe_every: 0: record the training batches only (with ``probe`` given).
        budget: the planned probe's cost at most, a share of training time (0: no planned probe).
        loss_fn: per-example loss ``(out, y) -> (B,)`` for the probe and the sharpness (default cross-entropy).
        sharpness_every: measure the top Hessian eigenvalue every k steps on ``sharpness_batch`` (0: never).
        sharpness_batch: ``(x, y)`` tensors.
        config: a YAML-able description of the run, saved as ``config.yaml``.
        overwrite: replace a run already in ``run_dir``.
        enabled: False: do nothing.
        dataset: the training set (``x``, ``y``, ``index`` tensors, e.g. an ArrayDataset): meta.json records its
            data fingerprint, which detect, report and export check (default: none; they warn).
    """

    def __init__(self, run_dir, num_examples: int | None = None, index=None, *, live: Any = True,
                 labels=None, classes=None, probe=None, probe_every: int = 0, loss_fn=None,
                 sharpness_every: int = 0, sharpness_batch=None, config: dict | None = None,
                 overwrite: bool = False, enabled: bool = True, dataset=None, budget: float = 0.10) -> None:
        super().__init__()
        self.enabled = enabled
        self.core = callback_record(run_dir, num_examples, index, live, labels, classes, config, overwrite,
                                    probe=probe, probe_every=probe_every, sharpness_every=sharpness_every,
                                    sharpness_batch=sharpness_batch, batch_form="(x, y)", dataset=dataset,
                                    budget=budget)
        self.probe, self.probe_every, self.budget = probe, probe_every, budget
        self._t0 = 0.0
        self.loss_fn = loss_fn
        self.sharpness_every, self.sharpness_batch = sharpness_every, sharpness_batch
        self._buf: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._sharp: dict = {}
        self._step_before = 0
        self._started = False
        self.replayer: BatchReplayer | None = None

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        loader = getattr(trainer, "train_dataloader", None)
        bs = getattr(loader, "batch_size", None) or getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
        per_update = bs * trainer.accumulate_grad_batches * trainer.world_size if bs else None
        steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        steps = int(steps) if math.isfinite(steps) else None
        no_forward = type(pl_module).forward in (LightningModule.forward, torch.nn.Module.forward)
        why_not = "the LightningModule defines no forward(x) for the probe to call" if no_forward else None
        replay = (self._replay(trainer, loader, why_not) if self.core.cfg.enabled and self.core.cfg.replay is not False
                  else None)
        self.replayer = replay.get("replayer") if replay else None
        self.probe, self.probe_every = start_record(self.core, loader, per_update, steps, self.probe, self.probe_every,
                                                    self.budget, key=0, why_not=why_not, replay=replay)
        self._started = True

    def _replay(self, trainer, loader, why_not: str | None) -> dict:
        """The keywords of the live session's replay: a :class:`BatchReplayer` of the batches this callback sees
        and the training set's inputs, or why there is none."""
        ds = getattr(loader, "dataset", None)
        if trainer.accumulate_grad_batches > 1 or trainer.world_size > 1:
            return {"no_replay": "an update made of several batches or processes (gradient accumulation, DDP)"}
        if why_not or ds is None or isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
            return {"no_replay": why_not or "the train loader's data set is not reachable, so the probe's "
                                            "examples cannot be measured"}
        from ..losses import cross_entropy

        fn = self.loss_fn or cross_entropy
        clip = trainer.gradient_clip_val
        source = ExampleSource(ds, 0, getattr(loader, "collate_fn", None), strip=lambda b: (b[1], b[2]))
        rp = BatchReplayer(self.core.cfg.replay_window + 1, lambda m, b: fn(m(b[0]), b[1]), source,
                           clip=(float(clip), str(getattr(trainer.gradient_clip_algorithm, "value", "norm"))) if clip
                           else None)
        return {"replayer": rp, "inputs": dataset_inputs(ds, self.core.index)}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self._started:
            return
        step = trainer.global_step
        if self.sharpness_every and step % self.sharpness_every == 0:
            self._sharp = sharpness_on(pl_module, self.sharpness_batch, self.loss_fn, optimizer)
        self.core.before_update(step, pl_module, optimizer)
        if self.replayer is not None:
            self.replayer.before_update(optimizer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_before = trainer.global_step  # the step of the update this micro-batch goes into
        if self.replayer is not None:
            self.replayer.step_start(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._started:
            return
        if not isinstance(outputs, dict) or "per_example_loss" not in outputs:
            raise ConfigError("OppsigCallback needs the per-example losses: return "
                              "{'loss': losses.mean(), 'per_example_loss': losses} from training_step")
        ids = outputs.get("ids")
        if ids is None:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise ConfigError("OppsigCallback needs example ids: let the batch be (idx, x, y) or return "
                                  "'ids' from training_step")
            ids = batch[0]
        self._buf.append((torch.as_tensor(ids).detach(), outputs["per_example_loss"].detach().float()))
        self.core.seconds["train"] += time.perf_counter() - self._t0
        # with gradient accumulation the update happens on the last micro-batch only: the step counter moves
        step = self._step_before
        if trainer.global_step == step:
            return
        ids = torch.cat([b[0].reshape(-1) for b in self._buf])
        losses = torch.cat([b[1].reshape(-1) for b in self._buf])
        self._buf.clear()
        opt = trainer.optimizers[0] if trainer.optimizers else None
        metrics = {"loss": float(losses.mean())}
        if opt is not None:
            metrics["lr"] = opt.param_groups[0]["lr"]
        metrics.update(self._sharp)
        self._sharp = {}
        if self.replayer is not None:
            if isinstance(batch, (tuple, list)) and len(batch) == 3:
                self.replayer.keep(step, batch[0], (batch[1], batch[2]))
            else:
                self.replayer.broken = "the training batch is not (idx, x, y), so it cannot be replayed"
        ev = self.core.after_update(step, ids, losses, pl_module, opt, metrics=metrics)
        self._log(trainer, step, ev)
        if self.probe_every and step % self.probe_every == 0:
            t0 = time.perf_counter()
            i, v = probe_pass(pl_module, self.probe, self.loss_fn)
            self.core.seconds["probe"] += time.perf_counter() - t0
            self.core.log_probe(step, i, v)

    def _log(self, trainer, step: int, ev) -> None:
        """A spike event and the step's actions to the Trainer's loggers: scalars, and the messages as text where
        a logger takes text. Straight to the loggers, as ``LightningModule.log`` would keep them only every
        ``log_every_n_steps``."""
        values = logged_values(ev, self.core.actions)
        if not values or self.core.rank != 0:
            return
        texts = ([ev.message] if ev is not None else []) + [a["message"] for a in self.core.actions]
        for lg in trainer.loggers:
            lg.log_metrics(values, step=step)
            add_text = getattr(getattr(lg, "experiment", None), "add_text", None)
            if callable(add_text):
                for t in texts:
                    add_text("oppsig/spike", t, step)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._started:
            self.core.close()
            self._started = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return self.core.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.core.load_state_dict(state_dict)

    def weight_of(self, ids) -> torch.Tensor:
        """Loss weights of examples ``ids`` (1 unless ``live.downweight_group`` was down-weighted): multiply
        your per-example losses by them for the down-weight action to act."""
        return self.core.weight_of(ids)


__all__ = ["OppsigCallback", "LiveConfig"]
