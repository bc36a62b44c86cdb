"""What a run writes as it trains: config.yaml, meta.json, the per-example record and the metrics.

:func:`open_outputs` writes the config and meta.json and opens the writers (cut back to the start
step when resuming); :func:`probe` and :func:`record_row` give and write one row of the dense record.
Only the writing rank (rank 0 of a run with a run directory) opens writers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import from_dict
from ..store.fingerprint import run_fingerprint
from ..store.format import CONFIG, META, atomic_write, environment, read_json
from ..store.recorder import probe_losses
from ..store.writer import MetricsWriter, StoreWriter
from .changes import first_config
from .step import precision

# what meta.json says about how a run ended (removed when it is resumed, written again when it ends)
_END_KEYS = ("finished", "stopped", "next_step", "wall_time", "final", "diverged_at", "loss")


@dataclass(frozen=True)
class Start:
    """Where a run starts: ``step``, the wall time of its earlier segments, whether it resumes (and from what)."""

    step: int = 0
    wall: float = 0.0
    resuming: bool = False
    resumed_from: dict | None = None  # {"checkpoint": file name, "skipped": [why each newer one was passed over]}
    config_changes: tuple = ()  # the run's settings changed on resume, [{"step": s, "changes": {key: value}}]


@dataclass(frozen=True)
class Outputs:
    """The open writers of a run (all None on a rank that does not write)."""

    store: StoreWriter | None = None  # the dense record
    batches: Any = None  # the sparse mini-batch record (BatchWriter)
    metrics: MetricsWriter | None = None

    def flush(self) -> None:
        if self.store is not None:
            self.store.flush()
        if self.batches is not None:
            self.batches.flush()


def numpy(a) -> np.ndarray:
    """``a`` as numpy (floating tensors as float32)."""
    return a.float().cpu().numpy() if isinstance(a, torch.Tensor) and a.is_floating_point() else (
        a.cpu().numpy() if isinstance(a, torch.Tensor) else a)


def update_meta(run_dir, facts: dict) -> None:
    """Merge ``facts`` into the run's meta.json (atomically)."""
    meta = read_json(run_dir / META)
    meta.update(facts)
    atomic_write(run_dir / META, json.dumps(meta, indent=1, default=float))


def _write_meta(parts, start: Start) -> None:
    rd = parts.run_dir
    meta = {**environment(), "device": str(parts.device), "data": parts.train_set.name,
            "num_examples": len(parts.train_set), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fingerprint": run_fingerprint(parts.train_set, parts.probe_set)}
    if len(parts.probe_outliers):  # the probe's outlier stratum: detection weights it back (store.probe_plan)
        meta["probe_outliers"] = [int(i) for i in parts.probe_outliers]
    if start.resuming and (rd / META).exists():
        old = read_json(rd / META)
        ended = {k: old.pop(k) for k in _END_KEYS if k in old}  # this segment's end replaces them
        entry = {"step": start.step, **(start.resumed_from or {}), "after": ended.get("stopped"), **meta}
        meta = {**old, "resumed": old.get("resumed", []) + [entry], "config_changes": list(start.config_changes)}
        if not start.config_changes:
            meta.pop("config_changes")
    else:
        meta["first_step"] = start.step
    atomic_write(rd / META, json.dumps(meta, indent=1))


def open_outputs(parts, start: Start) -> Outputs:
    """Write config.yaml and meta.json; open the store and metrics (cut back to ``start.step`` when resuming)."""
    cfg, rd, resuming = parts.cfg, parts.run_dir, start.resuming
    if not parts.writes:
        return Outputs()
    # config.yaml stays the run's first config; a resume's changes are in meta.json (see training.changes)
    atomic_write(rd / CONFIG, from_dict(first_config(rd)).to_yaml() if resuming else cfg.to_yaml())
    _write_meta(parts, start)
    store = batches = None
    if cfg.record.enabled:
        rec_rows = len(range(0, cfg.train.steps, cfg.record.every))
        store = StoreWriter(
            rd, parts.record_ids, capacity=max(rec_rows, 1), dtype=cfg.record.dtype,
            chunk_steps=cfg.record.chunk_steps, num_classes=parts.train_set.num_classes,
            attrs={"config": cfg.to_dict(), **environment()}, resume=resuming,
        )
        if resuming:
            store.truncate_before(start.step)
        if parts.batch_record:
            from ..store.batches import BatchWriter

            batches = BatchWriter(rd, parts.train_set.index.cpu().numpy(), dtype=cfg.record.dtype, resume=resuming)
            if resuming:
                batches.truncate_before(start.step)
    return Outputs(store, batches, MetricsWriter(rd, resume_before=start.step if resuming else None))


def probe(parts, logits_now: bool) -> tuple:
    """``(ids, losses, correct[, logits])`` of the probe set at the current parameters, gathered over ranks."""
    D = parts.dist
    with precision(parts.cfg, parts.device):  # the probe measures what the training forward does (bf16 autocast)
        out = probe_losses(parts.model, parts.probe_local, parts.loss_fn, parts.cfg.train.physical_batch_size,
                           return_logits=logits_now, per_token=parts.per_token)
    if D.enabled:
        m_all = len(parts.record_ids)
        out = (parts.record_ids,) + tuple(D.gather_rows(torch.as_tensor(a), m_all).numpy() for a in out[1:])
    return out


def record_row(out: Outputs, step: int, row: tuple, logits_now: bool) -> None:
    """Append the row of ``step`` (``(ids, losses, correct[, logits])``) to the store, with its logits when due."""
    if out.store is None:
        return
    _, losses, correct, logits = (tuple(row) + (None,))[:4]
    out.store.append(step, numpy(losses), numpy(correct))
    if logits_now and logits is not None:
        out.store.write_logits(step, numpy(logits))
