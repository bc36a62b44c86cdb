"""The search on a recorded run: :func:`find_signals_in_run` reads the dense record or the sparse mini-batch
record of an ``oppsig.open_run(path)`` and calls :func:`~oppsig.signals.pipeline.find_signals`.

- :func:`record_source`: which record detection reads;
- a mini-batch run's probe subset: groups found there are extended to every example by the mini-batch
  record (:func:`extend_to_batches`, :mod:`~oppsig.signals.extend`);
- :func:`epoch_length`: steps per epoch of a mini-batch run (rows of the batch record's epoch matrix);
- the spikes' sharpness gets the error bound and converged flag the run recorded with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..config import SignalsConfig
from .matrix import LossMatrix
from .pipeline import find_signals
from .result import SignalsError, SignalsResult
from .tuning import MIN_ROWS, PROBE_CANDIDATES

SOURCES = ("auto", "dense", "batch")


def find_signals_in_run(
    run: Any,
    dataset: Any = None,
    config: SignalsConfig = SignalsConfig(),
    source: str = "auto",
    steps_per_epoch: int | None = None,
    scheduler: Any = None,
) -> SignalsResult:
    """:func:`find_signals` on a recorded run (``oppsig.open_run(path)``).

    Args:
        run: a :class:`~oppsig.store.Run` (``losses`` lazy (R, N), ``steps``,
            ``index`` stable ids of the columns, ``metrics``, ``config``; ``batches``
            for a mini-batch run's sparse record).
        dataset: the training data set; default: rebuilt from the run's config
            (:func:`oppsig.store.run_dataset`). Its rows are matched to the run's
            columns by stable id, so a run that recorded a subset (probe) works;
            a per-token record gets one example per recorded token.
        config: :class:`SignalsConfig`.
        source: ``"dense"``: the dense record ``loss[step, example]`` (full-batch
            training, or a probe set); ``"batch"``: the sparse mini-batch record,
            read as one row per complete epoch holding each example's loss at its
            visit in that epoch (:meth:`~oppsig.store.batches.BatchRecord.epoch_matrix`);
            ``"auto"``: dense when it has at least 8 rows, else batch.
        steps_per_epoch: the epoch length of the batch record (default: from the
            run's ``train.batch_size``, else read off the record).
        scheduler: ``None`` (here) or a Dask scheduler / ``distributed.Client`` that
            computes the passes over the dense record block by block, reading the
            store in its tasks (:class:`~oppsig.signals.matrix.LossMatrix`); the same
            result as here.

    Returns:
        :class:`SignalsResult`; the total loss is the row mean of the recorded
        losses, and the sharpness comes from ``run.metrics["sharpness"]`` when recorded
        (dense only). From the batch record, rows are epochs (``steps`` holds each
        epoch's first step) and ``result.dataset["record"]`` says so.

    Raises:
        SignalsError: when the data set cannot be rebuilt or lacks examples of the run,
            or the asked record is missing.
    """
    from ..errors import DataFormatError, StoreError
    from ..store import run_dataset

    if record_source(run, source) == "batch":
        return _find_in_batches(run, run.batches, dataset, config, steps_per_epoch, scheduler)
    given = dataset
    try:
        dataset = run_dataset(run, given)
    except (DataFormatError, StoreError) as e:
        raise SignalsError(str(e)) from None
    full = None
    if is_probe_subset(run):  # every example's data, to extend the probe's groups (without them: by losses alone)
        try:
            full = run_dataset(run, given, index=run.batches.index)
        except (DataFormatError, StoreError):
            full = None
    steps = np.asarray(run.steps)
    sharpness = None
    metrics = run.metrics
    if "sharpness" in metrics and "step" in metrics:
        by_step = {int(st): float(v) for st, v in zip(metrics["step"], metrics["sharpness"])}
        sharpness = np.array([by_step.get(int(st), np.nan) for st in steps])
        if not np.isfinite(sharpness).any():
            sharpness = None
    losses = run.losses
    if scheduler is not None:
        losses = LossMatrix(losses, config.block_rows, config.max_memory_mb, scheduler=scheduler)
    probe = is_probe_subset(run)
    if probe:  # a mini-batch probe: rows k steps apart, each change holding k steps of mini-batch noise
        config = dataclasses.replace(config, min_corr=config.probe_min_corr, min_recurrence=1,
                                     neighbour_seeds=config.probe_neighbour_seeds,
                                     max_candidates=max(config.max_candidates, PROBE_CANDIDATES))
    total = weighted_total(run) if probe else None
    res = find_signals(losses, steps, dataset, total_loss=total, sharpness=sharpness, config=config)
    if probe:
        res = extend_to_batches(res, run, full, steps_per_epoch or epoch_length(run, run.batches), config.seed,
                                config.probe_min_corr)
    return _with_sharpness_bounds(res, metrics)


def weighted_total(run: Any, block: int = 256) -> np.ndarray | None:
    """The data set's mean loss at each probe row, from a probe with an outlier stratum (``meta["probe_outliers"]``,
    weighted back by :func:`~oppsig.store.probe_plan.probe_weights`); None for a uniform probe (the row mean)."""
    from ..store.probe_plan import probe_weights

    outliers = (getattr(run, "meta", None) or {}).get("probe_outliers")
    if not outliers:
        return None
    w = probe_weights(np.asarray(run.index), np.asarray(outliers), len(run.batches.index))
    L = run.losses
    rows = [np.asarray(L[s:s + block], dtype=np.float64) @ w for s in range(0, len(L), block)]
    return np.concatenate(rows) if rows else np.zeros(0)


def is_probe_subset(run: Any) -> bool:
    """Whether ``run``'s dense record probes a subset of the examples its mini-batch record holds."""
    b = getattr(run, "batches", None)
    return b is not None and len(run.index) < b.n_examples


def extend_to_batches(res: SignalsResult, run: Any, full: Any, per: int, seed: int = 0,
                      min_corr: float = 0.6) -> SignalsResult:
    """``res`` (found on the probe subset) with each group completed on the probe and extended to the unprobed
    examples of the mini-batch record (:func:`~oppsig.signals.extend.predict_group`); groups the probe split are
    joined when their members move together (mean log-loss changes correlated at least ``min_corr``); ``full`` is
    the data set of every example, or None."""
    from .extend import BatchView, predict_group
    from .join import Moves, join_split_partners, merge_extended
    from .group import relative_floor

    b = run.batches
    L, S = b.epoch_matrix(per)
    bidx = np.asarray(b.index)
    col = {int(i): j for j, i in enumerate(bidx)}
    pidx = np.asarray(run.index)
    probed = np.array([col[int(i)] for i in pidx], dtype=np.int64)
    P = np.asarray(run.losses, dtype=np.float64)
    floor = relative_floor(P[0])
    plog = np.log(P + floor)
    labels = full.y.cpu().numpy() if full is not None and full.y.dim() == 1 else None
    x = getattr(full, "x", None)
    inputs = x.cpu().numpy() if x is not None and x.is_floating_point() else None
    view = BatchView.build(probed, L, S, plog, np.asarray(run.steps, np.float64), bidx, labels, inputs, floor)
    found = [predict_group(view, np.array([col[i] for i in g.ids], dtype=np.int64), seed) for g in res.groups]
    groups = tuple(dataclasses.replace(g, extension=ext) for g, (ext, _) in zip(res.groups, found))
    record = {"source": "probe+batch", "probe_examples": int(len(pidx)), "examples": int(len(bidx)),
              "rows": int(len(P)), "steps_per_epoch": int(per), "epochs": int(len(S)),
              "what": "groups found on the probe subset, extended to every example by its mini-batch losses"
                      + (", class" if labels is not None else "") + (" and inputs" if inputs is not None else "")}
    changes, pcol = view.changes, {int(i): j for j, i in enumerate(pidx)}
    groups, pairs, rejected = merge_extended(groups, res.pairs, res.rejected_pairs, [named for _, named in found],
                                             Moves(changes, pcol, min_corr))
    groups, pairs, rejected = join_split_partners(groups, pairs, rejected, changes, pcol)
    if labels is not None:  # a joined group's members by class (the parts' counts overlap where they did)
        groups = _recounted(groups, labels, col, tuple(full.classes))
    return dataclasses.replace(res, groups=groups, pairs=pairs, rejected_pairs=rejected,
                               dataset={**res.dataset, "record": record})


def _recounted(groups, labels: np.ndarray, col: dict[int, int], classes: tuple[str, ...]) -> tuple:
    """``groups`` with each one's ``class_counts`` counted again over its members (ids) from ``labels``."""
    from .explain import class_counts

    return tuple(dataclasses.replace(g, class_counts=class_counts(labels, [col[int(i)] for i in g.ids], classes))
                 for g in groups)


def _with_sharpness_bounds(res: SignalsResult, metrics: dict) -> SignalsResult:
    """Spikes' sharpness with the bound and converged flag the run recorded for that measurement (when it did)."""
    if not any(s.sharpness_step is not None for s in res.spikes) or "step" not in metrics:
        return res
    at = {int(st): i for i, st in enumerate(metrics["step"])}

    def get(key, step):
        v = metrics.get(key)
        return None if v is None or step not in at or not np.isfinite(v[at[step]]) else float(v[at[step]])

    spikes = []
    for s in res.spikes:
        if s.sharpness_step is not None:
            conv = get("converged/sharpness", s.sharpness_step)
            s = dataclasses.replace(s, sharpness_error=get("err/sharpness", s.sharpness_step),
                                    sharpness_converged=None if conv is None else conv == 1.0)
        spikes.append(s)
    return dataclasses.replace(res, spikes=tuple(spikes))


def record_source(run: Any, source: str = "auto") -> str:
    """Which record of ``run`` detection reads: ``"dense"`` or ``"batch"`` (``"auto"``: dense when it has
    at least 8 rows, else the sparse mini-batch record when there is one).

    Raises:
        SignalsError: for an unknown ``source``.
    """
    if source not in SOURCES:
        raise SignalsError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "auto":
        return "batch" if run.rows < MIN_ROWS and run.batches is not None else "dense"
    return source


def epoch_length(run: Any, batches: Any) -> int:
    """Steps per epoch of a mini-batch run: ``ceil(N / train.batch_size)`` from its config (``floor`` with
    ``train.drop_last``), else read off its sparse record (the step at which every example has been seen once,
    counted from the first step).

    Raises:
        SignalsError: when neither tells (pass ``steps_per_epoch``).
    """
    from ..training.step import steps_per_epoch

    train = getattr(run.config, "train", None)
    bs = getattr(train, "batch_size", None)
    if bs:
        return steps_per_epoch(batches.n_examples, bs, bool(getattr(train, "drop_last", False)))
    for s, c, _, _ in batches.blocks():
        _, first = np.unique(c, return_index=True)
        if len(first) == batches.n_examples:
            return int(s[first.max()] - s[0] + 1)
        break
    raise SignalsError(f"cannot tell the epoch length of {run.path}'s mini-batch record; pass steps_per_epoch")


def _find_in_batches(run, batches, dataset, config, steps_per_epoch, scheduler=None) -> SignalsResult:
    from ..errors import DataFormatError, StoreError
    from ..store import run_dataset

    if batches is None:
        raise SignalsError(f"{run.path} has no mini-batch record (store.zarr/batch); record one with "
                           "record.mode=batch (or both), or Recorder(sparse=True), or use source='dense'")
    per = steps_per_epoch or epoch_length(run, batches)
    try:
        L, S = batches.epoch_matrix(per)
        if dataset is None or len(dataset) != batches.n_examples:
            dataset = run_dataset(run, dataset, index=batches.index)
    except (DataFormatError, StoreError) as e:
        raise SignalsError(str(e)) from None
    steps = (S[:, 0] // per) * per if len(S) else np.zeros(0, np.int64)
    if scheduler is not None and len(L) >= MIN_ROWS:  # the (epochs, N) matrix, its passes on Dask as asked
        L = LossMatrix(L, config.block_rows, config.max_memory_mb, scheduler=scheduler)
    res = find_signals(L, steps, dataset, config=config)
    record = {"source": "batch", "steps_per_epoch": int(per), "epochs": int(len(S)),
              "what": "each example's loss from the training forward of its own mini-batch, one row per epoch"}
    return dataclasses.replace(res, dataset={**res.dataset, "record": record})
