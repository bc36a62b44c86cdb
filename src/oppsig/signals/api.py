"""The one-call search: :func:`find_signals` (one small function per stage) and its text summary.

Stages, each testable and replaceable alone:

- :func:`detect_stage`: read and check the matrix, one scan, spikes, components;
- :func:`group_stage`: groups of examples that move together (:mod:`~oppsig.signals.group`);
- :func:`pair_stage`: anti-phase pairs and their test (:mod:`~oppsig.signals.pair`);
- :func:`explain_stage`: what each group shares against its own classes (:mod:`~oppsig.signals.explain`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import SignalsConfig
from .detect import (
    Components,
    LossMatrix,
    Scan,
    coherent_components,
    detect_spikes,
    recurring_examples,
    rise_shares,
    scan_losses,
    spike_rows,
    spike_window,
)
from .explain import Descriptors, InputSpace, coherence_features, explain_group, input_descriptors
from .group import cohesion, find_groups, relative_view
from .pair import (
    GATES,
    AntiPhaseNull,
    CoherenceTest,
    anti_phase_candidates,
    anti_phase_draws,
    assess_pairs,
    draws_needed,
    pair_correlation,
    select_pairs,
)
from .result import Group, Pair, Recurring, SignalsError, SignalsResult, Spike, pair_name


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
    series = _split_columns(det.lm.diff_columns(np.concatenate(rows)), rows) if rows else []
    return rows, series


@dataclass
class Inputs:
    """The data set's input view, computed once: descriptors, class-mean space and the coherence test."""

    descriptors: Descriptors
    space: InputSpace
    test: CoherenceTest

    @classmethod
    def build(cls, dataset: Any, config: SignalsConfig) -> "Inputs":
        desc = input_descriptors(dataset)
        labels = dataset.y.numpy() if dataset.y.ndim == 1 else None
        feats = coherence_features(dataset, desc, config.n_pcs, config.seed)
        return cls(desc, InputSpace(dataset, seed=config.seed), CoherenceTest(feats, labels))


POOL = 2000
"""Random examples whose loss changes the anti-phase null draws from (more when a pair needs more)."""


