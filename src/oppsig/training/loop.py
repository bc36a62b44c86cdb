"""The training loop: one config in, one run directory out.

``train(cfg)`` builds data, model and optimiser from a :class:`~oppsig.config.Config`,
trains for ``cfg.train.steps`` steps (full-batch GD over physical batches, or
mini-batch SGD/Adam on a seeded data order), records every example's loss
(``cfg.record``), calls hooks (curvature, user hooks), writes metrics and
checkpoints, and stops cleanly on divergence, goals or an interruption
(SIGINT/SIGTERM: after the current step, with everything flushed and a
checkpoint written).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data import build_datasets
from ..data.base import ArrayDataset
from ..errors import ConfigError, DivergenceError, OppsigWarning, StoreError
from ..losses import get_loss
from ..models import build_from_config
from ..optim import SAM, build_optimizer, is_full_batch, lr_at
from ..store.format import CONFIG, META, STORE, atomic_write, environment, read_json
from ..store.recorder import probe_losses
from ..store.rundir import RunLock, prepare_run_dir, start_over_command
from ..store.writer import MetricsWriter, StoreWriter
from . import hooks as hook_api
from .checkpoint import newest_intact, save_checkpoint
from .hooks import TrainState
from .step import full_batch_backward


@dataclass
class TrainResult:
    """What a finished (or stopped) run returns."""

    run_dir: Path | None
    next_step: int
    stopped: str  # max_steps | loss_goal | acc_goal | interrupted
    metrics: dict = field(default_factory=dict)
    model: nn.Module | None = None
    wall_time: float = 0.0
    resume_command: str | None = None


def resolve_device(name: str) -> torch.device:
    """The torch device of the config's ``device``.

    Raises:
        ConfigError: when the device is not available in this torch build or machine.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA device; "
                              "use --device=cpu (or --device=auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here; "
                              "use --device=cuda:0 (or --device=auto)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r}: MPS is not available here; use --device=cpu (or --device=auto)")
    return dev


def batch_rows(step: int, n: int, batch_size: int, seed: int, device) -> torch.Tensor:
    """Rows of the mini-batch of ``step``: epoch ``e`` is a permutation drawn from ``(seed, e)`` alone.

    The data order is therefore a pure function of the seed: resumed and branched
    runs see exactly the same batches.
    """
    per_epoch = math.ceil(n / batch_size)
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[pos * batch_size : (pos + 1) * batch_size].to(device)


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks after each step; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _numpy(a) -> np.ndarray:
    return a.float().cpu().numpy() if isinstance(a, torch.Tensor) and a.is_floating_point() else (
        a.cpu().numpy() if isinstance(a, torch.Tensor) else a)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, unit="step",
                mininterval=0.5)


# what meta.json says about how a run ended (removed when it is resumed, written again when it ends)
_END_KEYS = ("finished", "stopped", "next_step", "wall_time", "final", "diverged_at", "loss")


@dataclass(frozen=True, eq=False)
class TrainOptions:
    """How to run a config: everything :func:`train` takes besides the config.

    Attributes:
        run_dir: where to record (default ``"auto"``: ``<out_dir>/<name>``; None: nothing is written).
        hooks: extra hooks (see :mod:`oppsig.training.hooks`).
        resume: continue the run in ``run_dir`` from its newest intact checkpoint.
        overwrite: replace an existing run in ``run_dir`` (only files oppsig wrote; see
            :func:`~oppsig.store.rundir.prepare_run_dir`).
        progress: show a progress bar.
        data: (train, test) data sets to use instead of building them from ``cfg.data``.
        branch_from: a checkpoint dict (see :func:`~oppsig.training.load_checkpoint`) to start from: its
            model, step and RNG state (and optimiser state when the optimiser is the same).
        example_weights: float (N,) weight of each training example in the loss (default all 1).
    """

    run_dir: str | Path | None = "auto"
    hooks: Sequence[Any] = ()
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    data: tuple[ArrayDataset, ArrayDataset | None] | None = None
    branch_from: dict | None = None
    example_weights: torch.Tensor | None = None


