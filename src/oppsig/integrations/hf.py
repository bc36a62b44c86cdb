"""oppsig in a Hugging Face ``Trainer`` run: a ``transformers.TrainerCallback`` (``pip install "oppsig[hf]"``).

The lines to add (each example carries its stable id under ``oppsig_id``;
``with_ids`` adds it, and the Trainer must keep that column)::

    from oppsig.integrations.hf import OppsigCallback, with_ids

    train_set = with_ids(train_set)                                  # items get "oppsig_id": i
    args = TrainingArguments(..., remove_unused_columns=False)       # keep the id column
    cb = OppsigCallback("runs/mine", num_examples=len(train_set))
    Trainer(model=model, args=args, train_dataset=train_set, callbacks=[cb]).train()

Then ``oppsig detect runs/mine`` and ``oppsig report runs/mine`` as for any run.

The per-example losses come from the Trainer's own forward pass: a forward
pre-hook on the model takes the ids out of the batch (the model never sees
them), and a forward hook computes each example's loss from the logits and
labels of that same forward (next-token cross-entropy averaged over each
sequence's labelled tokens for causal LMs with ``(B, T, V)`` logits, plain
cross-entropy for ``(B, C)`` logits; pass ``per_example_loss=fn(logits, labels)``
otherwise). No second forward. Gradient-accumulation micro-batches of one update
are recorded as one step; under DDP the ranks' losses are gathered by id and
rank 0 writes. In mini-batches (fewer examples an update than the training set)
the batches' losses go to the sparse batch record, and a seeded probe subset of
the train dataloader's data set is measured every k steps by a no-grad forward,
its size and k chosen within ``budget`` (default 10% of training time; printed at
the start, the measured share at the end and in ``meta.json``); full batches: the
dense record. ``probe=loader, probe_every=k`` records that probe set (dict
batches with ids) every k steps instead of the planned subset; ``labels`` and
``classes`` go to ``labels.npz`` (detect names groups by class); ``sharpness_every=k,
sharpness_batch={"input_ids": ..., "labels": ...}`` tracks the top Hessian
eigenvalue against the optimiser's stability threshold (as ``oppsig train``; see
:func:`~oppsig.integrations.record.sharpness_on`). Live spike attribution is on by default (see
:mod:`oppsig.live`); actions are off by default. In mini-batches a spike event names its groups from a probe at
states kept over the last ``live.replay_window`` steps and checks them by replay from the batches the callback
kept (:class:`~oppsig.integrations.replay.BatchReplayer`: the mean of ``per_example_loss`` over each batch, with
``max_grad_norm`` clipping: the Trainer's own loss when it is that mean, an approximation otherwise, e.g. a causal
LM's token mean over the batch; the event's ``replay.approximate``); none with gradient accumulation, over several
processes or without the train data set.

Spike events and actions also go to the Trainer's log: at a spike the callback asks the Trainer to log that step
(``control.should_log``) and adds its values (``oppsig/spike_rise``, ``oppsig/replay_removed``, ...,
:func:`~oppsig.integrations.record.logged_values`) to the logged dict, so they are in ``trainer.state.log_history``
and reach the callbacks after this one. The ``report_to`` integrations (TensorBoard, W&B, MLflow) come before the
callbacks passed to the Trainer; for them to log oppsig's values, put this callback first::

    trainer.callback_handler.callbacks.insert(0, trainer.pop_callback(OppsigCallback))
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .record import callback_record, logged_values, sharpness_on, start_record
from .replay import BatchReplayer, ExampleSource

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('oppsig.integrations.hf needs transformers: pip install "oppsig[hf]"') from e

ID_KEY = "oppsig_id"


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example loss from a forward's logits and labels.

    ``(B, T, V), (B, T) -> (B,)``: next-token cross-entropy (labels shifted by
    one, as causal LMs train), averaged over each sequence's tokens whose label
    is not -100. ``(B, C), (B,) -> (B,)``: cross-entropy.
    """
    if logits.dim() == 2:
        return F.cross_entropy(logits.float(), labels, reduction="none")
    lg, lb = logits[:, :-1].float(), labels[:, 1:]
    tok = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), reduction="none", ignore_index=-100)
    tok = tok.reshape(lb.shape)
    mask = (lb != -100).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp_min(1)


class _WithIds(torch.utils.data.Dataset):
    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]
        if not isinstance(item, dict):
            raise ConfigError(f"with_ids wraps data sets of dict items; item {i} is a {type(item).__name__}")
        return {**item, ID_KEY: i}


def with_ids(dataset):
    """The data set with each item's position as its stable id under ``"oppsig_id"``.

    A Hugging Face ``datasets.Dataset`` gets a column; any other map-style data set
    of dict items is wrapped.
    """
    if hasattr(dataset, "add_column") and hasattr(dataset, "column_names"):
        return dataset.add_column(ID_KEY, list(range(len(dataset))))
    return _WithIds(dataset)


