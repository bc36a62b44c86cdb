"""The sparse record of mini-batch training: each example's loss when its own batch is trained on.

Under mini-batch SGD every example is seen about once an epoch, in its batch,
and the training forward already computes its loss: recording it costs no extra
forward. Densifying it into ``loss[step, example]`` would store ``N / B`` NaNs
for every value (78 per value for 10,000 examples in batches of 128), so it is
kept as one row per observation (coordinate list), in the order it was trained::

    store.zarr/batch/step[e]      int64   the training step of observation e
    store.zarr/batch/column[e]    int32   the example's column (``index[column]`` is its stable id)
    store.zarr/batch/loss[e]      float   its loss at theta_step, from the training forward of that step
    store.zarr/batch/correct[e]   bool
    store.zarr/batch/index[j]     int64   stable id of column j (all training examples; the dense
                                          record's own index may be a probe subset)
    batch_progress.json           {"entries": E}: how many observations are complete

Entries are appended in step order and written a chunk at a time; readers never
look past ``entries`` (written atomically after each write), so a crash loses at
most the buffered entries, which the training loop recomputes on resume.

Detection reads it as an (epochs, N) matrix: row ``e`` holds each example's loss
at its visit in epoch ``e`` (:meth:`BatchRecord.epoch_matrix`). What this series
can and cannot be compared with is in docs/findings.md ("Scale").
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import zarr

from ..errors import StoreError
from .format import STORE, ZARR_FORMAT, atomic_write, read_json

BATCH = "batch"
BATCH_PROGRESS = "batch_progress.json"
BATCH_FORMAT = 1


class BatchWriter:
    """Appends ``(step, column, loss, correct)`` observations to ``store.zarr/batch``.

    The store (``store.zarr`` with its ``index``) must exist: create it with
    :class:`~oppsig.store.StoreWriter` first; the dense arrays are left alone.

    Args:
        run_dir: the run directory.
        index: stable example ids (N,), column order (as the store's ``index``).
        dtype: ``"float32"`` or ``"float16"`` for the losses.
        chunk: observations per chunk and per write (default 65,536: 256 KiB of float32).
        resume: continue an existing batch record after its complete entries.

    Raises:
        StoreError: the store is missing, or an existing batch record has another dtype.
    """

    def __init__(self, run_dir: str | os.PathLike, index: np.ndarray, dtype: str = "float32",
                 chunk: int = 65536, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.index = np.asarray(index, dtype=np.int64)
        self.n = len(self.index)
        self.dtype = np.dtype(dtype)
        self.chunk = int(chunk)
        path = self.run_dir / STORE
        if not path.exists():
            raise StoreError(f"{path} does not exist: open the run's StoreWriter before its BatchWriter")
        try:
            root = zarr.open_group(str(path), mode="r+", zarr_format=ZARR_FORMAT)
            if resume and BATCH in root:
                g = root[BATCH]
                self.entries = _read_entries(self.run_dir)
                if not np.array_equal(np.asarray(g["index"][: self.n]), self.index):
                    raise StoreError(f"{path}/{BATCH} was recorded on other examples than this run's")
                if g["loss"].dtype != self.dtype:
                    raise StoreError(f"{path}/{BATCH} holds {g['loss'].dtype} losses, this run records {self.dtype}")
            else:
                g = root.create_group(BATCH, overwrite=True)
                g.attrs.update({"batch_format": BATCH_FORMAT})
                idx = g.create_array("index", shape=(max(self.n, 1),), chunks=(max(self.n, 1),), dtype="int64",
                                     fill_value=-1)
                idx[: self.n] = self.index
                for name, dt, fill in (("step", "int64", -1), ("column", "int32", -1),
                                       ("loss", self.dtype, float("nan")), ("correct", "bool", False)):
                    g.create_array(name, shape=(self.chunk,), chunks=(self.chunk,), dtype=dt, fill_value=fill)
                self.entries = 0
                self._commit()
        except OSError as e:
            raise StoreError(f"cannot write the batch record in {path}: {e.strerror or e}") from None
        self._a = {k: g[k] for k in ("step", "column", "loss", "correct")}
        self._buf: dict[str, list[np.ndarray]] = {k: [] for k in self._a}
        self._nbuf = 0
        self._last_step = int(self._a["step"][self.entries - 1]) if self.entries else None
        self._col: dict[int, int] | None = None
        self._identity = bool(np.array_equal(self.index, np.arange(self.n)))

    def columns(self, ids: np.ndarray) -> np.ndarray:
        """Columns of the stable ids ``ids``.

        Raises:
            StoreError: for an id that is not in the record's index.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._identity:
            if ids.size and (ids.min() < 0 or ids.max() >= self.n):
                raise StoreError(f"example ids must lie in 0..{self.n - 1}; got {ids.min()}..{ids.max()}")
            return ids
        if self._col is None:
            self._col = {int(v): j for j, v in enumerate(self.index)}
        try:
            return np.fromiter((self._col[int(i)] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as e:
            raise StoreError(f"example id {e.args[0]} is not in the record's index") from None

    def append(self, step: int, columns, losses, correct=None) -> None:
        """Append the observations of ``step``: ``columns`` int (B,), ``losses`` float (B,), ``correct`` bool (B,).

        Raises:
            StoreError: when ``step`` is before a step already appended or the sizes differ.
        """
        step = int(step)
        if self._last_step is not None and step < self._last_step:
            raise StoreError(f"step {step} recorded after step {self._last_step}: steps must not decrease")
        cols = np.asarray(columns, dtype=np.int32).reshape(-1)
        loss = np.asarray(losses, dtype=self.dtype).reshape(-1)
        if loss.shape != cols.shape:
            raise StoreError(f"{len(cols)} example ids but {len(loss)} losses at step {step}")
        corr = np.zeros(len(cols), bool) if correct is None else np.asarray(correct, dtype=bool).reshape(-1)
        self._buf["step"].append(np.full(len(cols), step, np.int64))
        self._buf["column"].append(cols)
        self._buf["loss"].append(loss)
        self._buf["correct"].append(corr)
        self._nbuf += len(cols)
        self._last_step = step
        if self._nbuf >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Write the buffered observations, then the new entry count."""
        if not self._nbuf:
            return
        e0, e1 = self.entries, self.entries + self._nbuf
        cap = self._a["step"].shape[0]
        if e1 > cap:
            new = max(e1, 2 * cap)
            new = -(-new // self.chunk) * self.chunk
            for a in self._a.values():
                a.resize((new,))
        try:
            for k, a in self._a.items():
                a[e0:e1] = np.concatenate(self._buf[k])
        except OSError as e:
            raise StoreError(f"cannot write the batch record in {self.run_dir}: {e.strerror or e}") from None
        self._buf = {k: [] for k in self._a}
        self._nbuf = 0
        self.entries = e1
        self._commit()

    def truncate_before(self, step: int) -> None:
        """Forget every entry of ``step`` or later (resume from a checkpoint taken before ``step``)."""
        self.flush()
        if not self.entries:
            return
        steps = np.asarray(self._a["step"][: self.entries])
        self.entries = int(np.searchsorted(steps, int(step), side="left"))
        self._last_step = int(steps[self.entries - 1]) if self.entries else None
        self._commit()

    def close(self) -> None:
        self.flush()

    def _commit(self) -> None:
        atomic_write(self.run_dir / BATCH_PROGRESS,
                     json.dumps({"entries": int(self.entries), "batch_format": BATCH_FORMAT}))


def _read_entries(run_dir: Path) -> int:
    p = Path(run_dir) / BATCH_PROGRESS
    try:
        prog = read_json(p)
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"{p} is unreadable ({e}); the batch record may be damaged") from None
    if prog.get("batch_format", BATCH_FORMAT) > BATCH_FORMAT:
        raise StoreError(f"{p}: batch record format {prog['batch_format']} is newer than this oppsig reads "
                         f"({BATCH_FORMAT}); upgrade oppsig")
    return int(prog.get("entries", 0))


class BatchRecord:
    """The sparse mini-batch record of a run, opened for reading (``run.batches``).

    Attributes:
        entries: number of complete observations E.
        n_examples: N, every training example.
        index: (N,) stable ids of the columns (the training set's order).

    The arrays are read lazily: :meth:`blocks` streams them, :meth:`arrays` reads
    them whole (E entries: 17 bytes each in float32).

    Example:
        >>> from oppsig.store import Recorder, open_run
        >>> rec = Recorder(tmp_path / "run", num_examples=6, sparse=True)  # 2 epochs of 3 batches of 2
        >>> for step in range(6):
        ...     rec.log(step, [2 * step % 6, (2 * step + 1) % 6], torch.tensor([1.0, 2.0]) / (step + 1))
        >>> rec.close()
        >>> batches = open_run(tmp_path / "run").batches
        >>> L, S = batches.epoch_matrix(steps_per_epoch=3)  # (epochs, examples): losses and the step of each visit
        >>> batches.entries, L.shape, S[1].tolist()
        (12, (2, 6), [3, 3, 4, 4, 5, 5])
    """

    def __init__(self, group, run_dir: Path) -> None:
        self._g = group
        self.run_dir = Path(run_dir)
        self.index = np.asarray(group["index"][:])
        self.n_examples = len(self.index)
        self.entries = _read_entries(self.run_dir)

    def blocks(self, size: int = 1 << 20):
        """``(step, column, loss, correct)`` numpy blocks of at most ``size`` consecutive entries."""
        for e0 in range(0, self.entries, size):
            e1 = min(self.entries, e0 + size)
            yield tuple(np.asarray(self._g[k][e0:e1]) for k in ("step", "column", "loss", "correct"))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All entries: ``(step, column, loss, correct)``, each (E,)."""
        parts = list(self.blocks())
        if not parts:
            return (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, bool))
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))  # type: ignore[return-value]

    @property
    def steps(self) -> np.ndarray:
        """The distinct steps recorded, ascending."""
        return np.unique(np.concatenate([b[0] for b in self.blocks()] or [np.zeros(0, np.int64)]))

    def example_series(self, example_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, losses)`` of one example (stable id), in step order.

        Raises:
            StoreError: for an id that is not in the run.
        """
        col = np.flatnonzero(self.index == example_id)
        if len(col) == 0:
            raise StoreError(f"example id {example_id} is not in {self.run_dir}")
        st, ls = [], []
        for s, c, loss, _ in self.blocks():
            hit = c == col[0]
            st.append(s[hit])
            ls.append(loss[hit])
        return np.concatenate(st), np.concatenate(ls).astype(np.float32)

    def epoch_matrix(self, steps_per_epoch: int, complete: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Each example's loss at its visit in each epoch: ``(L, S)``, both (epochs, N).

        ``L[e, j]`` is the loss of column ``j`` in epoch ``e`` (steps
        ``e * steps_per_epoch`` .. ``(e + 1) * steps_per_epoch - 1``), ``S[e, j]``
        the step it was observed at; NaN / -1 where it was not seen. With
        ``complete``, only epochs whose every example was observed are kept
        (a run's last, unfinished epoch is dropped).

        Raises:
            StoreError: when ``steps_per_epoch`` < 1, or an example is observed twice in one epoch.
        """
        if steps_per_epoch < 1:
            raise StoreError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        n = self.n_examples
        last = -1
        for s, *_ in self.blocks():
            if len(s):
                last = int(s[-1])
        n_ep = last // steps_per_epoch + 1 if last >= 0 else 0
        L = np.full((n_ep, n), np.nan, dtype=np.float32)
        S = np.full((n_ep, n), -1, dtype=np.int64)
        for s, c, loss, _ in self.blocks():
            e = s // steps_per_epoch
            key = e * n + c
            uniq, first, cnt = np.unique(key, return_index=True, return_counts=True)
            seen = S[e, c] >= 0
            if (cnt > 1).any() or seen.any():
                i = int(first[np.flatnonzero(cnt > 1)[0]]) if (cnt > 1).any() else int(np.flatnonzero(seen)[0])
                raise StoreError(f"example column {int(c[i])} is observed twice in epoch {int(e[i])} "
                                 f"(steps_per_epoch={steps_per_epoch} is not this run's epoch length?)")
            L[e, c] = loss
            S[e, c] = s
        if complete:
            full = (S >= 0).all(axis=1)
            L, S = L[full], S[full]
        return L, S

    def __repr__(self) -> str:
        return f"BatchRecord({str(self.run_dir)!r}, entries={self.entries}, examples={self.n_examples})"


def open_batches(run_dir: Path, root_group) -> BatchRecord | None:
    """The run's :class:`BatchRecord`, or None when it recorded no mini-batch losses."""
    if BATCH not in root_group or not (Path(run_dir) / BATCH_PROGRESS).exists():
        return None
    return BatchRecord(root_group[BATCH], run_dir)


class EpochRun:
    """A mini-batch run seen through its sparse record: one row per complete epoch (what detection read).

    ``losses`` (epochs, N) and ``steps`` (each epoch's first step) replace the dense record's (built when first
    read), ``index`` is the batch record's; everything else (``metrics``, ``config``, ``path``, ...) is the
    run's. Figures, the report and the export's columns read a run with ``source: batch`` through it.

    Args:
        run: a :class:`~oppsig.store.Run` with a batch record.
        steps_per_epoch: the epoch length detection used (``signals.dataset["record"]["steps_per_epoch"]``);
            needed only to read ``losses`` / ``steps``.

    Raises:
        StoreError: when the run has no batch record, or ``losses`` is read without ``steps_per_epoch``.
    """

    is_epoch_view = True

    def __init__(self, run, steps_per_epoch: int | None = None) -> None:
        rec = run.batches
        if rec is None:
            raise StoreError(f"{run.path} has no mini-batch record (store.zarr/batch)")
        self._run, self._rec, self._per = run, rec, steps_per_epoch
        self.index = rec.index

    @functools.cached_property
    def _matrix(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._per:
            raise StoreError(f"reading {self._run.path} per epoch needs its steps_per_epoch")
        losses, seen = self._rec.epoch_matrix(int(self._per))
        steps = (seen[:, 0] // self._per) * self._per if len(seen) else np.zeros(0, np.int64)
        return losses, steps

    @property
    def losses(self) -> np.ndarray:
        return self._matrix[0]

    @property
    def steps(self) -> np.ndarray:
        return self._matrix[1]

    @property
    def rows(self) -> int:
        return len(self._matrix[1])

    def __getattr__(self, name: str):
        return getattr(self._run, name)
