"""Writing the per-example record: buffered, chunk-aligned and crash-safe.

Rows (one per recorded step) are buffered in memory and written to zarr a
chunk of steps at a time, so the hot path pays one small numpy copy per step.
After each write, ``progress.json`` is replaced atomically with the number of
complete rows; readers never look past it, so they never see a half-written
step. A run killed at any moment loses at most the buffered rows, which the
training loop recomputes when it resumes from its last checkpoint (the loop
flushes the store before every checkpoint).

Chunking: ``(chunk_steps, chunk_examples)`` = (32, 1024) by default. Reading
one step (all examples) touches ``ceil(N / 1024)`` chunks; reading one example
(all steps) touches ``ceil(R / 32)`` chunks of 128 KiB; both stay fast
(``benchmarks/bench_recording.py`` measures them).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import zarr

from ..errors import StoreError
from .ids import IdIndex
from .format import FORMAT_VERSION, METRICS, PROGRESS, STORE, ZARR_FORMAT, atomic_write, check_zarr_format, read_json


def _create(group, name: str, shape, chunks, dtype, fill_value):
    from zarr.codecs import ZstdCodec  # a checksum per chunk: a damaged chunk fails to read instead of misreading

    arr = group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill_value, overwrite=True,
                             compressors=ZstdCodec(level=0, checksum=True))
    return _every_chunk(arr)


def _every_chunk(arr):
    """``arr`` set to write chunks that hold only the fill value too, so that an absent chunk always means lost data.

    (zarr skips such chunks by default; an all-wrong block of ``correct`` would then look missing.)
    """
    return arr.with_config({"write_empty_chunks": True})


class StoreWriter:
    """Writes ``loss[row, example]`` (and ``correct``, ``steps``, optional ``logits``) of one run.

    Args:
        run_dir: the run directory (created if needed).
        index: stable example ids, int (N,); column ``j`` of every array is example ``index[j]``.
        capacity: rows to reserve (grows by doubling when exceeded).
        dtype: ``"float32"`` or ``"float16"`` for losses.
        chunk_steps / chunk_examples: chunk shape; ``chunk_steps`` rows are buffered per write.
        num_classes: needed only when logits are recorded.
        attrs: facts stored in the zarr group's attributes (config, versions).
        resume: open an existing store and continue after its committed rows.

    Raises:
        StoreError: when the directory cannot be written or an existing store does not match.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        index: np.ndarray,
        capacity: int = 1024,
        dtype: str = "float32",
        chunk_steps: int = 32,
        chunk_examples: int = 1024,
        num_classes: int | None = None,
        attrs: dict | None = None,
        resume: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.index = np.asarray(index, dtype=np.int64)
        self.n = len(self.index)
        self.dtype = np.dtype(dtype)
        self.chunk_steps = int(chunk_steps)
        self.num_classes = num_classes
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / STORE
            if resume and path.exists():
                check_zarr_format(path)
                self.group = zarr.open_group(str(path), mode="r+", zarr_format=ZARR_FORMAT)
                self._loss = _every_chunk(self.group["loss"])
                self._correct = _every_chunk(self.group["correct"])
                self._steps = _every_chunk(self.group["steps"])
                self._logits = _every_chunk(self.group["logits"]) if "logits" in self.group else None
                self._logit_steps = _every_chunk(self.group["logit_steps"]) if "logit_steps" in self.group else None
                if self._loss.shape[1] != self.n:
                    raise StoreError(f"{path}: holds {self._loss.shape[1]} examples, this run has {self.n}")
                prog = read_json(self.run_dir / PROGRESS) if (self.run_dir / PROGRESS).exists() else {}
                self.rows = int(prog.get("rows", 0))
                self.logit_rows = int(prog.get("logit_rows", 0))
                if not 0 <= self.rows <= self._loss.shape[0]:
                    raise StoreError(f"{self.run_dir / PROGRESS} counts {self.rows} rows but {path.name}/loss holds "
                                     f"{self._loss.shape[0]}; the store is damaged: repair it or start over with "
                                     "--overwrite")
                self._last_step_on_disk = int(self._steps[self.rows - 1]) if self.rows else None
            else:
                self.group = zarr.open_group(str(path), mode="w", zarr_format=ZARR_FORMAT)
                self.group.attrs.update({"format_version": FORMAT_VERSION, "zarr_format": ZARR_FORMAT,
                                         "zarr_version": zarr.__version__, "every_chunk_written": True,
                                         **(attrs or {})})
                ce = min(int(chunk_examples), max(self.n, 1))
                cap = max(int(capacity), 1)
                self._loss = _create(self.group, "loss", (cap, self.n), (self.chunk_steps, ce), self.dtype,
                                     float("nan"))
                self._correct = _create(self.group, "correct", (cap, self.n), (self.chunk_steps, ce), "bool", False)
                self._steps = _create(self.group, "steps", (cap,), (max(1024, self.chunk_steps),), "int64", -1)
                idx = _create(self.group, "index", (self.n,), (max(self.n, 1),), "int64", -1)
                idx[:] = self.index
                self._logits = self._logit_steps = None
                self._commit(0, 0, None)
        except OSError as e:
            raise StoreError(f"cannot write the store in {self.run_dir}: {e.strerror or e}") from None
        except (KeyError, ValueError, TypeError) as e:  # an existing store with parts missing or unreadable
            raise StoreError(f"{self.run_dir / STORE} is damaged ({type(e).__name__}: {str(e)[:80]}); "
                             "start the run over with --overwrite") from None
        self._buf = np.empty((self.chunk_steps, self.n), dtype=self.dtype)
        self._buf_correct = np.zeros((self.chunk_steps, self.n), dtype=bool)
        self._buf_steps = np.empty(self.chunk_steps, dtype=np.int64)
        self._nbuf = 0
        self._col = None  # id -> column lookup, built on first partial log

    # ------------------------------------------------------------------ rows
    @property
    def pending(self) -> int:
        """Rows buffered but not yet written."""
        return self._nbuf

    @property
    def last_step(self) -> int | None:
        """The last step appended (buffered or written), or None."""
        if self._nbuf:
            return int(self._buf_steps[self._nbuf - 1])
        return self._last_step_on_disk

    def append(self, step: int, losses: np.ndarray, correct: np.ndarray | None = None) -> None:
        """Append the row of ``step``: ``losses`` float (N,) in column order, ``correct`` bool (N,)."""
        if self._nbuf == self.chunk_steps:
            self.flush()
        last = self.last_step
        if last is not None and step <= last:
            raise StoreError(f"step {step} recorded after step {last}: steps must increase")
        i = self._nbuf
        self._buf[i] = losses
        if correct is not None:
            self._buf_correct[i] = correct
        else:
            self._buf_correct[i] = False
        self._buf_steps[i] = step
        self._nbuf += 1
        if self._nbuf == self.chunk_steps:
            self.flush()

    def columns(self, ids: np.ndarray) -> np.ndarray:
        """Column positions of the stable example ids ``ids``."""
        if self._col is None:
            self._col = IdIndex(self.index)
        pos, found = self._col.lookup(ids)
        if not found.all():
            raise StoreError(f"example ids {np.asarray(ids).reshape(-1)[~found][:5].tolist()} are not in this store")
        return pos

    def flush(self) -> None:
        """Write buffered rows and commit them (atomically bump ``progress.json``)."""
        if self._nbuf == 0:
            return
        r0, r1 = self.rows, self.rows + self._nbuf
        try:
            if r1 > self._loss.shape[0]:
                cap = max(r1, 2 * self._loss.shape[0])
                self._loss.resize((cap, self.n))
                self._correct.resize((cap, self.n))
                self._steps.resize((cap,))
            self._loss[r0:r1] = self._buf[: self._nbuf]
            self._correct[r0:r1] = self._buf_correct[: self._nbuf]
            self._steps[r0:r1] = self._buf_steps[: self._nbuf]
            self._commit(r1, self.logit_rows, int(self._buf_steps[self._nbuf - 1]))
        except OSError as e:
            last = self._last_step_on_disk
            safe = f"rows up to step {last} are safe on disk" if last is not None else "no row is on disk yet"
            raise StoreError(f"cannot write the store in {self.run_dir} ({e.strerror or e}); {safe}; "
                             "fix the cause (e.g. free disk space) and resume the run") from None
        self._nbuf = 0

    def write_logits(self, step: int, logits: np.ndarray) -> None:
        """Store the logits (N, C) of ``step`` (written and committed at once)."""
        logits = np.asarray(logits, dtype=np.float16 if self.dtype == np.float16 else np.float32)
        try:
            if self._logits is None:
                c = logits.shape[1]
                self._logits = _create(self.group, "logits", (16, self.n, c), (1, min(self.n, 1024), c), logits.dtype,
                                       float("nan"))
                self._logit_steps = _create(self.group, "logit_steps", (16,), (1024,), "int64", -1)
            r = self.logit_rows
            if r >= self._logits.shape[0]:
                self._logits.resize((2 * self._logits.shape[0],) + tuple(self._logits.shape[1:]))
                self._logit_steps.resize((2 * self._logit_steps.shape[0],))
            self._logits[r] = logits
            self._logit_steps[r] = step
            self._commit(self.rows, r + 1, self._last_step_on_disk)
        except OSError as e:
            raise StoreError(f"cannot write logits in {self.run_dir}: {e.strerror or e}") from None

    def truncate_before(self, step: int) -> int:
        """Forget rows of steps ``>= step`` (resume); returns the number of rows kept."""
        self._nbuf = 0
        steps = np.asarray(self._steps[: self.rows])
        rows = int(np.searchsorted(steps, step, side="left"))
        logit_rows = self.logit_rows
        if self._logit_steps is not None:
            ls = np.asarray(self._logit_steps[: self.logit_rows])
            logit_rows = int(np.searchsorted(ls, step, side="left"))
        self._commit(rows, logit_rows, int(steps[rows - 1]) if rows else None)
        return self.rows

    def close(self) -> None:
        self.flush()

    # ------------------------------------------------------------------ internals
    def _commit(self, rows: int, logit_rows: int, last_step: int | None) -> None:
        """Make ``rows`` (and ``logit_rows``) the committed count: atomically replace ``progress.json``."""
        atomic_write(
            self.run_dir / PROGRESS,
            json.dumps({"format_version": FORMAT_VERSION, "rows": rows, "logit_rows": logit_rows,
                        "last_step": last_step}),
        )
        self.rows, self.logit_rows, self._last_step_on_disk = rows, logit_rows, last_step


class MetricsWriter:
    """Appends one JSON line of scalars per step to ``metrics.jsonl`` (flushed each step).

    Non-finite floats are written as ``null`` so that every line stays valid JSON.
    """

    def __init__(self, run_dir: str | os.PathLike, resume_before: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS
        if resume_before is not None and self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a torn line: nothing of it can be kept
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] < resume_before:
                    kept.append(line)
            atomic_write(self.path, "".join(k + "\n" for k in kept))
            self._f = open(self.path, "a")
        else:
            self._f = open(self.path, "w" if resume_before is None else "a")

    def write(self, row: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        try:
            self._f.write(json.dumps(clean) + "\n")
            self._f.flush()
        except OSError as e:
            raise StoreError(f"cannot write {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass
