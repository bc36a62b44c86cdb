"""Reading a run: ``run = open_run(path)``; works while the run is still being written."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr

from ..errors import ConfigError, OppsigWarning, StoreError
from .format import (CHECKPOINTS, CONFIG, FORMAT_VERSION, META, METRICS, PROGRESS, STORE, ZARR_FORMAT,
                     check_zarr_format, read_json)
from .integrity import Gap, find_gaps, metrics_shortfall


def _check_steps(steps: np.ndarray, path: Path) -> None:
    """The steps of the complete rows must be recorded (>= 0) and strictly increasing."""
    bad = np.flatnonzero(steps < 0)
    if len(bad):
        raise StoreError(f"{path / STORE}/steps lacks rows {bad[0]}..{bad[-1]} that progress.json counts as "
                         "complete; the store's bookkeeping is inconsistent: restore it or re-create the run")
    down = np.flatnonzero(np.diff(steps) <= 0)
    if len(down):
        raise StoreError(f"{path / STORE}/steps is not increasing at row {down[0] + 1} (step {steps[down[0]]} then "
                         f"{steps[down[0] + 1]}); the store is damaged: restore it or re-create the run")


def _settle_zarr(timeout: float = 10.0) -> None:
    """Cancel and wait out the reads a failed zarr read left running on zarr's event loop.

    When one chunk of a read fails, zarr's ``asyncio.gather`` raises at once and the reads of the other chunks
    stay pending; destroyed at exit, each prints asyncio's "Task was destroyed but it is pending!". Settling them
    here leaves the one-line error alone on stderr. Best effort: a failure to settle never hides the read error.
    """
    import asyncio

    from zarr.core.sync import sync

    async def _settle() -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    try:
        sync(_settle(), timeout=timeout + 1)
    except Exception:  # noqa: BLE001 - the read error is what the caller reports
        pass


def _is_oppsig_config(d: Any) -> bool:
    """Whether a config dict was written by ``oppsig train`` (it has the train/data/model sections)."""
    return isinstance(d, dict) and all(isinstance(d.get(k), dict) for k in ("data", "model", "train"))


class RowBounded:
    """A lazy, numpy-like view of a zarr array limited to its first ``rows`` rows.

    Indexing reads only what is asked for: ``a[step_row]`` (all examples of one
    row), ``a[:, j]`` (one example over all rows), slices and integer arrays.
    ``np.asarray(a)`` reads everything.
    """

    def __init__(self, array, rows: int, gaps: list[Gap] = (), steps: np.ndarray | None = None) -> None:
        self._a = array
        self.rows = rows
        self.gaps = list(gaps)  # chunks of the first ``rows`` rows that are absent: reading them is an error
        self._steps = steps

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows,) + tuple(self._a.shape[1:])

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return len(self._a.shape)

    def __len__(self) -> int:
        return self.rows

    def _first(self, k):
        if isinstance(k, slice):
            return slice(*k.indices(self.rows))
        if isinstance(k, (int, np.integer)):
            i = int(k) + (self.rows if k < 0 else 0)
            if not 0 <= i < self.rows:
                raise IndexError(f"row {k} out of range for {self.rows} recorded rows")
            return i
        arr = np.asarray(k)
        if arr.dtype == bool:
            arr = np.flatnonzero(arr[: self.rows])
        arr = np.where(arr < 0, arr + self.rows, arr)
        if arr.size and (arr.min() < 0 or arr.max() >= self.rows):
            raise IndexError(f"rows out of range for {self.rows} recorded rows")
        return arr

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if key and key[0] is Ellipsis:
            key = (slice(None),) + key
        first = self._first(key[0]) if key else slice(0, self.rows)
        rest = key[1:]
        if self.gaps:
            self._check_gaps(first, rest[0] if rest else None)
        if isinstance(first, np.ndarray) or any(isinstance(r, (list, np.ndarray)) for r in rest):
            # orthogonal selection for integer arrays on any axis
            sel = (first,) + rest
            sel = tuple(np.asarray(s) if isinstance(s, list) else s for s in sel)
            return self._read(lambda: self._a.oindex[sel])
        return self._read(lambda: self._a[(first,) + rest])

    def _check_gaps(self, rows, cols) -> None:
        if isinstance(cols, (int, np.integer)):
            cols = np.asarray([int(cols) + (self._a.shape[1] if cols < 0 else 0)])
        elif isinstance(cols, slice):
            cols = slice(*cols.indices(self._a.shape[1]))
        elif cols is not None and cols is not Ellipsis:
            cols = np.asarray(cols)
            cols = np.flatnonzero(cols) if cols.dtype == bool else np.where(cols < 0, cols + self._a.shape[1], cols)
        else:
            cols = None
        hit = [g for g in self.gaps if g.overlaps(rows, cols)]
        if hit:
            raise StoreError(f"the record lacks {hit[0].describe(self._steps)}"
                             + (f" (and {len(hit) - 1} more ranges)" if len(hit) > 1 else "")
                             + ": their chunk files are missing; restore them from a backup, or read other rows")

    def _read(self, fn):
        try:
            return fn()
        except (IndexError, StoreError):
            raise
        except Exception as e:  # a damaged chunk: decompression or decoding failed
            _settle_zarr()
            where = getattr(self._a, "path", "") or getattr(self._a, "name", "")
            raise StoreError(f"a chunk of the per-example array '{where}' is damaged and cannot be read "
                             f"({type(e).__name__}: {str(e)[:120]}); "
                             "restore it from a backup or re-run the affected steps") from None

    def __array__(self, dtype=None, copy=None):
        if self.gaps:
            self._check_gaps(slice(0, self.rows), None)
        out = np.asarray(self._read(lambda: self._a[: self.rows]))
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return f"RowBounded(shape={self.shape}, dtype={self.dtype})"


class Run:
    """A run directory opened for reading.

    Attributes:
        path: the run directory.
        losses: lazy (R, N) per-example losses, rows = recorded steps.
        correct: lazy (R, N) bool.
        steps: int (R,) the step of each row.
        index: int (N,) stable example id of each column.
        metrics: dict of numpy arrays, one per scalar (``step``, ``loss``, ``accuracy``, ``lr``,
            ``wall_time``, ``sharpness``, ...), NaN where a step lacks a value.
        config: the resolved :class:`~oppsig.config.Config` (or a plain dict for runs recorded
            by :class:`~oppsig.store.Recorder` with a free-form config).
        meta: format version, versions, code revision, device.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / STORE).exists():
            raise StoreError(f"{self.path} is not an oppsig run (no {STORE}); pass the run directory, e.g. runs/<name>")
        self.refresh()

    def refresh(self) -> "Run":
        """Re-read the number of complete rows (to follow a run that is being written).

        The store is checked against its own bookkeeping: ``progress.json`` may not claim
        more rows than the arrays hold, the steps of the complete rows must be present and
        strictly increasing, and every chunk of those rows must exist. A missing chunk of
        ``loss``/``correct`` is listed in :attr:`gaps` (with a warning); reading it raises.

        Raises:
            StoreError: the bookkeeping is unreadable or inconsistent, or the steps or index are missing.
        """
        prog = read_json(self.path / PROGRESS)
        if prog.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise StoreError(
                f"{self.path} was written by store format {prog['format_version']}, newer than this oppsig reads "
                f"({FORMAT_VERSION}); upgrade oppsig"
            )
        rows, logit_rows = prog.get("rows", 0), prog.get("logit_rows", 0)
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in (rows, logit_rows)):
            raise StoreError(f"{self.path / PROGRESS} is damaged (rows {rows!r}, logit_rows {logit_rows!r}); "
                             "restore it from a backup or re-create the run")
        store = self.path / STORE
        check_zarr_format(store)
        try:
            self._group = zarr.open_group(str(store), mode="r", zarr_format=ZARR_FORMAT)
            arrays = {k: self._group[k] for k in ("loss", "correct", "steps", "index")}
        except (KeyError, ValueError, OSError, TypeError) as e:
            raise StoreError(f"{store} is damaged or incomplete ({type(e).__name__}: {str(e)[:80]}); "
                             "restore it from a backup or re-create the run") from None
        for k in ("loss", "correct", "steps"):
            if rows > arrays[k].shape[0]:
                raise StoreError(f"{self.path / PROGRESS} says {rows} rows are complete but {store.name}/{k} holds "
                                 f"only {arrays[k].shape[0]}; the store's bookkeeping is inconsistent: restore "
                                 f"progress.json or re-create the run")
        self.rows, self.logit_rows = rows, logit_rows
        for k in ("steps", "index"):
            g = find_gaps(store, arrays[k], k, rows if k == "steps" else arrays[k].shape[0])
            if g:
                raise StoreError(f"{store.name} lacks {g[0].describe()} (chunk files missing); the steps and ids of "
                                 "the record cannot be known: restore them from a backup or re-create the run")
        try:
            self.steps = np.asarray(arrays["steps"][:rows])
            self.index = np.asarray(arrays["index"][:])
        except Exception as e:  # a damaged chunk
            _settle_zarr()
            raise StoreError(f"{store.name}/steps or index is damaged ({type(e).__name__}); restore it from a "
                             "backup or re-create the run") from None
        _check_steps(self.steps, self.path)
        last = prog.get("last_step")
        if rows and last is not None and last != int(self.steps[-1]):
            raise StoreError(f"{self.path / PROGRESS} says the last complete step is {last} but row {rows - 1} holds "
                             f"step {int(self.steps[-1])}; the store's bookkeeping is inconsistent")
        check = self._group.attrs.get("every_chunk_written", False) or self._group.attrs.get("writer") != "Recorder"
        self.gaps = [] if not check else find_gaps(store, arrays["loss"], "loss", rows)
        if self._group.attrs.get("every_chunk_written", False):
            self.gaps += find_gaps(store, arrays["correct"], "correct", rows)
        if self.gaps:
            warnings.warn(f"{self.path}: the record lacks {'; '.join(g.describe(self.steps) for g in self.gaps[:3])}"
                          + (f" and {len(self.gaps) - 3} more ranges" if len(self.gaps) > 3 else "")
                          + " (chunk files missing); reading them is an error", OppsigWarning, stacklevel=2)
        self._check_rows_against_meta(rows)
        gl = [g for g in self.gaps if g.array == "loss"]
        gc = [g for g in self.gaps if g.array == "correct"]
        self.losses = RowBounded(arrays["loss"], rows, gl, self.steps)
        self.correct = RowBounded(arrays["correct"], rows, gc, self.steps)
        return self

    def _check_rows_against_meta(self, rows: int) -> None:
        """Warn when a finished training run's meta.json implies another number of rows than progress.json counts."""
        p = self.path / META
        if not p.exists():
            if not (self.path / CONFIG).exists():
                return  # a bare store (StoreWriter used on its own)
            warnings.warn(f"{p} is missing: the run's versions, device and end are unknown, and the number of "
                          "recorded rows cannot be checked", OppsigWarning, stacklevel=3)
            return
        try:
            meta = read_json(p)
        except StoreError:
            return  # reading .meta raises with the reason
        cfg = self._group.attrs.get("config")
        nxt = meta.get("next_step")
        if "finished" not in meta or not isinstance(nxt, int) or not isinstance(cfg, dict):
            return
        every = (cfg.get("record") or {}).get("every", 1)
        first = meta.get("first_step", int(self.steps[0]) if rows else 0)  # runs written before first_step
        if not isinstance(every, int) or every < 1 or not isinstance(first, int):
            return
        # a run recording only the mini-batch losses (record.mode batch) writes no dense rows
        dense = (cfg.get("record") or {}).get("mode", "dense") != "batch"
        expected = len(range(-(-first // every) * every, nxt, every)) if dense else 0
        # not a run that moved on meanwhile
        if rows != expected and read_json(self.path / PROGRESS).get("rows") == rows:
            warnings.warn(f"{self.path / PROGRESS} counts {rows} recorded rows, but the run ended at step {nxt} "
                          f"(meta.json), which makes {expected}; the store's bookkeeping is inconsistent, the "
                          "numbers cover only the rows counted", OppsigWarning, stacklevel=3)

    # ------------------------------------------------------------------ lazily read parts
    @property
    def attrs(self) -> dict:
        return dict(self._group.attrs)

    @property
    def logits(self) -> RowBounded | None:
        if "logits" not in self._group:
            return None
        return RowBounded(self._group["logits"], self.logit_rows)

    @property
    def batches(self):
        """The sparse mini-batch record (:class:`~oppsig.store.batches.BatchRecord`), or None when not recorded."""
        from .batches import open_batches

        return open_batches(self.path, self._group)

    @property
    def logit_steps(self) -> np.ndarray:
        if "logit_steps" not in self._group:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self._group["logit_steps"][: self.logit_rows])

    @property
    def meta(self) -> dict:
        """``meta.json`` (an empty dict when absent).

        Raises:
            StoreError: when it is unreadable.
        """
        p = self.path / META
        return read_json(p) if p.exists() else {}

    @property
    def config(self) -> Any:
        """The run's :class:`~oppsig.config.Config` (a plain dict for a :class:`~oppsig.store.Recorder` run).

        Raises:
            StoreError: when ``config.yaml`` is unreadable, or is not a valid config of an oppsig training run.
        """
        p = self.path / CONFIG
        if not p.exists():
            return self.attrs.get("config")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, ValueError, OSError) as e:
            raise StoreError(f"{p} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}); "
                             "restore it from a backup (the config is also stored in checkpoints/last.pt)") from None
        from ..config import from_dict

        if not _is_oppsig_config(d):
            if isinstance(d, dict) or self.attrs.get("writer") == "Recorder":
                return d  # a free-form config from a user's own loop (Recorder(config=...))
            raise StoreError(f"{p} is damaged (holds a {type(d).__name__}, not a config); restore it from a backup")
        try:  # an oppsig config that does not load is an error, not a dict that later code misreads
            return from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{p} does not load: {e} (written by another oppsig version? "
                              "fix the key in the file, or read it with yaml.safe_load)") from None

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        p = self.path / METRICS
        rows, bad = [], []
        if p.exists():
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
            for i, line in enumerate(lines):
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, dict):
                    rows.append(row)
                elif i < len(lines) - 1:  # the last line may be one being written
                    bad.append(i + 1)
        if bad:
            warnings.warn(f"{p}: {len(bad)} damaged line(s) skipped (line {', '.join(map(str, bad[:5]))}"
                          f"{', ...' if len(bad) > 5 else ''}); the metrics of those steps are missing",
                          OppsigWarning, stacklevel=2)
        keys: list[str] = []
        for r in rows:
            for k in r:
                if k not in keys:
                    keys.append(k)
        out = {}
        for k in keys:
            vals = [r.get(k) for r in rows]
            if all(isinstance(v, (int, np.integer)) for v in vals) and k == "step":
                out[k] = np.asarray(vals, dtype=np.int64)
            else:
                out[k] = np.asarray([np.nan if v is None or isinstance(v, str) else v for v in vals], dtype=np.float64)
        short = metrics_shortfall(out.get("step", np.zeros(0)) if p.exists() else None, self.steps)
        if short and not bad and (self.path / CONFIG).exists() and self.attrs.get("writer") != "Recorder":
            warnings.warn(f"{self.path}: {short}; the loss, lr and sharpness of those steps are unknown (resume "
                          "the run from a checkpoint before them, or re-create it)", OppsigWarning, stacklevel=2)
        return out

    @property
    def config_changes(self) -> list[dict]:
        """Settings changed when the run was resumed (meta.json): ``[{"step": s, "changes": {key: value}}]``."""
        return list(self.meta.get("config_changes", []))

    def config_at(self, step: int) -> Any:
        """The config in force at ``step``: :attr:`config` (the run's first) with each change made at or before it."""
        cfg = self.config
        merged = {k: v for c in self.config_changes if c["step"] <= step for k, v in c["changes"].items()}
        return cfg.replace(merged) if merged and hasattr(cfg, "replace") else cfg

    @property
    def checkpoint(self) -> Path | None:
        p = self.path / CHECKPOINTS / "last.pt"
        return p if p.exists() else None

    def rows_of(self, steps) -> np.ndarray:
        """Row positions of the given steps (each must have been recorded)."""
        steps = np.atleast_1d(np.asarray(steps))
        pos = np.searchsorted(self.steps, steps)
        ok = (pos < len(self.steps)) & (self.steps[np.minimum(pos, len(self.steps) - 1)] == steps)
        if not ok.all():
            raise StoreError(f"steps {steps[~ok][:5].tolist()} were not recorded in {self.path}")
        return pos

    def example_losses(self, example_id: int) -> np.ndarray:
        """All recorded losses (R,) of the example with stable id ``example_id``."""
        col = np.flatnonzero(self.index == example_id)
        if len(col) == 0:
            raise StoreError(f"example id {example_id} is not in {self.path}")
        return np.asarray(self.losses[:, int(col[0])])

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, rows={self.rows}, examples={len(self.index)})"


def open_run(path: str | os.PathLike) -> Run:
    """Open a run directory for reading.

    Example:
        >>> from oppsig.store import Recorder
        >>> rec = Recorder(tmp_path / "run", num_examples=3)
        >>> for step in range(4):
        ...     rec.log(step, [0, 1, 2], torch.tensor([1.0, 2.0, 3.0]) / (step + 1))
        >>> rec.close()
        >>> run = open_run(tmp_path / "run")
        >>> run.losses.shape, run.steps[:3]
        ((4, 3), array([0, 1, 2]))

    Raises:
        StoreError: when ``path`` is not a run, or its store is damaged or from a newer format.
    """
    return Run(path)
