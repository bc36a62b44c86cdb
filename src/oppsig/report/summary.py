"""One summary of a run, shared by the report, ``oppsig compare`` and ``oppsig intervene``.

Example:
    >>> class Run:  # the fields of a run that the summary reads
    ...     metrics = {"loss": [1.0, 0.5], "accuracy": [0.2, 0.6], "sharpness": [10.0, 25.0],
    ...                "threshold": [20.0, 20.0]}
    ...     meta = {}
    >>> s = run_summary(Run())
    >>> s["final loss"], s["max sharpness / threshold"], s["time at EoS"], s["sharpness measure"]
    (0.5, 1.25, 0.5, 'raw')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..store.dataset import data_mismatch, run_dataset_or_reason

__all__ = ["run_summary", "load_signals", "signals_summary", "example_columns"]


def load_signals(run_dir: str | Path):
    """The run's ``signals.json`` as a :class:`~oppsig.signals.SignalsResult`, or None when it has none.

    Raises:
        DataFormatError: when the file exists but cannot be read.
    """
    from ..signals import read_signals_json

    p = Path(run_dir) / "signals.json"
    return read_signals_json(p) if p.exists() else None


def _ratio(m: dict, key: str) -> np.ndarray:
    """``m[key] / m["threshold"]`` where both are finite, aligned by position."""
    a, t = np.asarray(m.get(key, []), float), np.asarray(m.get("threshold", []), float)
    n = min(len(a), len(t))
    a, t = a[:n], t[:n]
    ok = np.isfinite(a) & np.isfinite(t)
    return a[ok] / t[ok]


ADAPTIVE = ("adam", "adamw")  # their stability threshold applies to the preconditioned sharpness


def run_summary(run) -> dict[str, Any]:
    """Figures of one run from its metrics: final loss/accuracy, sharpness against the threshold.

    ``max sharpness / threshold``, ``median sharpness / threshold`` and ``time at
    EoS`` (the fraction of measurements at or above 90% of the optimiser's
    stability threshold) compare the sharpness that the threshold is for: the raw
    top eigenvalue for GD/SGD (``sharpness measure`` = ``raw``), the
    preconditioned one for Adam/AdamW (``preconditioned``; NaN when the run did
    not track it, ``curvature.preconditioned``). ``max sharpness (raw)`` and
    ``max preconditioned sharpness`` are both given; ``unconverged sharpness``
    counts the measurements whose solve did not meet its tolerance.
    """
    m = run.metrics
    out: dict[str, Any] = {}
    loss = np.asarray(m.get("loss", []), dtype=float)
    out["steps"] = int(len(loss))
    out["final loss"] = float(loss[-1]) if len(loss) else float("nan")
    acc = np.asarray(m.get("accuracy", []), dtype=float)
    out["final accuracy"] = float(acc[-1]) if len(acc) else float("nan")
    ta = np.asarray(m.get("test_accuracy", []), dtype=float)
    ta = ta[np.isfinite(ta)]
    final = (getattr(run, "meta", None) or {}).get("final") or {}
    out["test accuracy"] = float(final.get("test_accuracy", ta[-1] if len(ta) else float("nan")))
    s = np.asarray(m.get("sharpness", []), dtype=float)
    out["mean sharpness"] = float(np.nanmean(s)) if np.isfinite(s).any() else float("nan")
    out["max sharpness (raw)"] = float(np.nanmax(s)) if np.isfinite(s).any() else float("nan")
    ps = np.asarray(m.get("precond_sharpness", []), dtype=float)
    out["max preconditioned sharpness"] = float(np.nanmax(ps)) if np.isfinite(ps).any() else float("nan")
    optim = getattr(getattr(getattr(run, "config", None), "optim", None), "name", None)
    key = "precond_sharpness" if optim in ADAPTIVE else "sharpness"
    out["sharpness measure"] = "preconditioned" if optim in ADAPTIVE else "raw"
    conv = [np.asarray(m[f"converged/{k}"], dtype=float) for k in ("sharpness", "precond_sharpness")
            if f"converged/{k}" in m]
    out["unconverged sharpness"] = int(sum(int((c == 0).sum()) for c in conv))
    r = _ratio(m, key)
    out["max sharpness / threshold"] = float(r.max()) if len(r) else float("nan")
    out["median sharpness / threshold"] = float(np.median(r)) if len(r) else float("nan")
    out["time at EoS"] = float(np.mean(r >= 0.9)) if len(r) else float("nan")
    p = _ratio(m, "precond_sharpness")
    out["median precond / threshold"] = float(np.median(p)) if len(p) else float("nan")
    return out


def signals_summary(sig) -> dict[str, Any]:
    """Spikes, pairs and the largest pair swing of a signals result (dashes when there is none)."""
    if sig is None:
        return {"spikes": "–", "largest spike": "–", "pairs": "–", "group oscillation": "–"}
    pairs = list(sig.pairs)
    return {"spikes": len(sig.spikes), "largest spike": max((s.height for s in sig.spikes), default=0.0),
            "pairs": len(pairs), "group oscillation": max((float(p.swing) for p in pairs), default=float("nan"))}


def example_columns(run, allow_other_data: bool = False) -> tuple[dict, str | None]:
    """The ``class`` and ``group`` columns of a run's examples (in its column order), and why one is missing.

    With ``allow_other_data`` and data that are not those the run trained on, an ``other_data`` column says so
    in every row (:func:`~oppsig.store.run_dataset`)."""
    cols: dict = {}
    data, note = run_dataset_or_reason(run, allow_other_data=allow_other_data)
    if data is not None and len(getattr(data, "classes", ())):
        cols["class"] = [data.classes[int(y)] for y in data.y]
    mismatch = data_mismatch(data)
    if mismatch is not None:
        cols["other_data"] = [f"class from other data: fingerprint {mismatch['found'][:12]}, "
                              f"the run's {mismatch['expected'][:12]}"] * len(run.index)
    sig = load_signals(run.path)
    group: list = [None] * len(run.index)
    # groups name columns of the record detection read: the sparse one (source batch) or the dense one
    sig_batch = sig is not None and (sig.dataset or {}).get("record", {}).get("source") == "batch"
    same = sig is not None and sig_batch == getattr(run, "is_epoch_view", False) and sig.n_examples == len(run.index)
    for g in getattr(sig, "groups", ()) if same else ():
        for r in g.members:
            if group[int(r)] is None:
                group[int(r)] = int(g.id)
    cols["group"] = group
    return cols, (note if "class" not in cols else None)
