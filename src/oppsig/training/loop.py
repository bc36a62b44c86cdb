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
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data import build_datasets
from ..data.base import ArrayDataset
from ..errors import DivergenceError, StoreError
from ..losses import get_loss
from ..models import build_from_config
from ..optim import SAM, build_optimizer, is_full_batch, lr_at
from ..store.format import CONFIG, META, atomic_write_text, environment
from ..store.recorder import prepare_run_dir, probe_losses
from ..store.writer import MetricsWriter, StoreWriter
from . import hooks as hook_api
from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from .hooks import TrainState
from .lock import RunLock
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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, unit="step",
                mininterval=0.5)


class Trainer:
    """Runs one training run; see :func:`train`."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path | None = "auto",
        hooks: list | tuple = (),
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        data: tuple[ArrayDataset, ArrayDataset | None] | None = None,
        init_state: dict | None = None,
        example_weights: torch.Tensor | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.out_dir) / cfg.name if run_dir == "auto" else (Path(run_dir) if run_dir else None)
        self.user_hooks = list(hooks)
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self._data = data
        self.init_state = init_state
        self.example_weights = example_weights

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
        train_set, test_set = self._data if self._data is not None else build_datasets(cfg.data, seed=cfg.seed)
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
        self.hooks = list(self.user_hooks)
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

    def _open_outputs(self, start_step: int, resuming: bool) -> None:
        cfg, rd = self.cfg, self.run_dir
        self.store = self.metrics_out = self.batches = None
        if not self.writes:
            return
        atomic_write_text(rd / CONFIG, cfg.to_yaml())
        meta = {**environment(), "device": str(self.device), "data": self.train_set.name,
                "num_examples": len(self.train_set), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if resuming and (rd / META).exists():
            old = json.loads((rd / META).read_text())
            meta = {**old, "resumed": old.get("resumed", []) + [{"step": start_step, **meta}]}
        atomic_write_text(rd / META, json.dumps(meta, indent=1))
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
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        if "cuda_rng" in ckpt and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
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
        start, wall0 = 0, 0.0
        lock = None
        resuming = False
        if self.run_dir is not None:
            if self.resume:
                if not self.run_dir.exists():
                    raise StoreError(f"cannot resume: {self.run_dir} does not exist")
                if self.writes:
                    lock = RunLock(self.run_dir).acquire()
                if checkpoint_path(self.run_dir).exists():
                    ckpt = load_checkpoint(self.run_dir, map_location=self.device)
                    start, wall0 = self._load(ckpt)
                    resuming = True
            elif self.writes:
                prepare_run_dir(self.run_dir, self.overwrite)
                lock = RunLock(self.run_dir).acquire()
            self.dist.barrier()
        if self.init_state is not None and not resuming:
            start, wall0 = self._branch_from(self.init_state)
        try:
            self._open_outputs(start, resuming)
            if not resuming and self.cfg.train.keep_checkpoints and self.cfg.train.checkpoint_every:
                self._checkpoint(start, wall0)  # the starting point, so any step can be replayed exactly
            return self._loop(start, wall0)
        finally:
            if self.metrics_out is not None:
                self.metrics_out.close()
            if lock is not None:
                lock.release()

    def _loop(self, start: int, wall0: float) -> TrainResult:
        cfg = self.cfg
        X, Y = self.train_set.x, self.train_set.y
        n = len(self.train_set)
        W = None if self.example_weights is None else self.example_weights.to(self.device, X.dtype)
        rec = cfg.record
        state = TrainState(step=start, model=self.model, optimizer=self.optimizer, config=cfg,
                           train_data=self.train_set, loss_fn=self.loss_fn, device=self.device, run_dir=self.run_dir,
                           extras={"dist": self.dist, "example_weights": W})
        hook_api.call(self.hooks, "on_train_start", state)
        t0 = time.perf_counter()
        stopped = "max_steps"
        metrics: dict = {}
        bar = _progress(cfg.train.steps, start, cfg.name, self.progress and self.dist.is_main)
        D = self.dist
        lo, hi = D.shard(n)
        X_local, Y_local = (X[lo:hi], Y[lo:hi]) if D.enabled else (X, Y)
        W_local = W[lo:hi] if (D.enabled and W is not None) else W
        sync = (lambda last: nullcontext() if last else self.forward_model.no_sync()) if D.enabled else None
        p_lo, p_hi = D.shard(len(self.probe_set))
        probe_local = self.probe_set.take(np.arange(p_lo, p_hi)) if D.enabled else self.probe_set
        step = start
        try:
            with _StopFlag() as stop:
                for step in range(start, cfg.train.steps):
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
                    probe = None
                    if record_now and self.probe_record:
                        probe = probe_losses(self.model, probe_local, self.loss_fn, cfg.train.physical_batch_size,
                                             return_logits=logits_now, per_token=self.per_token)
                        if D.enabled:
                            m_all = len(self.record_ids)
                            probe = (self.record_ids,) + tuple(
                                D.gather_rows(torch.as_tensor(a), m_all).numpy() for a in probe[1:])
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.full_batch:
                        rows, b_global = None, n
                    else:
                        rows = batch_rows(step, n, cfg.train.batch_size, cfg.seed, self.device)
                        rows_global = rows
                        b_global = len(rows)
                        if D.enabled:
                            b_lo, b_hi = D.shard(b_global)
                            rows = rows[b_lo:b_hi]
                    xs, ys, ws = (X_local, Y_local, W_local) if self.full_batch else (X, Y, W)
                    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and self.device.type == "cuda"
                           else nullcontext())
                    with amp:
                        losses, accuracy, logits = full_batch_backward(
                            self.forward_model, xs, ys, self.loss_fn, cfg.train.physical_batch_size, rows=rows,
                            want_logits=logits_now and not self.probe_record, denominator=b_global / D.world,
                            sync=sync, weights=ws)
                    if D.enabled:
                        losses = D.gather_rows(losses, b_global)
                        accuracy = D.gather_rows(accuracy, b_global)
                        if logits is not None:
                            logits = D.gather_rows(logits, b_global)
                    loss = float(losses.mean())
                    if not math.isfinite(loss):
                        self._diverged(step, loss, lr)
                    if isinstance(self.optimizer, SAM):  # a second gradient at the ascent point, same rows
                        self.optimizer.first_step(zero_grad=True)
                        full_batch_backward(self.forward_model, xs, ys, self.loss_fn, cfg.train.physical_batch_size,
                                            rows=rows, denominator=b_global / D.world, sync=sync, weights=ws)
                        self.optimizer.second_step()
                    else:
                        self.optimizer.step()
                    acc = float(accuracy.mean())  # per target: per token for sequences of equal length
                    correct = accuracy > 0.5  # the record's per-example correctness: most of its targets right
                    state.per_example_loss, state.per_example_correct = losses, correct
                    metrics = {"step": step, "loss": loss, "accuracy": acc, "lr": lr}
                    state.metrics.update(metrics)
                    if self.test_set is not None and cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0:
                        state.metrics["test_loss"], state.metrics["test_accuracy"] = self._evaluate(self.test_set)
                    hook_api.call(self.hooks, "on_step_end", state)
                    state.metrics["wall_time"] = wall0 + time.perf_counter() - t0
                    metrics = state.metrics
                    if record_now and self.store is not None:
                        if not self.probe_record:
                            self.store.append(step, losses.cpu().numpy(), correct.cpu().numpy())
                            if logits_now:
                                self.store.write_logits(step, logits.float().cpu().numpy())
                        else:
                            self.store.append(step, probe[1], probe[2])
                            if logits_now:
                                self.store.write_logits(step, probe[3])
                    if self.batches is not None and not self.full_batch:
                        self.batches.append(step, rows_global.cpu().numpy(), losses.cpu().numpy(),
                                            correct.cpu().numpy())
                    if self.metrics_out is not None:
                        self.metrics_out.write(metrics)
                    self._bar(bar, metrics)
                    done = step + 1
                    if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.train.steps:
                        self._checkpoint(done, wall0 + time.perf_counter() - t0)
                    if cfg.train.loss_goal is not None and loss < cfg.train.loss_goal:
                        stopped = "loss_goal"
                        break
                    if cfg.train.acc_goal is not None and acc >= cfg.train.acc_goal:
                        stopped = "acc_goal"
                        break
                    stop_now = stop.signum is not None
                    if D.enabled:  # every rank stops at the same step
                        stop_now = bool(D.all_reduce_(torch.tensor([float(stop_now)], device=self.device)).item() > 0)
                    if stop_now:
                        stopped = "interrupted"
                        break
                else:
                    step = cfg.train.steps - 1
        finally:
            bar.close()
            if self.store is not None:
                self.store.flush()
            if self.batches is not None:
                self.batches.flush()
        next_step = step + 1 if metrics else start
        wall = wall0 + time.perf_counter() - t0
        if self.test_set is not None:
            metrics = dict(metrics)
            metrics["test_loss"], metrics["test_accuracy"] = self._evaluate(self.test_set)
        self._checkpoint(next_step, wall)
        hook_api.call(self.hooks, "on_train_end", state)
        if self.writes:
            meta = json.loads((self.run_dir / META).read_text())
            meta.update({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stopped": stopped,
                         "next_step": next_step, "wall_time": wall, "final": metrics})
            atomic_write_text(self.run_dir / META, json.dumps(meta, indent=1, default=float))
        resume_cmd = None
        if stopped == "interrupted" and self.writes:
            resume_cmd = f"oppsig train --resume {self.run_dir}"
        return TrainResult(self.run_dir, next_step, stopped, metrics, self.model, wall, resume_cmd)

    def _diverged(self, step: int, loss: float, lr: float) -> None:
        where = ""
        if self.run_dir is not None:
            if self.store is not None:
                self.store.flush()
            where = f"; steps before {step} are saved in {self.run_dir}"
            if self.writes:
                meta = json.loads((self.run_dir / META).read_text())
                meta.update({"stopped": "diverged", "diverged_at": step, "loss": str(loss)})
                atomic_write_text(self.run_dir / META, json.dumps(meta, indent=1))
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


def train(
    cfg: Config,
    run_dir: str | Path | None = "auto",
    hooks: list | tuple = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: tuple[ArrayDataset, ArrayDataset | None] | None = None,
    branch_from: dict | None = None,
    example_weights: torch.Tensor | None = None,
) -> TrainResult:
    """Train as ``cfg`` says and record the run in ``run_dir`` (default ``<out_dir>/<name>``; None: nothing written).

    Args:
        cfg: the run's config.
        hooks: extra hooks (see :mod:`oppsig.training.hooks`).
        resume: continue the run in ``run_dir`` from its last checkpoint.
        overwrite: replace an existing run in ``run_dir``.
        progress: show a progress bar.
        data: (train, test) data sets to use instead of building them from ``cfg.data``.
        branch_from: a checkpoint dict (see :func:`~oppsig.training.load_checkpoint`) to start from: its
            model, step and RNG state (and optimiser state when the optimiser is the same).
        example_weights: float (N,) weight of each training example in the loss (default all 1).

    Raises:
        DivergenceError: the loss became NaN/inf (everything before is saved).
        RunExistsError / RunLockedError / StoreError: run-directory problems.
        DataNotFoundError / ConfigError: bad data or config.
    """
    return Trainer(cfg, run_dir, hooks, resume, overwrite, progress, data, branch_from, example_weights).run()
