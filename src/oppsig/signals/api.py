"""The one-call search: :func:`find_signals` and its text summary."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from .config import SignalsConfig
from .detect import (
    LossMatrix,
    coherent_components,
    detect_spikes,
    recurring_rows,
    scan_losses,
    select_candidates,
    spike_rows,
)
from .explain import InputSpace, explain_group, input_descriptors
from .group import cluster_series, cohesion, merge_with_tails, refine_groups
from .pair import NullModel, PairContext, find_pairs, spike_rise_shares
from .result import Group, Pair, Recurring, SignalsError, SignalsResult, Spike, pair_name


def _check_inputs(m: LossMatrix, steps: Any, dataset: Any, total_loss: Any, sharpness: Any):
    r, n = m.shape
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


def find_signals(
    losses: Any,
    steps: Any,
    dataset: Any,
    total_loss: Any = None,
    sharpness: Any = None,
    config: SignalsConfig = SignalsConfig(),
) -> SignalsResult:
    """Find opposing signals in a per-example loss record.

    Pipeline: detect (spikes of the total loss, per-step top-k extremes,
    recurring examples, coherent components) -> group (correlation of loss
    changes, input descriptors as a second view) -> pair (anti-phase groups
    tested against the generic edge-of-stability null) -> explain (class mix,
    shared descriptors in words, signal direction).

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
        the null (empty when none does), ``result.rejected_pairs`` the best others.

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
    m = losses if isinstance(losses, LossMatrix) else LossMatrix(losses, config.block_rows, config.max_memory_mb)
    r, n = m.shape
    steps, total_loss, sharpness = _check_inputs(m, steps, dataset, total_loss, sharpness)
    scan = scan_losses(m, config.k)
    total = scan.total if total_loss is None else total_loss
    spikes = detect_spikes(total, steps, config, sharpness)
    spikes = [_with_top(s, scan, m) for s in spikes]
    timings["scan"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    comps = coherent_components(m, scan, config)
    cand = select_candidates(scan, comps, config)
    rng = np.random.default_rng(config.seed)
    pool = np.sort(rng.choice(n, size=min(n, config.null_pool), replace=False))
    both = np.union1d(cand, pool)
    series_all = m.diff_columns(both)
    pos = {int(c): i for i, c in enumerate(both)}
    cand_series = series_all[:, [pos[int(c)] for c in cand]]
    pool_series = series_all[:, [pos[int(c)] for c in pool]]
    timings["detect"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    desc = input_descriptors(dataset)
    labels = dataset.y.numpy() if dataset.y.ndim == 1 else None
    # only outliers form groups: examples whose loss swings well above the typical example's,
    # or that move together with others in a component of their own
    eligible = scan.std >= config.min_swing_ratio * float(np.median(scan.std))
    for tail in comps.tails:
        eligible[tail] = True
    keep = eligible[cand]
    cand, cand_series = cand[keep], cand_series[:, keep]
    groups_pos = []
    if len(cand) >= 2 * config.min_group_size:
        groups_pos = cluster_series(
            cand_series,
            desc.z[cand],
            None if labels is None else labels[cand],
            cut=config.cluster_distance,
            feature_weight=config.feature_weight,
            class_weight=config.class_weight,
            min_group_size=config.min_group_size,
        )
    seeds = merge_with_tails(
        [cand[gp] for gp in groups_pos], [t[eligible[t]] for t in comps.tails], desc.z, labels,
        config.feature_weight, config.class_weight, config.min_group_size,
    )
    seed_series = _split_columns(m.diff_columns(np.concatenate(seeds)), seeds) if seeds else []
    g_rows = refine_groups(
        m, scan.mean, scan.std, seeds, seed_series,
        min_corr=1.0 - config.cluster_distance, min_beta=config.min_beta, min_group_size=config.min_group_size,
        eligible=eligible,
    )
    g_series = _split_columns(m.diff_columns(np.concatenate(g_rows)), g_rows) if g_rows else []
    swings = [float(s.mean(axis=1).std()) for s in g_series]
    order = np.argsort(-np.asarray(swings), kind="stable")[: config.max_groups]
    g_series = [g_series[i] for i in order]
    g_rows = [g_rows[i] for i in order]
    timings["group"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    ctx = PairContext(
        spike_rows=spike_rows(spikes, r - 1, config.spike_context) if spikes else np.arange(r - 1),
        abs_row=scan.abs_row,
        n_examples=n,
        desc_z=desc.z,
        labels=labels,
    )
    if len(ctx.spike_rows) == 0:
        ctx.spike_rows = np.arange(r - 1)
    reference = comps.time[:, 0] if comps.time.shape[1] else np.diff(total)
    null = NullModel.build(pool, pool_series, reference)
    tested, null_corr = find_pairs(
        g_series, g_rows, ctx, null, config.max_pair_corr, config.alpha, config.n_null, config.seed
    )
    tested = [_with_spikes(p, g_series, total, spikes, n, ctx) for p in tested]
    sig = tuple(p for p in tested if p.significant)[: config.max_pairs]
    rejected = tuple(p for p in tested if not p.significant)[: config.max_pairs]
    timings["pair"] = time.perf_counter() - t3

    t4 = time.perf_counter()
    ids = dataset.index.numpy()
    space = InputSpace(dataset, seed=config.seed)
    groups = []
    for gid, (rows, ser) in enumerate(zip(g_rows, g_series)):
        by_swing = np.argsort(-ser.std(axis=0), kind="stable")
        rows, ser = rows[by_swing], ser[:, by_swing]
        e = explain_group(dataset, rows, desc, config.min_effect, config.max_words, space)
        groups.append(
            Group(
                id=gid,
                members=tuple(int(i) for i in rows),
                ids=tuple(int(i) for i in ids[rows]),
                cohesion=cohesion(ser),
                swing=float(ser.mean(axis=1).std()),
                class_counts=e["class_counts"],
                descriptors=e["descriptors"],
                shared=e["shared"],
                direction_norm=e["direction_norm"],
                direction_ratio=e["direction_ratio"],
                projection_ratio=e["projection_ratio"],
                direction=e["direction"],
                explanation=e["explanation"],
            )
        )
    timings["explain"] = time.perf_counter() - t4
    rec_rows = recurring_rows(scan, config.min_recurrence)[: config.max_candidates]
    at_spikes = np.bincount(np.array([i for s in spikes for i in s.top_up + s.top_down], dtype=np.int64), minlength=n)
    recurring = tuple(
        Recurring(
            row=int(i), id=int(ids[i]), n_up=int(scan.n_up[i]), n_down=int(scan.n_down[i]),
            energy=float(scan.energy[i]), alternation=float(scan.alternation[i]), n_spikes=int(at_spikes[i]),
        )
        for i in rec_rows
    )
    timings["total"] = time.perf_counter() - t0
    return SignalsResult(
        n_rows=r,
        n_examples=n,
        steps=steps,
        total_loss=np.asarray(total, dtype=np.float64),
        spikes=tuple(spikes),
        recurring=recurring,
        groups=tuple(groups),
        pairs=sig,
        rejected_pairs=rejected,
        config=config.to_dict(),
        dataset={"name": getattr(dataset, "name", ""), "classes": list(getattr(dataset, "classes", ()))},
        top_share=float(scan.top_share.mean()),
        null_corr=null_corr,
        timings=timings,
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
    return find_signals(losses, steps, dataset, sharpness=sharpness, config=config)


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


def _with_top(s: Spike, scan, m: LossMatrix) -> Spike:
    """The spike with the top-k rows of the change into its peak (largest increase / decrease first)."""
    t = s.row - 1
    if t < 0:
        return s
    d = m.row(s.row) - m.row(t)
    up, down = scan.top_up[t], scan.top_down[t]
    up = up[np.argsort(-d[up], kind="stable")]
    down = down[np.argsort(d[down], kind="stable")]
    return Spike(**{**s.__dict__, "top_up": tuple(int(i) for i in up), "top_down": tuple(int(i) for i in down)})


def _with_spikes(p: Pair, g_series, total, spikes, n, ctx: PairContext, top: int = 3) -> Pair:
    """The pair with the spikes where it carries most |loss change|, and its share of their rise."""
    if not spikes:
        return p
    ser = np.concatenate([g_series[p.a], g_series[p.b]], axis=1)
    shares = []
    for s in spikes:
        w = np.arange(max(0, s.onset_row - 2), min(len(ctx.abs_row), s.row + 1))
        tot = ctx.abs_row[w].sum()
        shares.append(np.abs(ser[w]).sum() / tot if tot > 0 else 0.0)
    best = [spikes[i] for i in np.argsort(-np.asarray(shares), kind="stable")[:top]]
    rise = spike_rise_shares(ser, total, best, n)
    return Pair(**{**p.__dict__, "spikes": tuple(s.row for s in best), "spike_rise_share": tuple(rise)})


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
    if not result.pairs:
        best = result.rejected_pairs[0] if result.rejected_pairs else None
        extra = (f" (best candidate corr {best.corr:.2f}, p={best.p_value:.2g} > {best.threshold:.2g})"
                 if best is not None else "")
        lines.append(f"no significant opposing pair{extra}; generic null halves correlate at {result.null_corr:.2f}")
    verified = {(v.a, v.b): v for v in result.verifications}
    for i, p in enumerate(result.pairs):
        ga, gb = result.group(p.a), result.group(p.b)
        lines.append(
            f"{pair_name(i, p)}: corr {p.corr:.2f} (null {p.null_corr:.2f}), swing z {p.z_swing:.1f}, "
            f"spike share {p.spike_share:.1f}x (z {p.z_spike:.1f}), coherence z {p.z_coherence:.1f}, p={p.p_value:.2g}"
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
            e = ""
            if v.eig_cosine_a is not None and v.eig_cosine_b is not None:
                e = f", |cos| with the top Hessian eigenvector {v.eig_cosine_a:.2f} / {v.eig_cosine_b:.2f}"
            at = f" at step {v.step}" if v.step is not None else ""
            lines.append(f"  gradients of the two groups{at}: cosine {v.grad_cosine:+.2f}{e}")
    shown = {p.a for p in result.pairs} | {p.b for p in result.pairs}
    others = [g for g in result.groups if g.id not in shown][: max(0, max_groups - len(shown))]
    for g in others:
        lines.append(f"group {g.id}: {g.explanation}")
    return "\n".join(lines)