class _Batch(NamedTuple):
    """The rows of one step's gradient: ``rows`` of ``x``/``y``/``w`` (None: all of them), ``size`` over all ranks."""

    rows: torch.Tensor | None
    size: int
    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor | None
    all_rows: torch.Tensor | None = None  # the whole mini-batch's rows, before the split over ranks


class Trainer:
    """Runs one training run; see :func:`train` and :class:`TrainOptions`."""

    def __init__(self, cfg: Config, options: TrainOptions | None = None) -> None:
        self.cfg = cfg
        self.options = options if options is not None else TrainOptions()
        rd = self.options.run_dir
        self.run_dir = Path(cfg.out_dir) / cfg.name if rd == "auto" else (Path(rd) if rd else None)
        self.progress = self.options.progress
        self.example_weights = self.options.example_weights
        self.store = self.metrics_out = None

    # ------------------------------------------------------------------ setup
    def _setup(self):
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        from ..distributed import context_from_env, device_for

        self.dist = context_from_env(cfg.device)
        self.device = device_for(self.dist, resolve_device(cfg.device))
        self.writes = self.run_dir is not None and self.dist.is_main
        if self.device.type == "cuda":  # training precision as asked; curvature always runs in full float32
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        self.dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        train_set, test_set = self.options.data if self.options.data is not None else build_datasets(cfg.data, seed=cfg.seed)
        if len(train_set) == 0:
            raise StoreError("the training set is empty; check data.n / data.per_class")
        self.train_set = train_set.to(self.device, self.dtype)
        self.test_set = test_set.to(self.device, self.dtype) if test_set is not None else None
        torch.manual_seed(cfg.seed)
        input_shape = tuple(self.train_set.x.shape[1:])
        self.model = build_from_config(cfg.model, input_shape, self.train_set.num_classes, self.device, self.dtype)
        self.model.train()
        self.forward_model = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters())
        self.loss_fn = get_loss(cfg.train.loss)
        # every step sees every example under gd, or when the mini-batch covers the data
        self.full_batch = is_full_batch(cfg.optim) or cfg.train.batch_size >= len(self.train_set)
        self.hooks = list(list(self.options.hooks))
        if cfg.curvature.every > 0:
            from ..curvature.hook import CurvatureHook

            self.hooks.insert(0, CurvatureHook(cfg.curvature))
        # probe set for mini-batch optimisers
        n = len(self.train_set)
        if not self.full_batch and cfg.record.probe_n and cfg.record.probe_n < n:
            g = np.random.default_rng(cfg.seed + 7)
            rows = np.sort(g.choice(n, size=cfg.record.probe_n, replace=False))
            self.probe_set = self.train_set.take(rows)
        else:
            self.probe_set = self.train_set
        # text: one recorded example per target token of the probe sequences (always by a probe forward)
        self.per_token = cfg.record.per_token and self.train_set.y.dim() > 1
        self.probe_record = not self.full_batch or self.per_token
        ids = self.probe_set.index.cpu().numpy()
        if self.per_token:
            t = self.train_set.y.shape[1]
            ids = (ids[:, None] * t + np.arange(t)[None, :]).reshape(-1)
        self.record_ids = ids
        # the sparse record of each mini-batch's own losses (no extra forward)
        self.batch_record = cfg.record.enabled and cfg.record.mode in ("batch", "both")
        self.dense_record = cfg.record.enabled and cfg.record.mode in ("dense", "both")
        if self.batch_record and self.full_batch:
            raise StoreError(f"record.mode={cfg.record.mode} records each mini-batch's losses, but this run trains on "
                             f"the full batch ({cfg.optim.name}); use record.mode=dense, which records every example "
                             "at every step from the training forward")

    # ------------------------------------------------------------------ the run directory
    def _claim_run_dir(self) -> tuple[RunLock | None, int, float, bool]:
        """Lock the run directory (the writing rank) and find where to start.

        Returns ``(lock, start step, wall time so far, resuming)``.
        """
        lock, start, wall0, resuming = None, 0, 0.0, False
        if self.run_dir is not None:
            if self.options.resume:
                if not self.run_dir.is_dir():
                    raise StoreError(f"cannot resume: {self.run_dir} does not exist (pass the run directory, "
                                     "e.g. runs/<name>)")
                if self.writes:
                    lock = RunLock(self.run_dir).acquire()
                try:
                    start, wall0 = self._resume_point()
                except BaseException:
                    if lock is not None:
                        lock.release()
                    raise
                resuming = True
            elif self.writes:
                lock = prepare_run_dir(self.run_dir, self.options.overwrite)
            self.dist.barrier()
        return lock, start, wall0, resuming

    def _resume_point(self) -> tuple[int, float]:
        """Load the newest intact checkpoint whose steps the record holds (last.pt, else a kept one)."""
        if self.cfg.record.enabled:
            self._record_limit = self._scan_record()  # raises when the record's bookkeeping is damaged
        usable = self._record_lacks if self.cfg.record.enabled else None
        ckpt, path, skipped = newest_intact(self.run_dir, usable, map_location=self.device)
        self.resumed_from = {"checkpoint": path.name, "skipped": skipped}
        if skipped:
            warnings.warn(f"{self.run_dir}: resuming from {path.name} at step {ckpt['step']} "
                          f"({'; '.join(skipped)}); later steps are recomputed", OppsigWarning, stacklevel=3)
        return self._load(ckpt)

    def _record_lacks(self, step: int) -> str | None:
        """None when the record holds every step before ``step`` that it should (so the run can resume there), else what it lacks."""
        limit, why = self._record_limit
        return None if step <= limit else f"the record is intact only before step {limit} ({why})"

    def _scan_record(self) -> tuple[int, str]:
        """``(limit, why)``: the record holds every step it should before ``limit``; ``why`` it stops there.

        Raises:
            StoreError: when the record's bookkeeping is damaged (resuming would cut it blindly).
        """
        from ..store.reader import open_run

        rd, every = self.run_dir, self.cfg.record.every
        meta = read_json(rd / META) if (rd / META).exists() else {}
        first = meta.get("first_step", 0)
        if not (rd / STORE).exists():
            return first, "store.zarr is missing"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OppsigWarning)
                run = open_run(rd)
        except StoreError as e:  # resuming would cut a record whose extent is unknown: refuse
            raise StoreError(f"cannot resume {rd}: its record is damaged ({e}); repair it, or start over with "
                             f"`{start_over_command(rd)}`") from None
        steps = run.steps
        if "first_step" not in meta and len(steps):
            first = int(steps[0])
        s0 = -(-first // every) * every  # the first step that is recorded
        bad = np.flatnonzero(steps != s0 + every * np.arange(len(steps)))
        k, why = (int(bad[0]), f"row {int(bad[0])} holds step {int(steps[bad[0]])}") if len(bad) else (len(steps), "")
        gap = min((g.row_lo for g in run.losses.gaps + run.correct.gaps), default=None)
        if gap is not None and gap < k:
            k, why = gap, f"chunk files of rows from {gap} are missing"
        if k == len(steps):
            why = f"it ends after {len(steps)} rows"
        return s0 + every * k, why

    def _open_outputs(self, start_step: int, resuming: bool) -> None:
        """Write config.yaml and meta.json; open the store and metrics (cut back to ``start_step`` when resuming)."""
        cfg, rd = self.cfg, self.run_dir
        self.store = self.metrics_out = self.batches = None
        if not self.writes:
            return
        atomic_write(rd / CONFIG, cfg.to_yaml())
        meta = {**environment(), "device": str(self.device), "data": self.train_set.name,
                "num_examples": len(self.train_set), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if resuming and (rd / META).exists():
            old = read_json(rd / META)
            ended = {k: old.pop(k) for k in _END_KEYS if k in old}  # this segment's end replaces them
            entry = {"step": start_step, **getattr(self, "resumed_from", {}), "after": ended.get("stopped"), **meta}
            meta = {**old, "resumed": old.get("resumed", []) + [entry]}
        else:
            meta["first_step"] = start_step
        atomic_write(rd / META, json.dumps(meta, indent=1))
        if cfg.record.enabled:
            rec_rows = len(range(0, cfg.train.steps, cfg.record.every))
            self.store = StoreWriter(
                rd, self.record_ids, capacity=max(rec_rows, 1), dtype=cfg.record.dtype,
                chunk_steps=cfg.record.chunk_steps, num_classes=self.train_set.num_classes,
                attrs={"config": cfg.to_dict(), **environment()}, resume=resuming,
            )
            if resuming:
                self.store.truncate_before(start_step)
            if self.batch_record:
                from ..store.batches import BatchWriter

                self.batches = BatchWriter(rd, self.train_set.index.cpu().numpy(), dtype=cfg.record.dtype,
                                           resume=resuming)
                if resuming:
                    self.batches.truncate_before(start_step)
        self.metrics_out = MetricsWriter(rd, resume_before=start_step if resuming else None)

    def _checkpoint(self, next_step: int, wall: float) -> None:
        """Flush the record, then write the checkpoint of ``next_step`` (so a resume finds every earlier step)."""
        if not self.writes:
            return
        if self.store is not None:
            self.store.flush()
        if self.batches is not None:
            self.batches.flush()
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": next_step,
            "rng": torch.get_rng_state(),
            "wall_time": wall,
            "config": self.cfg.to_dict(),
            "hooks": {str(i): h.state_dict() for i, h in enumerate(self.hooks) if hasattr(h, "state_dict")},
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        save_checkpoint(self.run_dir, state, keep=self.cfg.train.keep_checkpoints)

    def _load(self, ckpt: dict) -> tuple[int, float]:
        """Restore model, optimiser, RNG and hook state from a checkpoint of this run; returns (step, wall time)."""
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if "rng" in ckpt:
                torch.set_rng_state(ckpt["rng"])
            if "cuda_rng" in ckpt and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise StoreError(f"the checkpoint of {self.run_dir} does not fit this config ({type(e).__name__}: "
                             f"{(str(e).strip().splitlines() or [''])[0][:100]}); resume with the run's own "
                             "config.yaml, without overrides of the model or optimiser") from None
        for i, h in enumerate(self.hooks):
            d = ckpt.get("hooks", {}).get(str(i))
            if d is not None and hasattr(h, "load_state_dict"):
                h.load_state_dict(d)
        return int(ckpt["step"]), float(ckpt.get("wall_time", 0.0))

    def _branch_from(self, ckpt: dict) -> tuple[int, float]:
        """Start from another run's checkpoint: its model, step and RNG; its optimiser state only if the optimiser is the same."""
        self.model.load_state_dict(ckpt["model"])
        same = ckpt.get("config", {}).get("optim", {}).get("name") == self.cfg.optim.name
        if same and "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        return int(ckpt["step"]), 0.0

    @torch.no_grad()
    def _evaluate(self, data: ArrayDataset) -> tuple[float, float]:
        was = self.model.training
        self.model.eval()
        try:
            # per token for sequences: the mean over every target token (all sequences have the same length)
            _, losses, correct = probe_losses(self.model, data, self.loss_fn, self.cfg.train.physical_batch_size,
                                              per_token=True)
        finally:
            self.model.train(was)
        return float(losses.mean()), float(correct.mean())

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        self._setup()
        lock, start, wall0, resuming = self._claim_run_dir()
        try:
            if self.options.branch_from is not None and not resuming:
                start, wall0 = self._branch_from(self.options.branch_from)
            self._open_outputs(start, resuming)
            if not resuming and self.cfg.train.keep_checkpoints and self.cfg.train.checkpoint_every:
                self._checkpoint(start, wall0)  # the starting point, so any step can be replayed exactly
            return self._loop(start, wall0)
        finally:
            if self.metrics_out is not None:
                self.metrics_out.close()
            if lock is not None:
                lock.release()
            self.dist.close()  # the process group it started, if any (not one a caller started)

    def _loop(self, start: int, wall0: float) -> TrainResult:
        """Steps ``start .. cfg.train.steps - 1`` (or until a goal, a signal or divergence), then :meth:`_finish`."""
        cfg = self.cfg
        self._shard()
        state = TrainState(step=start, model=self.model, optimizer=self.optimizer, config=cfg,
                           train_data=self.train_set, loss_fn=self.loss_fn, device=self.device, run_dir=self.run_dir,
                           extras={"dist": self.dist, "example_weights": self._full[2]})
        hook_api.call(self.hooks, "on_train_start", state)
        self._t0 = time.perf_counter()
        stopped, metrics, step = "max_steps", {}, start
        bar = _progress(cfg.train.steps, start, cfg.name, self.progress and self.dist.is_main)
        try:
            with _StopFlag() as stop:
                for step in range(start, cfg.train.steps):
                    metrics = self._step(step, state, wall0)
                    self._bar(bar, metrics)
                    stopped = self._after_step(step, metrics, wall0, stop)
                    if stopped is not None:
                        break
                else:
                    step, stopped = cfg.train.steps - 1, "max_steps"
        finally:
            bar.close()
            if self.store is not None:
                self.store.flush()
            if self.batches is not None:
                self.batches.flush()
        return self._finish(state, step + 1 if metrics else start, stopped, metrics, wall0)

    # ------------------------------------------------------------------ one step
    def _shard(self) -> None:
        """This rank's share of the data (all of it without DDP), and the DDP gradient-sync context."""
        D, n = self.dist, len(self.train_set)
        X, Y = self.train_set.x, self.train_set.y
        W = None if self.example_weights is None else self.example_weights.to(self.device, X.dtype)
        lo, hi = D.shard(n)
        self._full = (X, Y, W)
        self._local = (X[lo:hi], Y[lo:hi], None if W is None else W[lo:hi]) if D.enabled else (X, Y, W)
        self._sync = (lambda last: nullcontext() if last else self.forward_model.no_sync()) if D.enabled else None
        p_lo, p_hi = D.shard(len(self.probe_set))
        self._probe_local = self.probe_set.take(np.arange(p_lo, p_hi)) if D.enabled else self.probe_set

    def _step(self, step: int, state: TrainState, wall0: float) -> dict:
        """Step ``step``: hooks, probe, gradient, update, record; returns the step's metrics row."""
        cfg, rec = self.cfg, self.cfg.record
        lr = lr_at(cfg.optim, step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        state.step, state.lr, state.metrics = step, lr, {}
        state.per_example_loss = state.per_example_correct = None
        hook_api.call(self.hooks, "on_step_start", state)
        # decided alike on every rank (collectives follow), written by rank 0 only
        recording = rec.enabled and self.run_dir is not None
        record_now = recording and self.dense_record and step % rec.every == 0
        logits_now = recording and rec.logits_every > 0 and step % rec.logits_every == 0
        probe = self._probe(logits_now) if record_now and self.probe_record else None
        self.optimizer.zero_grad(set_to_none=True)
        batch = self._batch(step)
        losses, accuracy, logits = self._gradient(batch, want_logits=logits_now and not self.probe_record)
        loss = float(losses.mean())
        if not math.isfinite(loss):
            self._diverged(step, loss, lr)
        self._update(batch)
        acc = float(accuracy.mean())  # per target: per token for sequences of equal length
        correct = accuracy > 0.5  # the record's per-example correctness: most of its targets right
        state.per_example_loss, state.per_example_correct = losses, correct
        state.metrics.update({"step": step, "loss": loss, "accuracy": acc, "lr": lr})
        if self.test_set is not None and cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0:
            state.metrics["test_loss"], state.metrics["test_accuracy"] = self._evaluate(self.test_set)
        hook_api.call(self.hooks, "on_step_end", state)
        state.metrics["wall_time"] = wall0 + time.perf_counter() - self._t0
        if record_now:
            self._record(step, probe if probe is not None else (None, losses, correct, logits), logits_now)
        if self.batches is not None and batch.all_rows is not None:  # the sparse record: the batch's own losses
            self.batches.append(step, _numpy(batch.all_rows), _numpy(losses), _numpy(correct))
        if self.metrics_out is not None:
            self.metrics_out.write(state.metrics)
        return state.metrics

    def _probe(self, logits_now: bool) -> tuple:
        """``(ids, losses, correct[, logits])`` of the probe set at the current parameters, gathered over ranks."""
        D = self.dist
        probe = probe_losses(self.model, self._probe_local, self.loss_fn, self.cfg.train.physical_batch_size,
                             return_logits=logits_now, per_token=self.per_token)
        if D.enabled:
            m_all = len(self.record_ids)
            probe = (self.record_ids,) + tuple(D.gather_rows(torch.as_tensor(a), m_all).numpy() for a in probe[1:])
        return probe

    def _batch(self, step: int) -> _Batch:
        """The rows of step ``step``: every example (full batch) or the seeded mini-batch, this rank's share."""
        if self.full_batch:
            return _Batch(None, len(self.train_set), *self._local)
        all_rows = batch_rows(step, len(self.train_set), self.cfg.train.batch_size, self.cfg.seed, self.device)
        rows, size = all_rows, len(all_rows)
        if self.dist.enabled:
            lo, hi = self.dist.shard(size)
            rows = rows[lo:hi]
        return _Batch(rows, size, *self._full, all_rows=all_rows)

    def _gradient(self, batch: _Batch, want_logits: bool = False):
        """Accumulate the mean-loss gradient of ``batch``; per-example losses, accuracy (and logits), over all ranks."""
        cfg, D = self.cfg, self.dist
        amp = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and self.device.type == "cuda"
               else nullcontext())
        with amp:
            losses, accuracy, logits = full_batch_backward(
                self.forward_model, batch.x, batch.y, self.loss_fn, cfg.train.physical_batch_size, rows=batch.rows,
                want_logits=want_logits, denominator=batch.size / D.world, sync=self._sync, weights=batch.w)
        if D.enabled:
            losses = D.gather_rows(losses, batch.size)
            accuracy = D.gather_rows(accuracy, batch.size)
            if logits is not None:
                logits = D.gather_rows(logits, batch.size)
        return losses, accuracy, logits

    def _update(self, batch: _Batch) -> None:
        """The optimiser step (SAM: a second gradient at the ascent point, on the same rows)."""
        if isinstance(self.optimizer, SAM):
            self.optimizer.first_step(zero_grad=True)
            full_batch_backward(self.forward_model, batch.x, batch.y, self.loss_fn, self.cfg.train.physical_batch_size,
                                rows=batch.rows, denominator=batch.size / self.dist.world, sync=self._sync,
                                weights=batch.w)
            self.optimizer.second_step()
        else:
            self.optimizer.step()

    def _record(self, step: int, probe: tuple, logits_now: bool) -> None:
        """Append the row of ``step`` (``(ids, losses, correct, logits)``) to the store, with its logits when due."""
        if self.store is None:
            return
        _, losses, correct, logits = (tuple(probe) + (None,))[:4]
        self.store.append(step, _numpy(losses), _numpy(correct))
        if logits_now and logits is not None:
            self.store.write_logits(step, _numpy(logits))

    def _after_step(self, step: int, metrics: dict, wall0: float, stop: "_StopFlag") -> str | None:
        """Checkpoint when due; the reason to stop after ``step`` (a goal or a signal), or None to go on."""
        cfg, D = self.cfg, self.dist
        done = step + 1
        if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.train.steps:
            self._checkpoint(done, wall0 + time.perf_counter() - self._t0)
        if cfg.train.loss_goal is not None and metrics["loss"] < cfg.train.loss_goal:
            return "loss_goal"
        if cfg.train.acc_goal is not None and metrics["accuracy"] >= cfg.train.acc_goal:
            return "acc_goal"
        stop_now = stop.signum is not None
        if D.enabled:  # every rank stops at the same step
            stop_now = bool(D.all_reduce_(torch.tensor([float(stop_now)], device=self.device)).item() > 0)
        return "interrupted" if stop_now else None

    # ------------------------------------------------------------------ the end
    def _finish(self, state: TrainState, next_step: int, stopped: str, metrics: dict, wall0: float) -> TrainResult:
        """Final evaluation, checkpoint, ``on_train_end``, and the run's end in meta.json."""
        wall = wall0 + time.perf_counter() - self._t0
        if self.test_set is not None:
            metrics = dict(metrics)
            metrics["test_loss"], metrics["test_accuracy"] = self._evaluate(self.test_set)
        self._checkpoint(next_step, wall)
        hook_api.call(self.hooks, "on_train_end", state)
        if self.writes:
            self._update_meta({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stopped": stopped,
                               "next_step": next_step, "wall_time": wall, "final": metrics})
        resume_cmd = None
        if stopped == "interrupted" and self.writes:
            resume_cmd = f"oppsig train --resume {self.run_dir}"
        return TrainResult(self.run_dir, next_step, stopped, metrics, self.model, wall, resume_cmd)

    def _update_meta(self, facts: dict) -> None:
        meta = read_json(self.run_dir / META)
        meta.update(facts)
        atomic_write(self.run_dir / META, json.dumps(meta, indent=1, default=float))

    def _diverged(self, step: int, loss: float, lr: float) -> None:
        where = ""
        if self.run_dir is not None:
            if self.store is not None:
                self.store.flush()
            where = f"; steps before {step} are saved in {self.run_dir}"
            if self.writes:
                self._update_meta({"stopped": "diverged", "diverged_at": step, "loss": str(loss)})
        raise DivergenceError(
            f"training diverged: the loss is {loss} at step {step} (lr {lr:g}); "
            f"try a smaller learning rate, e.g. --optim.lr={lr / 2:g}{where}"
        )

    @staticmethod
    def _bar(bar, m: dict) -> None:
        if bar.disable:
            bar.update(1)
            return
        post = {"loss": f"{m['loss']:.4f}", "acc": f"{m['accuracy']:.3f}"}
        key = "precond_sharpness" if "precond_sharpness" in m else "sharpness"  # the one the threshold is for
        if key in m and "threshold" in m:
            unconverged = m.get(f"converged/{key}") == 0.0
            post["precond" if key != "sharpness" else "sharp"] = (f"{m[key]:.1f}/{m['threshold']:.1f}"
                                                                 + (" (not converged)" if unconverged else ""))
        if not getattr(bar, "warmed_up", False):
            # the first step of a process carries the warm-up (data on the device, the first sharpness
            # measurement with its presample): counted without a rate sample, and the clock restarts after it,
            # so the rate and the time left describe ordinary steps
            bar.n += 1
            bar.initial = bar.last_print_n = bar.n  # no rate until ordinary steps are timed
            bar.warmed_up = True
            bar.unpause()
            bar.set_postfix(post, refresh=True)
            return
        bar.set_postfix(post, refresh=False)
        bar.update(1)




def train(cfg: Config, **options) -> TrainResult:
    """Train as ``cfg`` says and record the run (in ``<out_dir>/<name>`` unless ``run_dir`` says otherwise).

    Args:
        cfg: the run's config.
        **options: the fields of :class:`TrainOptions`: ``run_dir`` (None: nothing written), ``hooks``,
            ``resume``, ``overwrite``, ``progress``, ``data``, ``branch_from``, ``example_weights``.

    Example:
        >>> res = train(load_config(None, ["train.steps=5"]), run_dir=None, progress=False)   # doctest: +SKIP
        >>> res.next_step, res.stopped                                                        # doctest: +SKIP
        (5, 'max_steps')

    Raises:
        DivergenceError: the loss became NaN/inf (everything before is saved).
        RunExistsError / RunLockedError / StoreError: run-directory problems; with ``resume``, no
            intact checkpoint to continue from.
        DataNotFoundError / ConfigError: bad data or config.
    """
    return Trainer(cfg, TrainOptions(**options)).run()
