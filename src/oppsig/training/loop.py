"""The training loop: one config in, one run directory out.

``train(cfg)`` builds data, model and optimiser from a :class:`~oppsig.config.Config`
(:func:`~oppsig.training.build.build_run`), trains for ``cfg.train.steps`` steps (full-batch GD
over physical batches, or mini-batch SGD/Adam on a seeded data order), records every example's
loss (``cfg.record``), calls hooks (curvature, user hooks), writes metrics and checkpoints, and
stops cleanly on divergence, goals or an interruption (SIGINT/SIGTERM: after the current step,
with everything flushed and a checkpoint written).

Each step ``t``: set the lr; ``on_step_start``; probe the record's row (mini-batch runs); the
gradient of the step's rows and the per-example losses; the optimiser step; metrics;
``on_step_end``; write the record and the metrics row; checkpoint when due; stop on a goal or a signal.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..data.base import ArrayDataset
from ..errors import DivergenceError, StoreError
from ..store.recorder import probe_losses
from ..store.rundir import start_over_command
from . import hooks as hook_api
from .build import RunParts, TrainOptions, build_run, resolve_device
from .checkpoint import checkpoint_path, hook_states, list_checkpoints, save_checkpoint
from .hooks import TrainState
from .progress import Progress
from .record import Outputs, numpy, open_outputs, probe, record_row, update_meta
from .rerun import StepReplayer
from .resume import branch_from, claim_run_dir
from .step import batch_backward, batch_rows, gradient, optimizer_step, step_batch

__all__ = ["train", "Trainer", "TrainResult", "TrainOptions", "resolve_device", "batch_rows"]


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
    probe: dict | None = None  # a mini-batch run's probe: its plan and its measured share of training time


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks after each step; a second SIGINT aborts at once. A handler
    it replaces that says it was ``interrupted`` (the command line's) stops the run before its first step: the
    KeyboardInterrupt it raised was lost (raised inside a finaliser, which swallows it)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
            if getattr(self._old[signal.SIGINT], "interrupted", False):  # a Ctrl-C that a finaliser swallowed
                self.__exit__()
                raise KeyboardInterrupt
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def run(p: RunParts) -> TrainResult:
    """Train the built run ``p`` from its start (new, resumed or branched) to its end; see :func:`train`."""
    lock, start = claim_run_dir(p)
    out = None
    try:
        if p.options.branch_from is not None and not start.resuming:
            start = branch_from(p, p.options.branch_from)
        out = open_outputs(p, start)
        if not start.resuming and p.cfg.train.keep_checkpoints and p.cfg.train.checkpoint_every:
            _checkpoint(p, out, start.step, start.wall)  # the starting point, so any step can be replayed exactly
        try:
            return _loop(p, out, start.step, start.wall)
        except StoreError as e:
            raise _without_resume_point(p, e) from None
    finally:
        if out is not None and out.metrics is not None:
            out.metrics.close()
        if lock is not None:
            lock.release()
        p.dist.close()  # the process group it started, if any (not one a caller started)


def _without_resume_point(p: RunParts, e: StoreError) -> StoreError:
    """A write error that advises a resume, where there is no checkpoint to resume from: advise starting over."""
    text = str(e)
    if not p.writes or "and resume the run" not in text or checkpoint_path(p.run_dir).exists() \
            or list_checkpoints(p.run_dir):
        return e
    return StoreError(f"{text.split('; fix the cause')[0]}; no checkpoint was written yet to resume from "
                      f"(train.checkpoint_every={p.cfg.train.checkpoint_every}): fix the cause (e.g. free disk "
                      f"space) and start over with `{start_over_command(p.run_dir)}`")


def _loop(p: RunParts, out: Outputs, start: int, wall0: float) -> TrainResult:
    """Steps ``start .. cfg.train.steps - 1`` (or until a goal, a signal or divergence), then the run's end."""
    cfg, rec = p.cfg, p.cfg.record
    state = TrainState(step=start, model=p.model, optimizer=p.optimizer, config=cfg, train_data=p.train_set,
                       loss_fn=p.loss_fn, device=p.device, run_dir=p.run_dir,
                       extras={"dist": p.dist, "example_weights": p.full[2],
                               "replayer": None if p.dist.enabled else StepReplayer(p)})
    hook_api.call(p.hooks, "on_train_start", state)
    t0 = time.perf_counter()

    def clock() -> float:  # the run's wall time, over all its segments
        return wall0 + time.perf_counter() - t0

    recording = rec.enabled and p.run_dir is not None  # decided alike on every rank, written by rank 0 only
    stopped, metrics, step = "max_steps", {}, start
    cost = _ProbeCost(p.probe_plan if recording else None, len(p.train_set), p.options.progress and p.writes)
    bar = Progress(cfg.train.steps, start, cfg.name, p.options.progress and p.dist.is_main)
    try:
        with _StopFlag() as stop:
            for step in range(start, cfg.train.steps):
                lr = p.lr(step)
                for g in p.optimizer.param_groups:
                    g["lr"] = lr
                state.step, state.lr, state.metrics = step, lr, {}
                state.per_example_loss = state.per_example_correct = state.per_example_rows = None
                hook_api.call(p.hooks, "on_step_start", state)
                record_now = recording and p.dense_record and step % rec.every == 0
                logits_now = recording and rec.logits_every > 0 and step % rec.logits_every == 0
                with cost.probe():
                    row = probe(p, logits_now) if record_now and p.probe_record else None
                # the step: gradient and per-example losses of its rows at theta_t, then the update
                with cost.train():
                    p.optimizer.zero_grad(set_to_none=True)
                    batch = step_batch(p, step)
                    losses, accuracy, logits = gradient(p, batch, want_logits=logits_now and not p.probe_record)
                    loss = float(losses.mean())
                    if not math.isfinite(loss):
                        _diverged(p, out, step, loss, lr)
                    optimizer_step(p.optimizer, lambda: batch_backward(p, batch))
                correct = accuracy > 0.5  # the record's per-example correctness: most of its targets right
                state.per_example_loss, state.per_example_correct = losses, correct
                state.per_example_rows = batch.all_rows
                # accuracy per target: per token for sequences of equal length
                state.metrics.update({"step": step, "loss": loss, "accuracy": float(accuracy.mean()), "lr": lr})
                if p.test_set is not None and cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0:
                    state.metrics["test_loss"], state.metrics["test_accuracy"] = evaluate(p, p.test_set)
                hook_api.call(p.hooks, "on_step_end", state)
                state.metrics["wall_time"] = clock()
                # the record: the probe's row (or the training forward's), and the mini-batch's own losses
                if record_now:
                    record_row(out, step, row if row is not None else (None, losses, correct, logits), logits_now)
                if out.batches is not None and batch.all_rows is not None:
                    out.batches.append(step, numpy(batch.all_rows), numpy(losses), numpy(correct))
                if out.metrics is not None:
                    out.metrics.write(state.metrics)
                metrics = state.metrics
                bar.step(metrics)
                # checkpoint when due; stop after this step on a goal or a signal
                done = step + 1
                if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.train.steps:
                    _checkpoint(p, out, done, clock())
                stopped = _stop_reason(p, metrics, stop)
                if stopped is not None:
                    break
            else:
                step, stopped = cfg.train.steps - 1, "max_steps"
    finally:
        bar.close()
        out.flush()
    return _finish(p, out, state, step + 1 if metrics else start, stopped, metrics, clock(), cost.report())


