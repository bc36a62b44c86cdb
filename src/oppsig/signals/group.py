"""Group: cluster candidate examples into groups whose losses move together.

Two views of each candidate are combined into one distance:

- its loss changes over the run: ``1 - corr`` between two examples' series
  (0 when they move in lock-step, 2 when exactly opposite);
- its input: the distance between standardised input descriptors (brightness,
  border colour, colour histogram, input norm; see
  :mod:`oppsig.signals.explain`), scaled to about 1 for two random examples and
  weighted by ``feature_weight``, plus ``class_weight`` when the classes differ.

Average-linkage hierarchical clustering is cut at ``cluster_distance``, so the
number of groups follows from the data: members of a group correlate at
about ``1 - cluster_distance`` or more. Clusters smaller than
``min_group_size`` are dropped.

Example:
    >>> rng = np.random.default_rng(0)
    >>> base = rng.standard_normal((200, 2))
    >>> series = np.concatenate([base[:, :1] + 0.3 * rng.standard_normal((200, 10)),
    ...                          base[:, 1:] + 0.3 * rng.standard_normal((200, 10))], axis=1)
    >>> [len(g) for g in cluster_series(series, min_group_size=5)]
    [10, 10]
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist, squareform

from .result import SignalsError


def correlation_matrix(series: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of ``series`` (T, M) -> (M, M).

    Constant columns correlate 0 with everything (1 with themselves).

    Raises:
        SignalsError: for a non-2-D input or fewer than 3 rows.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise SignalsError(f"series must be (T >= 3, M), got shape {x.shape}")
    x = x - x.mean(axis=0)
    nrm = np.linalg.norm(x, axis=0)
    x = x / np.where(nrm > 0, nrm, 1.0)
    c = x.T @ x
    np.fill_diagonal(c, 1.0)
    return np.clip(c, -1.0, 1.0)


def combined_distance(
    series: np.ndarray,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    feature_weight: float = 0.15,
    class_weight: float = 0.1,
) -> np.ndarray:
    """The (M, M) distance used for grouping (see the module docstring).

    Args:
        series: (T, M) loss changes of the M candidates.
        features: (M, F) standardised input descriptors, or ``None``.
        labels: (M,) class labels, or ``None``.

    Raises:
        SignalsError: when the sizes of ``series``, ``features`` and ``labels`` disagree.
    """
    m = series.shape[1]
    d = 1.0 - correlation_matrix(series)
    if features is not None and feature_weight > 0 and features.shape[1] > 0:
        if features.shape[0] != m:
            raise SignalsError(f"features has {features.shape[0]} rows, expected {m} (one per candidate)")
        f = np.asarray(features, dtype=np.float64)
        # two random examples with unit-variance descriptors lie sqrt(2 F) apart
        e = squareform(pdist(f)) / np.sqrt(2.0 * f.shape[1])
        d = d + feature_weight * np.minimum(e, 2.0)
    if labels is not None and class_weight > 0:
        lab = np.asarray(labels)
        if lab.shape[0] != m:
            raise SignalsError(f"labels has {lab.shape[0]} entries, expected {m} (one per candidate)")
        if lab.ndim == 1:
            d = d + class_weight * (lab[:, None] != lab[None, :])
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)


def cluster_distance_matrix(dist: np.ndarray, cut: float, min_group_size: int = 5) -> list[np.ndarray]:
    """Average-linkage clusters of a distance matrix, cut at ``cut``.

    Returns:
        Lists of column positions (ascending), one per cluster with at least
        ``min_group_size`` members, largest first.
    """
    m = dist.shape[0]
    if m < 2:
        return []
    z = hierarchy.linkage(squareform(dist, checks=False), method="average")
    lab = hierarchy.fcluster(z, t=cut, criterion="distance")
    out = [np.flatnonzero(lab == c) for c in np.unique(lab)]
    out = [g for g in out if len(g) >= min_group_size]
    out.sort(key=lambda g: (-len(g), g[0]))
    return out


def cluster_series(
    series: np.ndarray,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    cut: float = 0.5,
    feature_weight: float = 0.15,
    class_weight: float = 0.1,
    min_group_size: int = 5,
) -> list[np.ndarray]:
    """Group the columns of ``series`` (T, M) that move together.

    Args:
        series: (T, M) loss changes of M candidate examples.
        features: optional (M, F) standardised input descriptors (second view).
        labels: optional (M,) classes.
        cut: average-linkage cut on the combined distance.
        min_group_size: smaller clusters are dropped.

    Returns:
        Column positions of each group, largest first.

    Raises:
        SignalsError: for mismatched sizes or fewer than 3 rows.
    """
    d = combined_distance(series, features, labels, feature_weight, class_weight)
    return cluster_distance_matrix(d, cut, min_group_size)


def cohesion(series: np.ndarray) -> float:
    """Mean off-diagonal correlation of the columns of ``series`` (T, m); NaN for m < 2."""
    m = series.shape[1]
    if m < 2:
        return float("nan")
    c = correlation_matrix(series)
    return float((c.sum() - m) / (m * (m - 1)))


def template_fit(m, mean: np.ndarray, std: np.ndarray, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation and regression slope of every example's loss changes on each template.

    Args:
        m: a :class:`~oppsig.signals.detect.LossMatrix` (R, N), read in row blocks.
        mean, std: (N,) mean and standard deviation of each example's loss change.
        templates: (R-1, G) template series (e.g. group-mean loss changes).

    Returns:
        ``(corr, beta)``, each (N, G): ``beta = cov(D_i, t_g) / var(t_g)`` is 1 for
        an example that swings exactly like the template and near 0 for one that
        moves with it only faintly.
    """
    t = np.asarray(templates, dtype=np.float64)
    t = t - t.mean(axis=0)
    t_n = t.shape[0]
    acc = m.sum_blocks(functools.partial(_dt_block, t32=t.astype(np.float32)))
    cov = acc / t_n  # the template is centred, so the examples' means drop out
    var_t = (t * t).mean(axis=0)
    sd_t = np.sqrt(var_t)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / (np.asarray(std)[:, None] * sd_t[None, :])
        beta = cov / var_t[None, :]
    corr[~np.isfinite(corr)] = 0.0
    beta[~np.isfinite(beta)] = 0.0
    return corr, beta


