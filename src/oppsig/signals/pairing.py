"""The pair stage of :func:`~oppsig.signals.find_signals`: anti-phase candidates, their test and the gates.

:func:`pair_candidates` is a composition of small steps: the views of the loss changes the
candidates are anti-phase in (:func:`candidate_views`), the coherence test of every candidate
(:func:`~oppsig.signals.pair.assess_pairs`), the pool of random examples and the anti-phase
null of each view (:func:`anti_phase_nulls`), and each pair's own anti-phase test
(:func:`with_anti_phase`). :func:`pair_stage` then applies the gates
(:func:`~oppsig.signals.pair.select_pairs`). The stage reads the
:class:`~oppsig.signals.pipeline.Detection` of the detect stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import SignalsConfig
from .antiphase import AntiPhaseNull, anti_phase_draws
from .detect import Components
from .descriptors import Descriptors, input_descriptors
from .explain import InputSpace, coherence_features
from .matrix import LossMatrix
from .pair import (BEYOND_CORR, GATES, CoherenceTest, anti_phase_candidates, anti_phase_order, assess_pairs,
                   draws_needed, pair_correlation, select_pairs)
from .result import AntiPhase, Pair
from .spikes import rise_shares, spike_rows, spike_window
from .tuning import NULL_HALF, NULL_HALF_DRAWS, POOL, derived_rng


@dataclass
class Inputs:
    """The data set's input view, computed once: descriptors, class-mean space and the coherence test; for a data
    set without inputs (:func:`~oppsig.store.dataset.record_dataset`), ``record``: the pair test that needs only
    the record (:class:`~oppsig.signals.replication.ReplicationTest`), used instead of ``test``."""

    descriptors: Descriptors
    space: InputSpace
    test: CoherenceTest
    record: Any = None

    @classmethod
    def build(cls, dataset: Any, config: SignalsConfig) -> "Inputs":
        desc = input_descriptors(dataset)
        labels = dataset.y.numpy() if dataset.y.ndim == 1 else None
        feats = coherence_features(dataset, desc, config.n_pcs, config.seed)
        return cls(desc, InputSpace(dataset, seed=config.seed), CoherenceTest(feats, labels))


@dataclass
class View:
    """One view of the loss changes that candidates are anti-phase in.

    Attributes:
        name: ``"raw"`` or ``"relative"`` (changes of ``log L``).
        lm: its loss matrix (R, N).
        means: (R-1, G) the groups' mean changes in it.
        reference: (R-1,) the time profile its anti-phase null ranks examples by (:func:`reference_profile`).
    """

    name: str
    lm: LossMatrix
    means: np.ndarray
    reference: np.ndarray


def split_columns(series: np.ndarray, rows: list[np.ndarray]) -> list[np.ndarray]:
    """Cut ``series`` (T, sum of sizes) into one block of columns per group."""
    out, s = [], 0
    for r in rows:
        out.append(series[:, s : s + len(r)])
        s += len(r)
    return out


def reference_profile(comps: Components, total: np.ndarray) -> np.ndarray:
    """The time profile the anti-phase null ranks examples by: the leading component's (else the total's changes)."""
    return comps.time[:, 0] if comps.time.shape[1] else np.diff(total)


@dataclass
class Candidates:
    """The anti-phase candidates and the views they were found in.

    Attributes:
        pairs: ``(a, b, corr)`` of each candidate (:func:`~oppsig.signals.pair.anti_phase_candidates`).
        view_of: the :class:`View` of each candidate.
        views: the views: raw, then relative when it adds candidates.
        swings: (G,) each group's swing (standard deviation of its raw mean change).
    """

    pairs: list[tuple[int, int, float]]
    view_of: list[View]
    views: list[View]
    swings: np.ndarray


def candidate_views(det, rows: list[np.ndarray], series: list[np.ndarray], config: SignalsConfig) -> Candidates:
    """The anti-phase candidates: on the raw changes, then those only the relative ones add."""
    r = det.lm.shape[0]
    means = np.stack([s.mean(axis=1) for s in series], axis=1) if series else np.zeros((r - 1, 0))
    swings = means.std(axis=0)
    cands = anti_phase_candidates(means, swings, config.max_pair_corr)
    raw = View("raw", det.lm, means, reference_profile(det.comps, det.total))
    out = Candidates(cands, [raw] * len(cands), [raw], swings)
    if det.relative is not None and series:  # pairs that oppose only in relative terms
        rel, rscan, rcomps = det.relative
        rmeans = np.stack([s.mean(axis=1) for s in split_columns(rel.diff_columns(np.concatenate(rows)), rows)],
                          axis=1)
        seen = {(a, b) for a, b, _ in cands}
        more = [c for c in anti_phase_candidates(rmeans, swings, config.max_pair_corr) if c[:2] not in seen]
        if more:
            relative = View("relative", rel, rmeans, reference_profile(rcomps, rscan.total))
            out = Candidates(cands + more, out.view_of + [relative] * len(more), [raw, relative], swings)
    return out


def spike_enrichment(series: np.ndarray, abs_row: np.ndarray, window: np.ndarray, n: int) -> float:
    """Share of the spike windows' |loss change| carried by the columns, over their share of the examples."""
    tot = float(abs_row[window].sum()) if len(window) else 0.0
    if tot <= 0:
        return float("nan")
    return (float(np.abs(series[window]).sum()) / tot) / (series.shape[1] / n)


