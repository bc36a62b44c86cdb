"""Where a run starts: a new run directory, the resume point of an existing one, or another run's checkpoint.

A run resumes from the newest intact checkpoint whose steps its record and ``metrics.jsonl`` hold
(``last.pt``, else the newest kept ``step_*.pt``; :func:`~oppsig.training.checkpoint.newest_intact`):
their extents come from :func:`~oppsig.store.integrity.record_extent` and
:func:`~oppsig.store.integrity.metrics_extent`, and a checkpoint past either is passed over
with a warning (the later steps are recomputed). A run that already finished is not resumed (nothing
changes) unless the resume raises ``train.steps`` (or changes the goal it stopped at). A record whose
bookkeeping is damaged is not cut blindly: resuming it is refused.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import OppsigWarning, StoreError
from ..store.format import META, METRICS, STORE, read_json
from ..store.integrity import metrics_extent, read_metric_steps, record_extent
from ..store.rundir import RunLock, prepare_run_dir, start_over_command
from .changes import config_in_force, first_config, history, record_change
from .checkpoint import load_hook_states, newest_intact
from .record import Start


def claim_run_dir(parts) -> tuple[RunLock | None, Start]:
    """Lock the run directory (the writing rank) and find where to start: ``(lock, start)``.

    Raises:
        StoreError: resuming a run directory that does not exist, whose record is damaged, or that has no
            intact checkpoint to continue from.
        RunExistsError / RunLockedError: a new run's directory is taken, or another process writes it.
    """
    lock, start = None, Start()
    rd = parts.run_dir
    if rd is None:
        return lock, start
    if parts.options.resume:
        if not rd.is_dir():
            raise StoreError(f"cannot resume: {rd} does not exist (pass the run directory, e.g. runs/<name>)")
        if parts.writes:
            lock = RunLock(rd).acquire()
        try:
            start = resume_point(parts)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    elif parts.writes:
        lock = prepare_run_dir(rd, parts.options.overwrite)
    parts.dist.barrier()
    return lock, start


def _record_limit(parts) -> tuple[int, str]:
    """``(limit, why)`` of the run's record (see :func:`~oppsig.store.integrity.record_extent`).

    Raises:
        StoreError: when the record's bookkeeping is damaged (resuming would cut it blindly).
    """
    from ..store.reader import open_run

    rd = parts.run_dir
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
    if "first_step" not in meta and len(run.steps):
        first = int(run.steps[0])
    return record_extent(run.steps, run.losses.gaps + run.correct.gaps, first, parts.cfg.record.every)


def _limits(parts) -> list[tuple[int, str, str]]:
    """``(limit, why, what)``: the record (when on) and metrics.jsonl hold every step before ``limit``."""
    rd = parts.run_dir
    out = []
    if parts.cfg.record.enabled:
        out.append(_record_limit(parts) + ("the record",))  # raises when the record's bookkeeping is damaged
    meta = read_json(rd / META) if (rd / META).exists() else {}
    first = meta.get("first_step", 0)
    return out + [metrics_extent(read_metric_steps(rd / METRICS), first if isinstance(first, int) else 0)
                  + ("metrics.jsonl",)]


def resume_point(parts) -> Start:
    """Load the newest intact checkpoint whose steps the record and metrics.jsonl hold (last.pt, else a kept one).

    Raises:
        StoreError: no such checkpoint, or the run already finished (nothing is changed then).
        ConfigError: the resume changes a setting that cannot change mid-run.
    """
    limits = _limits(parts)

    def usable(step: int) -> str | None:
        return next((f"{what} is intact only before step {limit} ({why})" for limit, why, what in limits
                     if step > limit), None)

    ckpt, path, skipped = newest_intact(parts.run_dir, usable, map_location=parts.device)
    step = int(ckpt["step"])
    first = first_config(parts.run_dir)
    _refuse_finished(parts, step, first)
    changes = record_change(parts.run_dir, first, step, parts.cfg)
    if skipped:
        warnings.warn(f"{parts.run_dir}: resuming from {path.name} at step {step} "
                      f"({'; '.join(skipped)}); later steps are recomputed", OppsigWarning, stacklevel=3)
    step, wall = load_run_state(parts, ckpt)
    return Start(step, wall, True, {"checkpoint": path.name, "skipped": skipped}, tuple(changes))


def _refuse_finished(parts, step: int, first: dict) -> None:
    """Refuse to resume a run that reached its end (its last step, or a goal that still holds)."""
    rd, t = parts.run_dir, parts.cfg.train
    if step >= t.steps:
        raise StoreError(f"{rd} already finished: it reached step {step} of train.steps={t.steps}, nothing was "
                         f"changed; to train it further raise train.steps, e.g. `oppsig train --resume {rd} "
                         f"--train.steps={step + max(step, 1)}`")
    meta = read_json(rd / META) if (rd / META).exists() else {}
    goal = meta.get("stopped")
    if goal in ("loss_goal", "acc_goal") and meta.get("next_step") == step:
        was = config_in_force(first, history(rd), step).train
        if getattr(was, goal) == getattr(t, goal):
            raise StoreError(f"{rd} already finished: it reached train.{goal}={getattr(t, goal)} at step {step}, "
                             f"nothing was changed; to train it further change train.{goal} (null: none), e.g. "
                             f"`oppsig train --resume {rd} --train.{goal}=null`")


def load_run_state(parts, ckpt: dict) -> tuple[int, float]:
    """Restore model, optimiser, RNG and hook state from a checkpoint of this run; returns (step, wall time).

    Raises:
        StoreError: the checkpoint does not fit the model or optimiser of this config.
    """
    try:
        parts.model.load_state_dict(ckpt["model"])
        parts.optimizer.load_state_dict(ckpt["optimizer"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        if "cuda_rng" in ckpt and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise StoreError(f"the checkpoint of {parts.run_dir} does not fit this config ({type(e).__name__}: "
                         f"{(str(e).strip().splitlines() or [''])[0][:100]}); resume with the run's own "
                         "config.yaml, without overrides of the model or optimiser") from None
    load_hook_states(parts.hooks, ckpt.get("hooks", {}))
    return int(ckpt["step"]), float(ckpt.get("wall_time", 0.0))


def branch_from(parts, ckpt: dict) -> Start:
    """Start from another run's checkpoint: its model, step and RNG; its optimiser state only if the optimiser
    is the same."""
    parts.model.load_state_dict(ckpt["model"])
    same = ckpt.get("config", {}).get("optim", {}).get("name") == parts.cfg.optim.name
    if same and "optimizer" in ckpt:
        parts.optimizer.load_state_dict(ckpt["optimizer"])
    if "rng" in ckpt:
        torch.set_rng_state(ckpt["rng"])
    return Start(int(ckpt["step"]), 0.0)