def _dt_block(t0: int, blk: np.ndarray, t32: np.ndarray) -> np.ndarray:
    """``D[t0 : t0 + B]^T t[t0 : t0 + B]`` of one block: (N, G) float64."""
    d = np.diff(blk, axis=0)
    return (d.T @ t32[t0 : t0 + len(d)]).astype(np.float64)


def refine_groups(
    m,
    mean: np.ndarray,
    std: np.ndarray,
    seeds: list[np.ndarray],
    seed_series: list[np.ndarray],
    min_corr: float = 0.5,
    min_beta: float = 0.3,
    min_group_size: int = 5,
    iterations: int = 2,
    eligible: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Complete and clean groups against all examples, seeded by clusters of candidates.

    Each group's mean loss change is a template; every example (candidates or
    not) joins the template it correlates with best, provided the correlation
    is at least ``min_corr`` and its regression slope on the template at least
    ``min_beta`` (it swings with at least that fraction of the group's
    amplitude: the many examples that follow the generic oscillation only
    faintly stay out). Repeated ``iterations`` times with updated templates.

    Args:
        m: the loss matrix (:class:`~oppsig.signals.detect.LossMatrix`).
        mean, std: (N,) per-example loss-change mean and standard deviation.
        seeds: rows of each seed group.
        seed_series: (R-1, m_g) loss changes of each seed group.
        eligible: optional (N,) bool, the examples allowed to join a group (e.g.
            those whose loss swings well above the typical example's).

    Returns:
        Rows of each group with at least ``min_group_size`` members (same order
        as the seeds, emptied groups removed).
    """
    if not seeds:
        return []
    templates = np.stack([s.mean(axis=1) for s in seed_series], axis=1)
    groups = [np.asarray(s) for s in seeds]
    for it in range(iterations):
        corr, beta = template_fit(m, mean, std, templates)
        ok = (corr >= min_corr) & (beta >= min_beta)
        if eligible is not None:
            ok &= np.asarray(eligible, dtype=bool)[:, None]
        score = np.where(ok, corr, -np.inf)
        best = np.argmax(score, axis=1)
        has = np.isfinite(score[np.arange(len(best)), best])
        groups = [np.flatnonzero(has & (best == g)) for g in range(templates.shape[1])]
        if it + 1 < iterations:
            kept = [g for g, rows in enumerate(groups) if len(rows)]
            if kept:  # one pass over the matrix for every group's mean
                series = m.diff_columns(np.concatenate([groups[g] for g in kept]))
                bounds = np.cumsum([0] + [len(groups[g]) for g in kept])
                templates = templates.copy()
                for i, g in enumerate(kept):
                    templates[:, g] = series[:, bounds[i] : bounds[i + 1]].mean(axis=1)
    return [g for g in groups if len(g) >= min_group_size]


def input_separation(
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    features: np.ndarray | None,
    labels: np.ndarray | None,
    feature_weight: float = 0.15,
    class_weight: float = 0.1,
) -> float:
    """How much further apart two groups are in the input view than their members are within.

    Uses the input part of :func:`combined_distance` (descriptor distance and
    class mismatch): mean distance across the groups minus the mean of the two
    within-group means. Near 0 when the input view does not tell them apart.
    """

    def view(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
        d = np.zeros((len(ra), len(rb)))
        if features is not None and feature_weight > 0 and features.shape[1] > 0:
            f = np.asarray(features, dtype=np.float64)
            diff = f[ra][:, None, :] - f[rb][None, :, :]
            d += feature_weight * np.minimum(np.sqrt((diff**2).sum(-1)) / np.sqrt(2.0 * f.shape[1]), 2.0)
        if labels is not None and class_weight > 0 and np.ndim(labels) == 1:
            d += class_weight * (labels[ra][:, None] != labels[rb][None, :])
        return d

    def within(r: np.ndarray) -> float:
        if len(r) < 2:
            return 0.0
        d = view(r, r)
        return float((d.sum() - np.trace(d)) / (len(r) * (len(r) - 1)))

    ra, rb = np.asarray(rows_a, dtype=np.int64), np.asarray(rows_b, dtype=np.int64)
    return float(view(ra, rb).mean() - 0.5 * (within(ra) + within(rb)))


def merge_with_tails(
    clusters: list[np.ndarray],
    tails: list[np.ndarray],
    features: np.ndarray | None,
    labels: np.ndarray | None,
    feature_weight: float = 0.15,
    class_weight: float = 0.1,
    min_group_size: int = 5,
    cover: float = 0.8,
    max_separation: float = 0.05,
) -> list[np.ndarray]:
    """Seeds of the groups: clusters of candidates, reconciled with coherent-component tails.

    Correlation clustering gives one group per example, but an example can
    take part in two motions at once (its group's swing and the generic
    oscillation with its own sign), so a coherent group may come out split in
    two. A component tail sees the whole group. For every tail (in rows of the
    data set):

    - no cluster lies mostly (``cover``) inside it: the tail is a new seed (a
      coherent group that clustering missed);
    - several clusters lie inside it and the input view does not tell any two
      of them apart (:func:`input_separation` at most ``max_separation``):
      they are replaced by the tail;
    - otherwise the clusters stand (the tail mixes groups with different inputs).

    Args:
        clusters: rows of each cluster.
        tails: rows of each component tail.
        features: (N, F) standardised descriptors of all examples (or ``None``).
        labels: (N,) classes (or ``None``).

    Returns:
        Rows of each seed.
    """
    seeds = [np.asarray(c) for c in clusters]
    used_tails: list[np.ndarray] = []
    for t in sorted((np.asarray(t) for t in tails if len(t) >= min_group_size), key=len, reverse=True):
        if any(len(np.intersect1d(t, u)) > 0.5 * len(t) for u in used_tails):
            continue
        inside = [i for i, c in enumerate(seeds) if len(np.intersect1d(c, t)) >= cover * len(c)]
        if not inside:
            if not any(len(np.intersect1d(t, c)) > 0.5 * len(t) for c in seeds):
                seeds.append(t)
                used_tails.append(t)
            continue
        if len(inside) < 2:
            continue
        sep = max(
            input_separation(seeds[i], seeds[j], features, labels, feature_weight, class_weight)
            for a, i in enumerate(inside) for j in inside[a + 1 :]
        )
        if sep <= max_separation:
            seeds = [c for i, c in enumerate(seeds) if i not in inside] + [t]
            used_tails.append(t)
    return seeds