def tested_pairs(det, rows: list[np.ndarray], series: list[np.ndarray], cands: list[tuple[int, int, float]],
                 swings: np.ndarray, inputs: Inputs, config: SignalsConfig) -> list[Pair]:
    """Every candidate with its coherence test (:func:`~oppsig.signals.pair.assess_pairs`), in candidate order."""
    r, n = det.lm.shape
    total_swing = float(np.diff(det.total).std())
    window = spike_rows(det.spikes, r - 1, config.spike_context)
    shares = [spike_enrichment(np.concatenate([series[a], series[b]], axis=1), det.scan.abs_row, window, n)
              for a, b, _ in cands]
    ratio = swings / total_swing if total_swing > 0 else np.full(len(swings), np.inf)
    if inputs.record is not None:
        return inputs.record.assess(det, rows, cands, ratio, shares, config)
    return assess_pairs(cands, rows, ratio, shares, inputs.test, config.alpha, config.n_null, config.seed,
                        config.max_pair_corr)


def needing_null(pairs: list[Pair], max_pairs: int) -> set[int]:
    """The pairs the gates look at (those that passed the test) and those shown among the rejected."""
    failing = sorted((i for i, p in enumerate(pairs) if p.failed), key=lambda i: -pairs[i].strength)
    return {i for i, p in enumerate(pairs) if not p.failed} | set(failing[:max_pairs])


