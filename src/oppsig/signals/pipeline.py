"""The one-call search :func:`find_signals`, one small function per stage.

Stages, each testable and replaceable alone:

- :func:`detect_stage`: read and check the matrix, one scan, spikes, components;
- :func:`group_stage`: groups of examples that move together (:mod:`~oppsig.signals.group`);
- :func:`~oppsig.signals.pairing.pair_stage`: anti-phase pairs and their test (:mod:`~oppsig.signals.pair`);
- :func:`explain_stage`: what each group shares against its own classes (:mod:`~oppsig.signals.explain`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import SignalsConfig
from ..store.dataset import has_inputs
from .detect import Components, Scan, coherent_components, recurring_examples, scan_losses
from .explain import explain_group
from .group import cohesion, find_groups, relative_view
from .matrix import LossMatrix
from .pairing import Inputs, pair_stage, split_columns
from .replication import ReplicationTest
from .result import Group, Recurring, SignalsError, SignalsResult, Spike
from .spikes import detect_spikes


def _check_inputs(lm: LossMatrix, steps: Any, dataset: Any, total_loss: Any, sharpness: Any):
    r, n = lm.shape
    steps = np.asarray(steps)
    if steps.shape != (r,):
        raise SignalsError(f"steps must have shape ({r},) (one per loss row), got {steps.shape}")
    if not np.issubdtype(steps.dtype, np.number) or not np.isfinite(steps.astype(np.float64)).all():
        raise SignalsError("steps must be finite numbers")
    if (np.diff(steps) <= 0).any():
        i = int(np.flatnonzero(np.diff(steps) <= 0)[0])
        raise SignalsError(f"steps must increase strictly; steps[{i}]={steps[i]} then steps[{i + 1}]={steps[i + 1]}")
    if len(dataset) != n:
        raise SignalsError(f"losses has {n} example columns but the data set has {len(dataset)} examples")
    if total_loss is not None:
        total_loss = np.asarray(total_loss, dtype=np.float64)
        if total_loss.shape != (r,):
            raise SignalsError(f"total_loss must have shape ({r},), got {total_loss.shape}")
        if not np.isfinite(total_loss).all():
            bad = np.flatnonzero(~np.isfinite(total_loss))[:5].tolist()
            raise SignalsError(f"total_loss holds non-finite values at rows {bad}")
    if sharpness is not None:
        sharpness = np.asarray(sharpness, dtype=np.float64)
        if sharpness.shape != (r,):
            raise SignalsError(f"sharpness must have shape ({r},) (NaN where not measured), got {sharpness.shape}")
    return steps.astype(np.int64), total_loss, sharpness


@dataclass
class Detection:
    """What :func:`detect_stage` finds: the matrix, its scan, the spikes and the leading components, and the
    same for the relative changes (:func:`~oppsig.signals.group.relative_view`; ``None`` for losses that can be
    negative)."""

    lm: LossMatrix
    scan: Scan
    steps: np.ndarray
    total: np.ndarray
    spikes: list[Spike]
    comps: Components
    relative: tuple[LossMatrix, Scan, Components] | None = None


def detect_stage(losses: Any, steps: Any, dataset: Any, total_loss: Any, sharpness: Any,
                 config: SignalsConfig) -> Detection:
    """Read and check the loss matrix, scan it once, find the spikes (with their top-k) and the components."""
    lm = losses if isinstance(losses, LossMatrix) else LossMatrix(losses, config.block_rows, config.max_memory_mb)
    steps, total_loss, sharpness = _check_inputs(lm, steps, dataset, total_loss, sharpness)
    scan = scan_losses(lm, config.k)
    total = scan.total if total_loss is None else total_loss
    spikes = [_with_top(s, scan, lm) for s in detect_spikes(total, steps, config, sharpness)]
    return Detection(lm, scan, steps, np.asarray(total, dtype=np.float64), spikes,
                     coherent_components(lm, scan, config), relative_view(lm, config))


def group_stage(det: Detection, config: SignalsConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The groups (rows, largest swing first) and each group's loss changes (R-1, m_g)."""
    rows = find_groups(det.lm, det.scan, det.comps, config, det.relative)
    series = split_columns(det.lm.diff_columns(np.concatenate(rows)), rows) if rows else []
    return rows, series


def explain_stage(dataset: Any, rows: list[np.ndarray], series: list[np.ndarray], inputs: Inputs,
                  config: SignalsConfig) -> tuple[Group, ...]:
    """One :class:`Group` per group: members by swing, class mix, descriptors against their classes, direction."""
    ids = dataset.index.numpy()
    groups = []
    for gid, (rr, ser) in enumerate(zip(rows, series)):
        by_swing = np.argsort(-ser.std(axis=0), kind="stable")
        rr, ser = rr[by_swing], ser[:, by_swing]
        e = explain_group(dataset, rr, inputs.descriptors, config.min_effect, config.max_words, inputs.space)
        groups.append(
            Group(
                id=gid, members=tuple(int(i) for i in rr), ids=tuple(int(i) for i in ids[rr]),
                cohesion=cohesion(ser), swing=float(ser.mean(axis=1).std()),
                class_counts=e["class_counts"], descriptors=e["descriptors"], shared=e["shared"],
                direction_norm=e["direction_norm"], direction_ratio=e["direction_ratio"],
                projection_ratio=e["projection_ratio"], direction=e["direction"], explanation=e["explanation"],
            )
        )
    return tuple(groups)


