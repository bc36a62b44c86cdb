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

COLUMNS = ("id", "mean_loss", "loss_std", "mean_abs_change", "final_loss", "accuracy", "forgetting")


def summary_table(run, block: int = 256) -> dict[str, np.ndarray]:
    """The per-example summary of ``run`` (see module docstring), read in blocks of ``block`` steps.

    Raises:
        StoreError: when the run has no recorded step.
    """
    R, N = run.losses.shape
    if R == 0:
        raise StoreError(f"{run.path} has no recorded step to summarise")
    s1 = np.zeros(N)
    s2 = np.zeros(N)
    abs_change = np.zeros(N)
    acc = np.zeros(N)
    forget = np.zeros(N, dtype=np.int64)
    prev_loss = prev_corr = None
    for r0 in range(0, R, block):
        L = np.asarray(run.losses[r0 : r0 + block], dtype=np.float64)
        C = np.asarray(run.correct[r0 : r0 + block], dtype=bool)
        s1 += np.nansum(L, 0)
        s2 += np.nansum(L * L, 0)
        acc += C.sum(0)
        if prev_loss is not None:
            L = np.vstack([prev_loss[None], L])
            C = np.vstack([prev_corr[None], C])
        abs_change += np.nansum(np.abs(np.diff(L, axis=0)), 0)
        forget += (C[:-1] & ~C[1:]).sum(0)
        prev_loss, prev_corr = L[-1], C[-1]
    mean = s1 / R
    var = np.maximum(s2 / R - mean**2, 0.0)
    return {
        "id": np.asarray(run.index),
        "mean_loss": mean,
        "loss_std": np.sqrt(var),
        "mean_abs_change": abs_change / max(R - 1, 1),
        "final_loss": prev_loss.astype(np.float64),
        "accuracy": acc / R,
        "forgetting": forget,
    }


def write_summary(run, path: str | os.PathLike | None = None, extra: dict | None = None) -> Path:
    """Write :func:`summary_table` as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow); default ``<run>/examples.csv``.

    Args:
        extra: more columns, ``{name: (N,) values}`` in the run's example order, written after the others
            (``None`` values are written as empty cells).

    Raises:
        StoreError: when an extra column does not have one value per example, or pyarrow is missing.
    """
    table = summary_table(run)
    extra = dict(extra or {})
    for k, v in extra.items():
        if len(v) != len(table["id"]):
            raise StoreError(f"column {k!r} has {len(v)} values for {len(table['id'])} examples")
    path = Path(path) if path is not None else Path(run.path) / "examples.csv"
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise StoreError("writing Parquet needs pyarrow (pip install pyarrow); or write .csv") from None
        pq.write_table(pa.table({**table, **{k: list(v) for k, v in extra.items()}}), path)
        return path
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + tuple(extra))
        for i in range(len(table["id"])):
            w.writerow([int(table["id"][i])] + [f"{table[c][i]:.6g}" for c in COLUMNS[1:-1]] + [int(table["forgetting"][i])]
                       + ["" if v[i] is None else v[i] for v in extra.values()])
    return path