class _Logits(nn.Module):
    """``x -> model(input_ids=x).logits``: the plain ``(x, y)`` interface of the curvature code."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(input_ids=x).logits


def _logits_of(output):
    """The logits of a forward's output (a ModelOutput or a dict), or None."""
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, dict):
        logits = output.get("logits")
    return logits


def _token_ce(logits, labels):
    return sequence_losses(logits, labels)


class OppsigCallback(TrainerCallback):
    """Records per-example losses and attributes loss spikes live in a ``transformers.Trainer`` run.

    Args:
        run_dir: the run directory to write (rank 0).
        num_examples: N, when example ids are ``0..N-1``; else pass ``index``.
        index: the stable ids of the training examples (N,).
        live: ``True`` (default settings), ``False``, a :class:`~oppsig.config.LiveConfig` or a dict of its fields.
        labels, classes: each example's class (N,) and the class names, to name groups.
        id_key: the batch key holding the example ids.
        per_example_loss: ``(logits, labels) -> (B,)`` (default :func:`sequence_losses`).
        probe: a loader of dict batches (with ids) recorded every ``probe_every`` steps (default: a seeded subset
            of the train dataloader's data set, planned from ``budget``, in a mini-batch run).
        probe_every: 0: record the training batches only (with ``probe`` given).
        budget: the planned probe's cost at most, a share of training time (0: no planned probe).
        record_batches: record the training batches' own losses (default True).
        sharpness_every, sharpness_batch: top Hessian eigenvalue every k steps on that dict batch.
        config: a YAML-able description of the run, saved as ``config.yaml``.
        overwrite: replace a run already in ``run_dir``.
        enabled: False: do nothing.
        dataset: the training set (``x``, ``y``, ``index`` tensors, e.g. an ArrayDataset): meta.json records its
            data fingerprint, which detect, report and export check (default: none; they warn).
    """

    def __init__(self, run_dir, num_examples: int | None = None, index=None, *, live: Any = True,
                 labels=None, classes=None, id_key: str = ID_KEY,
                 per_example_loss: Callable | None = None, probe=None, probe_every: int = 0,
                 record_batches: bool = True, sharpness_every: int = 0, sharpness_batch: dict | None = None,
                 config: dict | None = None, overwrite: bool = False, enabled: bool = True, dataset=None,
                 budget: float = 0.10) -> None:
        self.enabled = enabled
        self.core = callback_record(run_dir, num_examples, index, live, labels, classes, config, overwrite,
                                    probe=probe, probe_every=probe_every, sharpness_every=sharpness_every,
                                    sharpness_batch=sharpness_batch, batch_form="{'input_ids': ..., 'labels': ...}",
                                    dataset=dataset, budget=budget)
        self.budget, self._t0 = budget, 0.0
        self.id_key = id_key
        self.loss_of = per_example_loss or sequence_losses
        self.probe, self.probe_every, self.record_batches = probe, probe_every, record_batches
        self.sharpness_every, self.sharpness_batch = sharpness_every, sharpness_batch
        self._handles: list = []
        self._ids: torch.Tensor | None = None
        self._buf: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._probing = False
        self._sharp: dict = {}
        self._lr_used: float | None = None
        self._started = False
        self.replayer: BatchReplayer | None = None
        self._batch: dict | None = None  # the model inputs of the step's training forward
        self._to_log: dict[str, float] = {}

    # ------------------------------------------------------------------ forward hooks
    def _pre(self, module, args, kwargs):
        if self._probing:
            return args, kwargs
        ids = kwargs.pop(self.id_key, None)
        self._ids = ids
        if module.training and torch.is_grad_enabled():
            self._batch = dict(kwargs)
        return args, kwargs

    @contextlib.contextmanager
    def _quiet(self):
        """The model's forwards inside are not training batches (probe, sharpness, replay)."""
        before, self._probing = self._probing, True
        try:
            yield
        finally:
            self._probing = before

    def _post(self, module, args, kwargs, output):
        if self._probing or not (module.training and torch.is_grad_enabled()) or not self.record_batches:
            return None
        labels = kwargs.get("labels")
        logits = _logits_of(output)
        if labels is None or logits is None:
            raise ConfigError("OppsigCallback reads per-example losses from the forward's logits and labels; "
                              "this forward has " + ("no labels" if labels is None else "no logits"))
        if self._ids is None:
            raise ConfigError(f"the training batch has no {self.id_key!r}: wrap the data set with "
                              "oppsig.integrations.hf.with_ids(...) and set "
                              "TrainingArguments(remove_unused_columns=False)")
        with torch.no_grad():
            self._buf.append((self._ids.detach().reshape(-1), self.loss_of(logits.detach(), labels).float()))
        self._ids = None
        return None

    # ------------------------------------------------------------------ callback events
    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kw):
        if not self.enabled:
            return
        per_update = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        replay = (self._replay(args, train_dataloader) if self.core.cfg.enabled and self.core.cfg.replay is not False
                  else None)
        self.replayer = replay.get("replayer") if replay else None
        self.probe, self.probe_every = start_record(self.core, train_dataloader, per_update, state.max_steps,
                                                    self.probe, self.probe_every, self.budget, key=self.id_key,
                                                    replay=replay)
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post, with_kwargs=True)]
        self._started = True

    def _replay(self, args, loader) -> dict:
        """The keywords of the live session's replay: a :class:`BatchReplayer` of the batches this callback sees,
        or why there is none."""
        ds = getattr(loader, "dataset", None)
        if args.gradient_accumulation_steps > 1 or args.world_size > 1:
            return {"no_replay": "an update made of several batches or processes (gradient accumulation, DDP)"}
        if ds is None or isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
            return {"no_replay": "the train data set is not reachable, so the probe's examples cannot be measured"}
        key = self.id_key
        source = ExampleSource(ds, key, getattr(loader, "collate_fn", None),
                               strip=lambda b: {k: v for k, v in b.items() if k != key})
        rp = BatchReplayer(self.core.cfg.replay_window + 1,
                           lambda m, b: self.loss_of(_logits_of(m(**b)), b["labels"]), source,
                           clip=(float(args.max_grad_norm), "norm") if args.max_grad_norm > 0 else None,
                           guard=self._quiet, keep_out=[self])
        return {"replayer": rp}

    def on_step_begin(self, args, state, control, model=None, **kw):
        if self.replayer is not None and model is not None:
            self.replayer.step_start(model)
        self._t0 = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kw):
        if not self._started:
            return
        step = state.global_step
        if self.sharpness_every and step % self.sharpness_every == 0:
            sb = self.sharpness_batch
            with self._quiet():  # the solver's forwards are not training batches
                self._sharp = sharpness_on(_Logits(model), (sb["input_ids"], sb["labels"]), _token_ce, optimizer)
        self.core.before_update(step, model, optimizer)
        if optimizer is not None:
            self._lr_used = optimizer.param_groups[0]["lr"]  # after a live lr drop, if any
        if self.replayer is not None:
            self.replayer.before_update(optimizer)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
        if self._started and self.core.lr_drop is not None and optimizer is not None:
            self.core.lr_drop.undo(optimizer)  # before the scheduler steps

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        if not self._started:
            return
        step = state.global_step - 1
        self.core.seconds["train"] += time.perf_counter() - self._t0
        metrics = dict(self._sharp)
        self._sharp = {}
        if self._lr_used is not None:
            metrics["lr"], self._lr_used = self._lr_used, None
        if self._buf:
            ids = torch.cat([b[0] for b in self._buf])
            losses = torch.cat([b[1] for b in self._buf])
            self._buf.clear()
            metrics["loss"] = float(losses.mean())
            if self.replayer is not None and self._batch is not None:
                self.replayer.keep(step, ids, self._batch)
            self._batch = None
            ev = self.core.after_update(step, ids, losses, model, optimizer, metrics=metrics)
            values = logged_values(ev, self.core.actions)
            if values:
                self._to_log.update(values)
                control.should_log = True  # the Trainer logs this step; on_log adds the values
        if self.probe_every and step % self.probe_every == 0:
            t0 = time.perf_counter()
            self._probe(step, model)
            self.core.seconds["probe"] += time.perf_counter() - t0

    def on_log(self, args, state, control, logs=None, **kw):
        """The values of the spike events and actions since the last log, into the Trainer's logged dict (and its
        ``state.log_history`` entry)."""
        if not self._to_log or logs is None:
            return
        logs.update(self._to_log)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self._to_log)
        self._to_log = {}

    @torch.no_grad()
    def _probe(self, step: int, model) -> None:
        with self._quiet():
            ids, vals = [], []
            dev = next(model.parameters()).device
            for batch in self.probe:
                batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
                i = batch.pop(self.id_key)
                out = model(**batch)
                ids.append(torch.as_tensor(i).reshape(-1))
                vals.append(self.loss_of(_logits_of(out), batch["labels"]).float())
        self.core.log_probe(step, torch.cat(ids), torch.cat(vals))

    def on_train_end(self, args, state, control, **kw):
        if not self._started:
            return
        for h in self._handles:
            h.remove()
        self._handles = []
        self.core.close()
        self._started = False

    def weight_of(self, ids) -> torch.Tensor:
        """Loss weights of examples ``ids`` (1 unless ``live.downweight_group`` was down-weighted)."""
        return self.core.weight_of(ids)


__all__ = ["OppsigCallback", "with_ids", "sequence_losses", "ID_KEY"]
