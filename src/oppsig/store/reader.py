"""Reading a run: ``run = open_run(path)``; works while the run is still being written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr

from ..errors import ConfigError, StoreError
from .format import CHECKPOINTS, CONFIG, FORMAT_VERSION, META, METRICS, PROGRESS, STORE, ZARR_FORMAT, check_zarr_format, read_json


def _is_oppsig_config(d: Any) -> bool:
    """Whether a config dict was written by ``oppsig train`` (it has the train/data/model sections)."""
    return isinstance(d, dict) and all(isinstance(d.get(k), dict) for k in ("data", "model", "train"))


class RowBounded:
    """A lazy, numpy-like view of a zarr array limited to its first ``rows`` rows.

    Indexing reads only what is asked for: ``a[step_row]`` (all examples of one
    row), ``a[:, j]`` (one example over all rows), slices and integer arrays.
    ``np.asarray(a)`` reads everything.
    """

    def __init__(self, array, rows: int) -> None:
        self._a = array
        self.rows = rows

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
        if isinstance(first, np.ndarray) or any(isinstance(r, (list, np.ndarray)) for r in rest):
            # orthogonal selection for integer arrays on any axis
            sel = (first,) + rest
            sel = tuple(np.asarray(s) if isinstance(s, list) else s for s in sel)
            return self._read(lambda: self._a.oindex[sel])
        return self._read(lambda: self._a[(first,) + rest])

    def _read(self, fn):
        try:
            return fn()
        except (IndexError, StoreError):
            raise
        except Exception as e:  # a damaged chunk: decompression or decoding failed
            where = getattr(self._a, "path", "") or getattr(self._a, "name", "")
            raise StoreError(f"a chunk of the per-example array '{where}' is damaged and cannot be read "
                             f"({type(e).__name__}: {str(e)[:120]}); restore it from a backup or re-run the affected steps") from None

    def __array__(self, dtype=None, copy=None):
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
        """Re-read the number of complete rows (to follow a run that is being written)."""
        try:
            prog = read_json(self.path / PROGRESS)
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"{self.path / PROGRESS} is unreadable ({e}); the run's store may be damaged") from None
        if prog.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise StoreError(
                f"{self.path} was written by store format {prog['format_version']}, newer than this oppsig reads "
                f"({FORMAT_VERSION}); upgrade oppsig"
            )
        check_zarr_format(self.path / STORE)
        try:
            self._group = zarr.open_group(str(self.path / STORE), mode="r", zarr_format=ZARR_FORMAT)
            self.rows = int(prog.get("rows", 0))
            self.logit_rows = int(prog.get("logit_rows", 0))
            self.losses = RowBounded(self._group["loss"], self.rows)
            self.correct = RowBounded(self._group["correct"], self.rows)
            self.steps = np.asarray(self._group["steps"][: self.rows])
            self.index = np.asarray(self._group["index"][:])
        except (KeyError, ValueError, OSError) as e:
            raise StoreError(f"{self.path / STORE} is damaged or incomplete ({e})") from None
        return self

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
        p = self.path / META
        return read_json(p) if p.exists() else {}

    @property
    def config(self) -> Any:
        p = self.path / CONFIG
        if not p.exists():
            return self.attrs.get("config")
        d = yaml.safe_load(p.read_text())
        from ..config import from_dict

        if not _is_oppsig_config(d):  # a free-form config from a user's own loop (Recorder(config=...)): a dict
            return d
        try:  # an oppsig config that does not load is an error, not a dict that later code misreads
            return from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{p} does not load: {e} (written by another oppsig version? "
                              "fix the key in the file, or read it with yaml.safe_load)") from None

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        p = self.path / METRICS
        rows = []
        if p.exists():
            for line in p.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line being written
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
        return out

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
        >>> run = open_run("runs/demo")            # doctest: +SKIP
        >>> run.losses.shape, run.steps[:3]         # doctest: +SKIP
        ((1000, 5000), array([0, 1, 2]))

    Raises:
        StoreError: when ``path`` is not a run, or its store is damaged or from a newer format.
    """
    return Run(path)