def pair_candidates(det: Detection, rows: list[np.ndarray], series: list[np.ndarray], inputs: Inputs,
                    config: SignalsConfig) -> tuple[list[Pair], float]:
    """Every anti-phase candidate pair, tested, with what the gates after the test look at.

    A candidate is a pair of groups whose mean loss changes correlate at most
    ``max_pair_corr``: on the raw changes, or else on the relative ones (of ``log L``,
    ``Pair.view == "relative"``), where groups of examples the model already fits well,
    whose losses move little and together early on, oppose each other. Each candidate
    gets its within-class permutation p-value (:func:`~oppsig.signals.pair.assess_pairs`),
    the correlation of its group-mean difference with the leading component of its view
    (``leading_corr``) and the smaller direction ratio of its groups (``direction_ratio``);
    the pairs that pass the test, and the ``max_pairs`` strongest others, also get their
    anti-phase null in their view (``anti_phase_p``, ``null_corr``, ``beyond_corr``:
    :class:`~oppsig.signals.pair.AntiPhaseNull`). :func:`~oppsig.signals.pair.select_pairs`
    then applies the gates.

    Returns:
        ``(pairs, null_corr)``: the pairs in candidate order, and the mean correlation of
        random 20-vs-20 splits (the run's generic anti-phase).
    """
    r, n = det.lm.shape
    rng = np.random.default_rng(config.seed)
    total_swing = float(np.diff(det.total).std())
    means = np.stack([s.mean(axis=1) for s in series], axis=1) if series else np.zeros((r - 1, 0))
    swings = means.std(axis=0)
    cands = anti_phase_candidates(means, swings, config.max_pair_corr)
    view_of = ["raw"] * len(cands)
    views = {"raw": (det.lm, means, _reference(det.comps, det.total))}
    if det.relative is not None and series:  # pairs that oppose only in relative terms
        rel, rscan, rcomps = det.relative
        rmeans = np.stack([s.mean(axis=1) for s in _split_columns(rel.diff_columns(np.concatenate(rows)), rows)],
                          axis=1)
        seen = {(a, b) for a, b, _ in cands}
        more = [c for c in anti_phase_candidates(rmeans, swings, config.max_pair_corr) if c[:2] not in seen]
        if more:
            cands, view_of = cands + more, view_of + ["relative"] * len(more)
            views["relative"] = (rel, rmeans, _reference(rcomps, rscan.total))
    window = spike_rows(det.spikes, r - 1, config.spike_context)
    shares = [_spike_enrichment(np.concatenate([series[a], series[b]], axis=1), det.scan.abs_row, window, n)
              for a, b, _ in cands]
    ratio = swings / total_swing if total_swing > 0 else np.full(len(swings), np.inf)
    pairs = assess_pairs(cands, rows, ratio, shares, inputs.test, config.alpha, config.n_null, config.seed,
                         config.max_pair_corr)
    ratios = {g: inputs.space.direction(rows[g])["ratio"] for g in sorted({i for a, b, _ in cands for i in (a, b)})}
    # the anti-phase null for the pairs the gates look at and those shown among the rejected
    failing = sorted((i for i, p in enumerate(pairs) if p.failed), key=lambda i: -pairs[i].strength)
    need = {i for i, p in enumerate(pairs) if not p.failed} | set(failing[: config.max_pairs])
    size = min(n, max([POOL, 40] + [len(rows[pairs[i].a]) + len(rows[pairs[i].b]) for i in need]))
    pool = np.sort(rng.choice(n, size=size, replace=False))
    nulls = {v: AntiPhaseNull(lm.diff_columns(pool), ref) for v, (lm, _, ref) in views.items()}
    null_corr = float(nulls["raw"].draws(min(20, size // 2), min(20, size // 2), 1.0, 50, rng)[0].mean()) \
        if size >= 2 else float("nan")
    n_draws = anti_phase_draws(config.anti_phase_level)
    out = []
    for i, p in enumerate(pairs):
        view = view_of[i]
        _, vmeans, ref = views[view]
        extra = {"view": view, "leading_corr": pair_correlation(vmeans[:, p.a] - vmeans[:, p.b], ref),
                 "direction_ratio": float(min(ratios[p.a], ratios[p.b]))}
        ma, mb = len(rows[p.a]), len(rows[p.b])
        null = nulls[view]
        if i in need and ma + mb <= null.size:
            sign = float(np.sign(pair_correlation(vmeans[:, p.a], ref))) or 1.0
            ap = null.test(p.corr, null.beyond(vmeans[:, p.a], vmeans[:, p.b]), ma, mb, sign, n_draws,
                           np.random.default_rng([config.seed, p.a, p.b]))  # a pair's draws: its own
            extra.update(anti_phase_p=ap.p, null_corr=ap.null_corr, beyond_corr=ap.beyond, null_beyond=ap.null_beyond,
                         weak=bool(ap.p > config.anti_phase_level))
        out.append(Pair(**{**p.__dict__, **extra}))
    return out, null_corr


def _reference(comps: Components, total: np.ndarray) -> np.ndarray:
    """The time profile the anti-phase null ranks examples by: the leading component's (else the total's changes)."""
    return comps.time[:, 0] if comps.time.shape[1] else np.diff(total)


def pair_stage(det: Detection, rows: list[np.ndarray], series: list[np.ndarray], inputs: Inputs,
               config: SignalsConfig) -> tuple[list[Pair], float, dict]:
    """Anti-phase pairs of groups, tested against the within-class permutation null, then gated.

    :func:`pair_candidates`, then :func:`~oppsig.signals.pair.select_pairs` (the gates after
    the test: anti-phase beyond random splits of its sizes, as it is or beyond the leading
    oscillation (with ``anti_phase_gate``, the
    default; else such a pair is only flagged ``weak``), a visible difference, not the
    leading oscillation itself; each group in one reported pair).

    Returns:
        ``(pairs, null_corr, test)``: the ``max_pairs`` strongest significant and the
        ``max_pairs`` strongest other tested pairs (significant first, then by
        strength; spikes and rise shares attached), the mean correlation of random
        20-vs-20 splits by their co-movement, and the test's description.
    """
    tested, null_corr = pair_candidates(det, rows, series, inputs, config)
    pairs = select_pairs(tested, config.anti_phase_level, config.min_direction_ratio, config.max_leading_corr,
                         GATES if config.anti_phase_gate else tuple(g for g in GATES if g != "anti-phase"))
    kept = ([p for p in pairs if p.significant][: config.max_pairs]
            + [p for p in pairs if not p.significant][: config.max_pairs])
    out = [_with_spikes(p, series, det, config) for p in kept]
    n_tested = len({i for p in tested for i in (p.a, p.b)})
    n_perm = draws_needed(config.n_null, config.alpha)
    test = {
        "method": "the pipeline's groups on the loss record permuted among the examples of each class: "
                  f"input coherence (descriptors and {config.n_pcs} input PCs, whitened within class)",
        "error": "family-wise error rate over the groups in tested pairs (single-step max-T)",
        "alpha": config.alpha,
        "groups_tested": n_tested,
        "threshold": config.alpha,
        "n_null": n_perm,
        "resolution": 1.0 / (n_perm + 1),
        "features": inputs.test.dims,
        "gates": "after the test, each only removes pairs: both groups visibly different from their classes "
                 "(direction ratio >= min_direction_ratio), not the leading oscillation itself "
                 "(|leading_corr| < max_leading_corr)" + (", anti-phase beyond random splits of the pair's sizes, "
                 "as it is or beyond the leading oscillation (Bonferroni p <= anti_phase_level)" if config.anti_phase_gate
                 else "; a pair no more anti-phase than random splits of its sizes, as it is or beyond the leading "
                 "oscillation (Bonferroni p > anti_phase_level), is flagged weak"),
        "anti_phase_gate": config.anti_phase_gate,
        "anti_phase_level": config.anti_phase_level,
        "anti_phase_draws": anti_phase_draws(config.anti_phase_level),
        "min_direction_ratio": config.min_direction_ratio,
        "max_leading_corr": config.max_leading_corr,
    }
    return out, null_corr, test


def explain_stage(dataset: Any, rows: list[np.ndarray], series: list[np.ndarray], inputs: Inputs,
                  config: SignalsConfig) -> tuple[Group, ...]:
    """One :class:`Group` per group: members by swing, class mix, descriptors against their classes, direction."""
    ids = dataset.index.numpy()
    total_swing = None
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
    del total_swing
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
            memory only within ``config.max_memory_mb``. A :class:`~oppsig.signals.detect.LossMatrix`
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
            store in its tasks (:class:`~oppsig.signals.detect.LossMatrix`); the same
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
    try:
        dataset = run_dataset(run, dataset)
    except (DataFormatError, StoreError) as e:
        raise SignalsError(str(e)) from None
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
    res = find_signals(losses, steps, dataset, sharpness=sharpness, config=config)
    return _with_sharpness_bounds(res, metrics)


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
    from .detect import MIN_ROWS

    if source not in SOURCES:
        raise SignalsError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "auto":
        return "batch" if run.rows < MIN_ROWS and run.batches is not None else "dense"
    return source


def epoch_length(run: Any, batches: Any) -> int:
    """Steps per epoch of a mini-batch run: ``ceil(N / train.batch_size)`` from its config, else read off
    its sparse record (the step at which every example has been seen once, counted from the first step).

    Raises:
        SignalsError: when neither tells (pass ``steps_per_epoch``).
    """
    import math

    bs = getattr(getattr(run.config, "train", None), "batch_size", None)
    if bs:
        return math.ceil(batches.n_examples / bs)
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
    if scheduler is not None and len(L) >= 8:  # the (epochs, N) matrix, its passes on Dask as asked
        L = LossMatrix(L, config.block_rows, config.max_memory_mb, scheduler=scheduler)
    res = find_signals(L, steps, dataset, config=config)
    record = {"source": "batch", "steps_per_epoch": int(per), "epochs": int(len(S)),
              "what": "each example's loss from the training forward of its own mini-batch, one row per epoch"}
    return dataclasses.replace(res, dataset={**res.dataset, "record": record})


def _split_columns(series: np.ndarray, rows: list[np.ndarray]) -> list[np.ndarray]:
    """Cut ``series`` (T, sum of sizes) into one block of columns per group."""
    out, s = [], 0
    for r in rows:
        out.append(series[:, s : s + len(r)])
        s += len(r)
    return out


def _spike_enrichment(series: np.ndarray, abs_row: np.ndarray, window: np.ndarray, n: int) -> float:
    """Share of the spike windows' |loss change| carried by the columns, over their share of the examples."""
    tot = float(abs_row[window].sum()) if len(window) else 0.0
    if tot <= 0:
        return float("nan")
    return (float(np.abs(series[window]).sum()) / tot) / (series.shape[1] / n)


def _with_top(s: Spike, scan: Scan, lm: LossMatrix) -> Spike:
    """The spike with the top-k rows of the change into its peak (largest increase / decrease first)."""
    t = s.row - 1
    if t < 0:
        return s
    d = lm.row(s.row) - lm.row(t)
    up, down = scan.top_up[t], scan.top_down[t]
    up = up[np.argsort(-d[up], kind="stable")]
    down = down[np.argsort(d[down], kind="stable")]
    return Spike(**{**s.__dict__, "top_up": tuple(int(i) for i in up), "top_down": tuple(int(i) for i in down)})


def _with_spikes(p: Pair, series: list[np.ndarray], det: Detection, config: SignalsConfig, top: int = 3) -> Pair:
    """The pair with the spikes where it carries most |loss change| (in each :func:`spike_window`), and its
    share of their rise (:func:`rise_shares`)."""
    if not det.spikes:
        return p
    ser = np.concatenate([series[p.a], series[p.b]], axis=1)
    n_changes = len(det.scan.abs_row)
    shares = []
    for s in det.spikes:
        lo, hi = spike_window(s, n_changes, config.spike_context)
        tot = det.scan.abs_row[lo:hi].sum()
        shares.append(np.abs(ser[lo:hi]).sum() / tot if tot > 0 else 0.0)
    best = [det.spikes[i] for i in np.argsort(-np.asarray(shares), kind="stable")[:top]]
    rise = rise_shares(ser, det.total, best, det.lm.shape[1])
    return Pair(**{**p.__dict__, "spikes": tuple(s.row for s in best), "spike_rise_share": tuple(rise)})


def verification_text(v) -> str:
    """One line for a :class:`~oppsig.signals.result.Verification`: the cosines, the sharpness with its bound
    (marked when not converged), or why the check failed."""
    if not np.isfinite(v.grad_cosine):
        return f"groups {v.a} and {v.b} not verified: {v.error}"
    e = ""
    if v.eig_cosine_a is not None and v.eig_cosine_b is not None:
        e = f", |cos| with the top Hessian eigenvector {v.eig_cosine_a:.2f} / {v.eig_cosine_b:.2f}"
    if v.sharpness is not None:
        mark = "" if v.eig_converged else " (not converged: not certified)"
        e += f" (sharpness {v.sharpness:.4g} +- {v.sharpness_error:.2g}{mark})"
    if v.error:
        e += f"; {v.error}"
    at = f" at step {v.step}" if v.step is not None else ""
    return f"gradients of groups {v.a} and {v.b}{at}: cosine {v.grad_cosine:+.2f}{e}"


def failed_text(p: Pair) -> str:
    """Why a pair is not reported, in words (its :attr:`~oppsig.signals.result.Pair.failed` checks).

    Example:
        >>> p = Pair(0, 1, -0.5, 1, 1, 1, 1, -0.6, 0.001, 0.01, False, anti_phase_p=0.2, failed=("anti-phase",))
        >>> failed_text(p)  # doctest: +ELLIPSIS
        'anti-phase -0.50 no stronger than random examples of its sizes split the same way (-0.60), nor beyond ...'
    """
    why = {
        "test": f"input coherence p={p.p_value:.2g} > {p.threshold:.2g}" if p.p_value > p.threshold
        else f"anti-phase {p.corr:.2f} weaker than the candidates' limit",
        "anti-phase": f"anti-phase {p.corr:.2f} no stronger than random examples of its sizes split the same way "
                      f"({p.null_corr:.2f}), nor beyond the leading oscillation ({p.beyond_corr:.2f} vs "
                      f"{p.null_beyond:.2f}; p={p.anti_phase_p:.2g})",
        "visible": f"a group's mean input differs from its classes' by only {p.direction_ratio:.2f}x a typical "
                   "example's distance",
        "leading": f"its group-mean difference is the leading oscillation (corr {p.leading_corr:.2f})",
        "partner": "a stronger pair holds one of its groups",
        "gradient": "its groups' gradients do not point apart on the model (cosine >= 0)",
    }
    return "; ".join(why.get(f, f) for f in p.failed) or "reported"


def summary_text(result: SignalsResult, max_groups: int = 6) -> str:
    """A short human summary of ``result`` (what the CLI prints).

    Example:
        >>> print(summary_text(SignalsResult(n_rows=10, n_examples=4)))  # doctest: +ELLIPSIS
        opposing signals: 10 recorded steps x 4 examples
        ...
    """
    lines = [f"opposing signals: {result.n_rows} recorded steps x {result.n_examples} examples"]
    rec = result.dataset.get("record") if isinstance(result.dataset, dict) else None
    if rec and rec.get("source") == "batch":
        lines[0] = (f"opposing signals: {result.n_rows} epochs ({rec['steps_per_epoch']} steps each) x "
                    f"{result.n_examples} examples, each seen in its own mini-batch once an epoch")
    if result.spikes:
        sp = ", ".join(f"{s.step} (+{100 * s.height:.0f}%)" for s in sorted(result.spikes, key=lambda s: -s.height)[:5])
        lines.append(f"loss spikes: {len(result.spikes)}; largest at steps {sp}")
    else:
        lines.append("loss spikes: none")
    k = result.config.get("k", 20)
    lines.append(
        f"top-{2 * k} examples carry {100 * result.top_share:.1f}% of the absolute loss change per step "
        f"(mean); recurring extremes: {len(result.recurring)}; groups: {len(result.groups)}"
    )
    t = result.test
    if t:
        lines.append(
            f"test: {t.get('groups_tested', 0)} groups in anti-phase pairs against {t.get('n_null', 0)} "
            f"within-class permutations (p resolution {t.get('resolution', float('nan')):.1g}); "
            f"{t.get('error', 'family-wise error')} at {t.get('alpha', float('nan')):g}"
        )
    if not result.pairs:
        best = result.rejected_pairs[0] if result.rejected_pairs else None
        extra = (f" (best candidate corr {best.corr:.2f}, p={best.p_value:.2g}; {failed_text(best)})"
                 if best is not None else "")
        lines.append(f"no significant opposing pair{extra}; generic null halves correlate at {result.null_corr:.2f}")
    elif any(p.failed and set(p.failed) - {"test", "partner"} for p in result.rejected_pairs):
        gated = [p for p in result.rejected_pairs if p.failed and set(p.failed) - {"test", "partner"}]
        lines.append(f"{len(gated)} more pair(s) passed the test but not the gates after it, e.g. groups "
                     f"{gated[0].a} and {gated[0].b}: {failed_text(gated[0])}")
    verified = {(v.a, v.b): v for v in result.verifications}
    for i, p in enumerate(result.pairs):
        ga, gb = result.group(p.a), result.group(p.b)
        lines.append(
            f"{pair_name(i, p)}: corr {p.corr:.2f}{' in relative terms (of log L)' if p.view == 'relative' else ''} "
            f"(random examples of its sizes split the same way "
            f"{p.null_corr:.2f}; beyond the leading oscillation {p.beyond_corr:.2f} vs {p.null_beyond:+.2f}; "
            f"p={p.anti_phase_p:.2g}{'; WEAK: no more anti-phase than they are' if p.weak else ''}), "
            f"swing {p.swing:.1f}x the total loss's, spike share {p.spike_share:.1f}x its size, "
            f"input coherence {p.coherence:.1f}x null, p={p.p_value:.2g} (family-wise, {p.n_null} permutations)"
        )
        for g in (ga, gb):
            lines.append(f"  group {g.id}: {g.explanation}")
        if p.spikes:
            sh = ", ".join(f"step {result.steps[r]}: {100 * s:.0f}%" for r, s in zip(p.spikes, p.spike_rise_share)
                           if np.isfinite(s))
            if sh:
                lines.append(f"  share of the total-loss rise: {sh}")
        v = verified.get((p.a, p.b)) or verified.get((p.b, p.a))
        if v is not None:
            lines.append("  " + verification_text(v))
    shown = {p.a for p in result.pairs} | {p.b for p in result.pairs}
    others = [g for g in result.groups if g.id not in shown][: max(0, max_groups - len(shown))]
    for g in others:
        lines.append(f"group {g.id}: {g.explanation}")
    return "\n".join(lines)
