"""Per-example summary of a run, in the spirit of data maps (confidence / variability).

Columns, one row per example:
    id            stable example id
    mean_loss     mean loss over the recorded steps
    loss_std      standard deviation of the loss over the steps (variability)
    mean_abs_change  mean |loss change| between consecutive recorded steps
    final_loss    loss at the last recorded step
    accuracy      fraction of steps at which it was classified correctly (confidence proxy)
    forgetting    number of forgetting events (correct at one recorded step, wrong at the next)

``oppsig export`` adds ``class`` (the example's class name, or target character) and ``group`` (the opposing
group of ``signals.json`` it belongs to, empty if none) through ``extra`` columns.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import StoreError
from .format import atomic_open

FORMATS = (".csv", ".parquet")
"""The file formats :func:`write_summary` writes, by file suffix."""

COLUMNS = ("id", "mean_loss", "loss_std", "mean_abs_change", "final_loss", "accuracy", "forgetting")


def summary_table(run, block: int = 256) -> dict[str, np.ndarray]:
    """The per-example summary of ``run`` (see module docstring), read in blocks of ``block`` steps.

    Every statistic of an example divides by the steps at which that example has a
    loss (a run recorded by :class:`~oppsig.store.Recorder` may leave some as NaN):
    an example never logged gets NaN, not a mean over rows that hold no value.

    Raises:
        StoreError: when the run has no recorded step, or part of its record is missing
            (the message gives the missing rows and columns).
    """
    R, N = run.losses.shape
    if R == 0:
        raise StoreError(f"{run.path} has no recorded step to summarise")
    s1 = np.zeros(N)
    s2 = np.zeros(N)
    count = np.zeros(N, dtype=np.int64)  # steps with a loss, per example
    abs_change = np.zeros(N)
    n_change = np.zeros(N, dtype=np.int64)
    acc = np.zeros(N)
    forget = np.zeros(N, dtype=np.int64)
    final = np.full(N, np.nan)
    prev_loss = prev_corr = None
    for r0 in range(0, R, block):
        L = np.asarray(run.losses[r0 : r0 + block], dtype=np.float64)
        C = np.asarray(run.correct[r0 : r0 + block], dtype=bool)
        ok = ~np.isnan(L)
        count += ok.sum(0)
        s1 += np.where(ok, L, 0.0).sum(0)
        s2 += np.where(ok, L * L, 0.0).sum(0)
        acc += (C & ok).sum(0)
        seen = ok.any(0)
        final[seen] = L[ok.shape[0] - 1 - np.argmax(ok[::-1], 0), np.arange(N)][seen]
        if prev_loss is not None:
            L = np.vstack([prev_loss[None], L])
            C = np.vstack([prev_corr[None], C])
        d = np.abs(np.diff(L, axis=0))
        both = ~np.isnan(d)
        abs_change += np.where(both, d, 0.0).sum(0)
        n_change += both.sum(0)
        forget += (C[:-1] & ~C[1:] & both).sum(0)
        prev_loss, prev_corr = L[-1], C[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, s1 / count, np.nan)
        var = np.maximum(np.where(count > 0, s2 / count, np.nan) - mean**2, 0.0)
        return {
            "id": np.asarray(run.index),
            "mean_loss": mean,
            "loss_std": np.sqrt(var),
            "mean_abs_change": np.where(n_change > 0, abs_change / np.maximum(n_change, 1), np.nan),
            "final_loss": final,
            "accuracy": np.where(count > 0, acc / count, np.nan),
            "forgetting": forget,
        }


def batch_summary_table(batches, block: int = 1 << 20) -> dict[str, np.ndarray]:
    """The per-example summary of a sparse mini-batch record (``run.batches``), streamed in blocks of entries.

    The same columns as :func:`summary_table`, over each example's own observations
    (about one an epoch): changes and forgetting events are between consecutive
    observations of the example. Memory: a few (N,) arrays and one block.

    Raises:
        StoreError: when the record has no entry.
    """
    n = batches.n_examples
    if batches.entries == 0:
        raise StoreError(f"{batches.run_dir} has no recorded mini-batch loss to summarise")
    cnt = np.zeros(n, np.int64)
    s1 = np.zeros(n)
    s2 = np.zeros(n)
    acc = np.zeros(n)
    abs_change = np.zeros(n)
    forget = np.zeros(n, np.int64)
    last = np.full(n, np.nan)
    last_c = np.zeros(n, bool)
    for _, c, loss, corr in batches.blocks(block):
        order = np.argsort(c, kind="stable")  # entries are in step order: stable keeps each example's order
        c, loss, corr = c[order].astype(np.int64), loss[order].astype(np.float64), corr[order]
        cnt += np.bincount(c, minlength=n)
        s1 += np.bincount(c, loss, minlength=n)
        s2 += np.bincount(c, loss * loss, minlength=n)
        acc += np.bincount(c, corr, minlength=n)
        first = np.r_[True, c[1:] != c[:-1]]
        prev = np.where(first, last[c], np.r_[np.nan, loss[:-1]])
        prev_c = np.where(first, last_c[c], np.r_[False, corr[:-1]])
        has = np.isfinite(prev)
        abs_change += np.bincount(c[has], np.abs(loss[has] - prev[has]), minlength=n)
        forget += np.bincount(c[has], prev_c[has] & ~corr[has], minlength=n).astype(np.int64)
        end = np.r_[c[1:] != c[:-1], True]
        last[c[end]] = loss[end]
        last_c[c[end]] = corr[end]
    seen = np.maximum(cnt, 1)
    mean = np.where(cnt > 0, s1 / seen, np.nan)
    return {
        "id": np.asarray(batches.index),
        "mean_loss": mean,
        "loss_std": np.sqrt(np.maximum(s2 / seen - mean**2, 0.0)),
        "mean_abs_change": np.where(cnt > 1, abs_change / np.maximum(cnt - 1, 1), np.nan),
        "final_loss": last,
        "accuracy": np.where(cnt > 0, acc / seen, np.nan),
        "forgetting": forget,
    }


def uses_batches(run, source: str = "auto") -> bool:
    """Whether the per-example table of ``run`` comes from its sparse mini-batch record.

    ``source``: ``dense``, ``batch``, or ``auto`` (the batch record when the dense one has no row).

    Raises:
        StoreError: for an unknown source, or ``batch`` on a run without a mini-batch record.
    """
    if source not in ("auto", "dense", "batch"):
        raise StoreError(f"source must be auto, dense or batch, got {source!r}")
    batches = getattr(run, "batches", None) if source != "dense" else None
    if source == "batch" and batches is None:
        raise StoreError(f"{run.path} has no mini-batch record (store.zarr/batch); use --source dense")
    return batches is not None and (source == "batch" or run.losses.shape[0] == 0)


def write_summary(run, path: str | os.PathLike | None = None, extra: dict | None = None, source: str = "auto") -> Path:
    """Write :func:`summary_table` as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow);
    default ``<run>/examples.csv``.

    The file is written atomically (a failed write leaves no half file).

    Args:
        extra: more columns, ``{name: (N,) values}`` in the run's example order, written after the others
            (``None`` values are written as empty cells).
        source: ``dense`` (the dense record), ``batch`` (the sparse mini-batch record,
            :func:`batch_summary_table`) or ``auto`` (dense when it has a row, else batch); see :func:`uses_batches`.

    Raises:
        StoreError: when the suffix is not one of :data:`FORMATS`, an extra column does not have one value per
            example, pyarrow is missing, the folder does not exist, the file cannot be written, or the asked
            record is missing or empty.
    """
    path = Path(path) if path is not None else Path(run.path) / "examples.csv"
    if path.suffix.lower() not in FORMATS:
        raise StoreError(f"cannot write {path}: unknown format {path.suffix or '(no suffix)'!r}; "
                         f"name the file with one of {', '.join(FORMATS)} (e.g. {path.with_suffix('.csv').name})")
    if not path.parent.is_dir():
        raise StoreError(f"cannot write {path}: the folder {path.parent} does not exist; create it first")
    table = batch_summary_table(run.batches) if uses_batches(run, source) else summary_table(run)
    extra = dict(extra or {})
    for k, v in extra.items():
        if len(v) != len(table["id"]):
            raise StoreError(f"column {k!r} has {len(v)} values for {len(table['id'])} examples")
    try:
        if path.suffix.lower() == ".parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise StoreError("writing Parquet needs pyarrow (pip install pyarrow); or write .csv") from None
            with atomic_open(path, "wb") as f:
                pq.write_table(pa.table({**table, **{k: list(v) for k, v in extra.items()}}), f)
            return path
        with atomic_open(path, "w") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS + tuple(extra))
            for i in range(len(table["id"])):
                w.writerow([int(table["id"][i])] + [f"{table[c][i]:.6g}" for c in COLUMNS[1:-1]]
                           + [int(table["forgetting"][i])] + ["" if v[i] is None else v[i] for v in extra.values()])
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None
    return path