class _ProbeCost:
    """Times the probe's forwards and the training steps of a mini-batch run with a planned probe."""

    def __init__(self, plan, num_examples: int, say: bool) -> None:
        self.plan, self.t = plan, {"probe": 0.0, "train": 0.0}
        if plan is not None and say:
            print(plan.describe(num_examples), flush=True)

    @contextlib.contextmanager
    def _timed(self, key: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[key] += time.perf_counter() - t0

    def probe(self):
        return self._timed("probe") if self.plan is not None else contextlib.nullcontext()

    def train(self):
        return self._timed("train") if self.plan is not None else contextlib.nullcontext()

    def report(self) -> dict | None:
        """The plan, and the probe's measured time over the training steps' (this segment of the run)."""
        if self.plan is None:
            return None
        share = self.t["probe"] / self.t["train"] if self.t["train"] > 0 else float("nan")
        return {"n": self.plan.n, "every": self.plan.every, "budget": self.plan.budget,
                "planned_share": round(self.plan.share, 4), "measured_share": round(share, 4),
                "probe_seconds": round(self.t["probe"], 3), "train_seconds": round(self.t["train"], 3)}


def _stop_reason(p: RunParts, metrics: dict, stop: _StopFlag) -> str | None:
    """Why to stop after this step (a goal reached, or a signal on any rank), or None to go on."""
    cfg = p.cfg
    if cfg.train.loss_goal is not None and metrics["loss"] < cfg.train.loss_goal:
        return "loss_goal"
    if cfg.train.acc_goal is not None and metrics["accuracy"] >= cfg.train.acc_goal:
        return "acc_goal"
    stop_now = stop.signum is not None
    if p.dist.enabled:  # every rank stops at the same step
        stop_now = bool(p.dist.all_reduce_(torch.tensor([float(stop_now)], device=p.device)).item() > 0)
    return "interrupted" if stop_now else None


def _checkpoint(p: RunParts, out: Outputs, next_step: int, wall: float) -> None:
    """Flush the record, then write the checkpoint of ``next_step`` (so a resume finds every earlier step)."""
    if not p.writes:
        return
    out.flush()
    state = {
        "model": p.model.state_dict(),
        "optimizer": p.optimizer.state_dict(),
        "step": next_step,
        "rng": torch.get_rng_state(),
        "wall_time": wall,
        "config": p.cfg.to_dict(),
        "hooks": hook_states(p.hooks),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    save_checkpoint(p.run_dir, state, keep=p.cfg.train.keep_checkpoints)


@torch.no_grad()
def evaluate(p: RunParts, data: ArrayDataset) -> tuple[float, float]:
    """Mean loss and accuracy of the model on ``data`` (in eval mode; the mode is put back)."""
    was = p.model.training
    p.model.eval()
    try:
        # per token for sequences: the mean over every target token (all sequences have the same length)
        _, losses, correct = probe_losses(p.model, data, p.loss_fn, p.cfg.train.physical_batch_size, per_token=True)
    finally:
        p.model.train(was)
    return float(losses.mean()), float(correct.mean())


def _finish(p: RunParts, out: Outputs, state: TrainState, next_step: int, stopped: str, metrics: dict,
            wall: float, probe_cost: dict | None = None) -> TrainResult:
    """Final evaluation, checkpoint, ``on_train_end``, and the run's end in meta.json."""
    if p.test_set is not None:
        metrics = dict(metrics)
        metrics["test_loss"], metrics["test_accuracy"] = evaluate(p, p.test_set)
    _checkpoint(p, out, next_step, wall)
    hook_api.call(p.hooks, "on_train_end", state)
    if p.writes:
        update_meta(p.run_dir, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stopped": stopped,
                                "next_step": next_step, "wall_time": wall, "final": metrics,
                                **({"probe": probe_cost} if probe_cost else {})})
    resume_cmd = f"oppsig train --resume {p.run_dir}" if stopped == "interrupted" and p.writes else None
    return TrainResult(p.run_dir, next_step, stopped, metrics, p.model, wall, resume_cmd, probe_cost)


def _diverged(p: RunParts, out: Outputs, step: int, loss: float, lr: float) -> None:
    where = ""
    if p.run_dir is not None:
        if out.store is not None:
            out.store.flush()
        where = f"; steps before {step} are saved in {p.run_dir}"
        if p.writes:
            update_meta(p.run_dir, {"stopped": "diverged", "diverged_at": step, "loss": str(loss)})
    raise DivergenceError(
        f"training diverged: the loss is {loss} at step {step} (lr {lr:g}); "
        f"try a smaller learning rate, e.g. --optim.lr={lr / 2:g}{where}"
    )


class Trainer:
    """One training run: ``Trainer(cfg, options).run()`` is ``train(cfg, **options)``; see :func:`train`."""

    def __init__(self, cfg: Config, options: TrainOptions | None = None) -> None:
        self.cfg = cfg
        self.options = options if options is not None else TrainOptions()

    def run(self) -> TrainResult:
        return run(build_run(self.cfg, self.options))


def train(cfg: Config, **options) -> TrainResult:
    """Train as ``cfg`` says and record the run (in ``<out_dir>/<name>`` unless ``run_dir`` says otherwise).

    Args:
        cfg: the run's config.
        **options: the fields of :class:`TrainOptions`: ``run_dir`` (None: nothing written), ``hooks``,
            ``resume``, ``overwrite``, ``progress``, ``data``, ``branch_from``, ``example_weights``.

    Example:
        >>> from oppsig.config import load_config
        >>> res = train(load_config(None, ["data.n=64", "model.widths=[8]", "train.steps=5"]), run_dir=None,
        ...             progress=False)
        >>> res.next_step, res.stopped
        (5, 'max_steps')

    Raises:
        DivergenceError: the loss became NaN/inf (everything before is saved).
        RunExistsError / RunLockedError / StoreError: run-directory problems; with ``resume``, no
            intact checkpoint to continue from.
        DataNotFoundError / ConfigError: bad data or config.
    """
    return run(build_run(cfg, TrainOptions(**options)))