def anti_phase_nulls(views: list[View], sizes: list[int], n: int, rng: np.random.Generator
                     ) -> tuple[dict[str, AntiPhaseNull], float]:
    """The anti-phase null of each view, on one pool of random examples large enough for every pair in ``sizes``.

    Returns:
        ``(nulls by view name, null_corr)``: the mean correlation of random 20-vs-20 splits of the raw
        changes (the run's generic anti-phase; fewer when the pool is smaller).
    """
    size = min(n, max([POOL, 2 * NULL_HALF] + sizes))
    pool = np.sort(rng.choice(n, size=size, replace=False))
    nulls = {v.name: AntiPhaseNull(v.lm.diff_columns(pool), v.reference) for v in views}
    half = min(NULL_HALF, size // 2)
    if size < 2:
        return nulls, float("nan")
    return nulls, float(nulls["raw"].draws(half, half, 1.0, NULL_HALF_DRAWS, rng)[0].mean())


def with_anti_phase(p: Pair, view: View, null: AntiPhaseNull | None, ratios: dict[int, float],
                    sizes: tuple[int, int], config: SignalsConfig) -> Pair:
    """``p`` with its view, ``leading_corr`` and ``direction_ratio``, and, with a ``null`` that can draw its
    sizes, its own anti-phase test (:meth:`~oppsig.signals.antiphase.AntiPhaseNull.test`)."""
    va, vb = view.means[:, p.a], view.means[:, p.b]
    anti = AntiPhase(leading_corr=pair_correlation(va - vb, view.reference))
    if null is not None and sum(sizes) <= null.size:
        sign = float(np.sign(pair_correlation(va, view.reference))) or 1.0
        ap = null.test(p.corr, null.beyond(va, vb), *sizes, sign, anti_phase_draws(config.anti_phase_level),
                       derived_rng(config.seed, p.a, p.b))  # a pair's draws: its own
        anti = dataclasses.replace(anti, p=ap.p, null_corr=ap.null_corr, beyond_corr=ap.beyond,
                                   null_beyond=ap.null_beyond, weak=bool(ap.p > config.anti_phase_level),
                                   p_beyond=ap.p_beyond)
    return dataclasses.replace(p, view=view.name, anti_phase=anti,
                               direction_ratio=float(min(ratios[p.a], ratios[p.b])))


def pair_candidates(det, rows: list[np.ndarray], series: list[np.ndarray], inputs: Inputs,
                    config: SignalsConfig) -> tuple[list[Pair], float]:
    """Every anti-phase candidate pair, tested, with what the gates after the test look at.

    A candidate is a pair of groups whose mean loss changes correlate at most
    ``max_pair_corr``: on the raw changes, or else on the relative ones (of ``log L``,
    ``Pair.view == "relative"``), where groups of examples the model already fits well,
    whose losses move little and together early on, oppose each other. Each candidate
    gets its within-class permutation p-value (:func:`~oppsig.signals.pair.assess_pairs`),
    the correlation of its group-mean difference with the leading component of its view
    (``anti_phase.leading_corr``) and the smaller direction ratio of its groups (``direction_ratio``);
    the pairs that pass the test, and the ``max_pairs`` strongest others, also get their
    anti-phase null in their view (``anti_phase.p``, ``null_corr``, ``beyond_corr``:
    :class:`~oppsig.signals.antiphase.AntiPhaseNull`). :func:`~oppsig.signals.pair.select_pairs`
    then applies the gates.

    Returns:
        ``(pairs, null_corr)``: the pairs in candidate order, and the mean correlation of
        random 20-vs-20 splits (the run's generic anti-phase).
    """
    n = det.lm.shape[1]
    rng = np.random.default_rng(config.seed)
    cands = candidate_views(det, rows, series, config)
    pairs = tested_pairs(det, rows, series, cands.pairs, cands.swings, inputs, config)
    groups = sorted({i for a, b, _ in cands.pairs for i in (a, b)})
    ratios = {g: inputs.space.direction(rows[g])["ratio"] for g in groups}
    need = needing_null(pairs, config.max_pairs)
    sizes = [len(rows[pairs[i].a]) + len(rows[pairs[i].b]) for i in need]
    nulls, null_corr = anti_phase_nulls(cands.views, sizes, n, rng)
    out = [with_anti_phase(p, view, nulls[view.name] if i in need else None, ratios, (len(rows[p.a]), len(rows[p.b])),
                           config) for i, (p, view) in enumerate(zip(pairs, cands.view_of))]
    return out, null_corr


def with_spikes(p: Pair, series: list[np.ndarray], det, config: SignalsConfig, top: int = 3) -> Pair:
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
    return dataclasses.replace(p, spikes=tuple(s.row for s in best), spike_rise_share=tuple(rise))


def test_description(tested: list[Pair], inputs: Inputs, config: SignalsConfig) -> dict:
    """How the pairs were tested (``SignalsResult.test``): the method, the error controlled, the null's size
    and resolution, and the gates after the test with their levels."""
    n_perm = draws_needed(config.n_null, config.alpha)
    gates = ("after the test, each only removes pairs: both groups visibly different from their classes "
             "(direction ratio >= min_direction_ratio), not the leading oscillation itself "
             "(|leading_corr| < max_leading_corr, unless anti-phase beyond it: p_beyond <= anti_phase_level / 2)")
    if config.anti_phase_gate:
        gates += (", anti-phase beyond random splits of the pair's sizes, as it is or beyond the leading "
                  "oscillation (Bonferroni p <= anti_phase_level)")
    else:
        gates += ("; a pair no more anti-phase than random splits of its sizes, as it is or beyond the leading "
                  "oscillation (Bonferroni p > anti_phase_level), is flagged weak")
    return {
        "method": "the pipeline's groups on the loss record permuted among the examples of each class: "
                  f"input coherence (descriptors and {config.n_pcs} input PCs, whitened within class)",
        "error": "family-wise error rate over the groups in tested pairs (single-step max-T)",
        "alpha": config.alpha,
        "groups_tested": len({i for p in tested for i in (p.a, p.b)}),
        "threshold": config.alpha,
        "n_null": n_perm,
        "resolution": 1.0 / (n_perm + 1),
        "features": inputs.test.dims,
        "gates": gates,
        "anti_phase_gate": config.anti_phase_gate,
        "anti_phase_level": config.anti_phase_level,
        "anti_phase_draws": anti_phase_draws(config.anti_phase_level),
        "min_direction_ratio": config.min_direction_ratio,
        "max_leading_corr": config.max_leading_corr,
    }


def pair_stage(det, rows: list[np.ndarray], series: list[np.ndarray], inputs: Inputs,
               config: SignalsConfig) -> tuple[list[Pair], float, dict]:
    """Anti-phase pairs of groups, tested against the within-class permutation null, then gated.

    :func:`pair_candidates`, then :func:`~oppsig.signals.pair.select_pairs` (the gates after
    the test: anti-phase beyond random splits of its sizes, as it is or beyond the leading
    oscillation (with ``anti_phase_gate``, the default; else such a pair is only flagged
    ``weak``), a visible difference, not the leading oscillation itself; then the pairs that
    are their groups' most anti-phase, :func:`~oppsig.signals.pair.match_pairs`).

    Returns:
        ``(pairs, null_corr, test)``: the ``max_pairs`` most anti-phase significant pairs
        (:func:`~oppsig.signals.pair.anti_phase_order`: a group's stronger partner is never
        cut while a weaker one stays) and the ``max_pairs`` strongest other tested pairs
        (significant first, then by
        strength; spikes and rise shares attached), the mean correlation of random
        20-vs-20 splits by their co-movement, and the test's description (:func:`test_description`).
    """
    tested, null_corr = pair_candidates(det, rows, series, inputs, config)
    skip = ("anti-phase",) * (not config.anti_phase_gate) + ("visible",) * (inputs.record is not None)
    gates = tuple(g for g in GATES if g not in skip) + ("beyond",) * (inputs.record is not None)
    pairs = select_pairs(tested, config.anti_phase_level, config.min_direction_ratio, config.max_leading_corr, gates)
    sig = sorted((p for p in pairs if p.significant), key=anti_phase_order)[: config.max_pairs]
    kept = sorted(sig, key=lambda p: -p.strength) + [p for p in pairs if not p.significant][: config.max_pairs]
    desc = test_description(tested, inputs, config)
    if inputs.record is not None:  # the visible gate needs inputs: skipped, and said so
        desc = {**desc, **inputs.record.description(det, config),
                "gates": desc["gates"] + "; without the inputs the visible gate is skipped, and the groups must stay "
                f"anti-phase once the leading oscillation is taken out of both (beyond_corr <= {BEYOND_CORR})"}
    return [with_spikes(p, series, det, config) for p in kept], null_corr, desc