def find_signals(
    losses: Any,
    steps: Any,
    dataset: Any,
    total_loss: Any = None,
    sharpness: Any = None,
    config: SignalsConfig = SignalsConfig(),
) -> SignalsResult:
    """Find opposing signals in a per-example loss record.

    Pipeline: :func:`detect_stage` (spikes of the total loss, per-step top-k
    extremes, recurring examples, leading components) -> :func:`group_stage`
    (examples whose losses move together, found by coherence) -> :func:`pair_stage`
    (anti-phase pairs; each group's input coherence tested against the same
    procedure on the loss record permuted within classes, family-wise error
    ``alpha``; then gates that only remove pairs: more anti-phase than random
    examples of the pair's sizes split by their co-movement (as it is or beyond the
    leading oscillation), a visible difference
    from their classes, not the leading oscillation itself) -> :func:`explain_stage`
    (class mix, descriptors against the group's own classes, direction image).

    Args:
        losses: (R, N) array-like of per-example losses; row ``r`` is recorded
            step ``steps[r]``, column ``i`` is row ``i`` of ``dataset``. May be a
            lazy array (zarr); it is read in blocks of ``config.block_rows`` rows, held in
            memory only within ``config.max_memory_mb``. A :class:`~oppsig.signals.matrix.LossMatrix`
            is used as it is (e.g. one with a Dask scheduler).
        steps: (R,) strictly increasing training steps of the rows.
        dataset: :class:`~oppsig.data.ArrayDataset` with N examples (``x``,
            ``y``, ``index``, ``classes``; ``raw`` images for descriptors if present).
        total_loss: optional (R,) total training loss per row (default: the row
            mean of ``losses``, which is the full-batch loss).
        sharpness: optional (R,) sharpness per row, NaN where not measured.
        config: :class:`SignalsConfig`.

    Returns:
        :class:`SignalsResult`; ``result.pairs`` holds only the pairs that beat
        the null (empty when none does), ``result.rejected_pairs`` the best others,
        ``result.test`` the null's size, resolution and the error it controls.

    Raises:
        SignalsError: for a matrix that is not 2-D, too short (fewer than 8
            rows), holds NaN/inf, or whose sizes disagree with ``steps``,
            ``dataset``, ``total_loss`` or ``sharpness``.

    Example:
        >>> from oppsig.data import opposing_signals
        >>> ds = opposing_signals(n=200, seed=0)
        >>> L = np.random.default_rng(0).random((50, 200)).astype("float32") + 1
        >>> res = find_signals(L, np.arange(50), ds)
        >>> res.pairs
        ()
    """
    if not isinstance(config, SignalsConfig):
        raise SignalsError(f"config must be a SignalsConfig, got {type(config).__name__}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    det = detect_stage(losses, steps, dataset, total_loss, sharpness, config)
    timings["detect"] = time.perf_counter() - t0
    t = time.perf_counter()
    rows, series = group_stage(det, config)
    timings["group"] = time.perf_counter() - t
    t = time.perf_counter()
    inputs = Inputs.build(dataset, config)
    if not has_inputs(dataset):  # the record alone: its own pair test (replication in time), no visible gate
        labels = dataset.y.numpy() if dataset.y.ndim == 1 else np.zeros(len(dataset), dtype=np.int64)
        inputs = dataclasses.replace(inputs, record=ReplicationTest(labels))
    tested, null_corr, test = pair_stage(det, rows, series, inputs, config)
    sig = tuple(p for p in tested if p.significant)[: config.max_pairs]
    rejected = tuple(p for p in tested if not p.significant)[: config.max_pairs]
    timings["pair"] = time.perf_counter() - t
    t = time.perf_counter()
    groups = explain_stage(dataset, rows, series, inputs, config)
    timings["explain"] = time.perf_counter() - t
    recurring = _recurring(det, dataset, config)
    timings["total"] = time.perf_counter() - t0
    r, n = det.lm.shape
    return SignalsResult(
        n_rows=r,
        n_examples=n,
        steps=det.steps,
        total_loss=det.total,
        spikes=tuple(det.spikes),
        recurring=recurring,
        groups=groups,
        pairs=sig,
        rejected_pairs=rejected,
        config=config.to_dict(),
        dataset={"name": getattr(dataset, "name", ""), "classes": list(getattr(dataset, "classes", ()))},
        top_share=float(det.scan.top_share.mean()),
        null_corr=null_corr,
        test=test,
        timings=timings,
    )


def _recurring(det: Detection, dataset: Any, config: SignalsConfig) -> tuple[Recurring, ...]:
    scan, n = det.scan, det.lm.shape[1]
    ids = dataset.index.numpy()
    rows = recurring_examples(scan, config.min_recurrence)[: config.max_candidates]
    at_spikes = np.bincount(np.array([i for s in det.spikes for i in s.top_up + s.top_down], dtype=np.int64),
                            minlength=n)
    return tuple(
        Recurring(
            row=int(i), id=int(ids[i]), n_up=int(scan.n_up[i]), n_down=int(scan.n_down[i]),
            energy=float(scan.energy[i]), alternation=float(scan.alternation[i]), n_spikes=int(at_spikes[i]),
        )
        for i in rows
    )


def _with_top(s: Spike, scan: Scan, lm: LossMatrix) -> Spike:
    """The spike with the top-k rows of the change into its peak (largest increase / decrease first)."""
    t = s.row - 1
    if t < 0:
        return s
    d = lm.row(s.row) - lm.row(t)
    up, down = scan.top_up[t], scan.top_down[t]
    up = up[np.argsort(-d[up], kind="stable")]
    down = down[np.argsort(d[down], kind="stable")]
    return dataclasses.replace(s, top_up=tuple(int(i) for i in up), top_down=tuple(int(i) for i in down))
