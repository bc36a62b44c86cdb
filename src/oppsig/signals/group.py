"""Group: examples whose losses move together, found by coherence, not by extremeness.

Input: the loss changes ``D = L[1:] - L[:-1]`` (R-1, N) of every example. A
group is a set of examples that all follow one time profile (the group's mean
loss change): each member correlates with it at least ``min_corr`` and swings
with at least ``min_beta`` of its amplitude (regression slope). Nothing is
asked of a member's own size: a member may swing less than the median example
and still belong, since what makes a group is that its members move together.

How (all of it reads the matrix in row blocks; :func:`find_groups`):

1. *Seeds*: the leading principal components of the standardised loss changes
   (:func:`~oppsig.signals.detect.coherent_components`); for each component and
   sign, the ``seed_size`` examples with the largest loading on that side, and
   the clusters of the recurring per-step extremes (evidence, not a gate).
2. *Templates*: each seed's mean loss change; every example joins the template
   it correlates with best, if it passes ``min_corr`` and ``min_beta``;
   repeated ``iterations`` times with the new groups' means.
3. Where a shared oscillation dominates every example, groups of modest
   swingers also show up in the components few examples carry
   (:func:`sparse_groups`); those groups join the others.
4. Groups whose mean loss changes correlate at least :data:`~oppsig.signals.tuning.MERGE_CORR` are one
   group split by two seeds: they are joined and grown twice more. Groups that
   are mostly the same (Jaccard index above 0.5) keep only the one with more
   members; groups under ``min_group_size`` are dropped.
5. *Relative changes*: steps 1-4 again on the changes of ``log L``
   (:func:`relative_losses`), where an example the model already fits well, and
   whose loss therefore moves little, counts as much as a loud one that follows
   the same margin change. Of two groups from the two views that are mostly the
   same, the one whose members fit its mean better (:func:`member_fit`, each in
   its own view) is kept.
6. *Neighbourhoods* (``neighbour_seeds`` > 0; on a mini-batch run's probe by default): with few rows and many
   columns a small group's component lies inside the noise (:func:`noise_edge`); each example and its most
   correlated examples seed it instead (:mod:`~oppsig.signals.neighbours`), grown among the examples the steps
   before left (:func:`neighbour_groups`) on each view; these groups fill the room (``max_groups``) the others
   leave.

Only the loss record is used (never the inputs, and the class labels not at
all), so a permutation of the loss columns among the examples of a class
permutes the groups with it: this is what makes the null of
:mod:`oppsig.signals.pair` exact.

Cost: the components take ``2 (q + 1)`` passes over the matrix with ``c + 10``
vectors (``q = 2`` power iterations, ``c`` components) and each template round
one pass with ``G`` templates, so time grows as ``R x N x (c + G)``: linearly in
steps and in examples; the relative view doubles it (one more scan and set of
components). Memory holds the matrix (float32) and its log when both fit the
matrix's memory budget, else the log is streamed (as a streamed matrix is in
both views), plus ``N x G`` numbers.

Example:
    >>> from oppsig.signals.detect import scan_losses, coherent_components
    >>> from oppsig.signals.matrix import LossMatrix
    >>> rng = np.random.default_rng(0)
    >>> d = 0.05 * rng.standard_normal((200, 300))
    >>> d[:, :20] += 0.1 * np.sin(np.arange(200) / 3.0)[:, None]   # 20 modest swingers in step
    >>> lm = LossMatrix(np.concatenate([np.ones((1, 300)), 1 + d.cumsum(axis=0)]))
    >>> sc = scan_losses(lm, 5)
    >>> groups = find_groups(lm, sc, coherent_components(lm, sc, SignalsConfig(n_components=4)), SignalsConfig())
    >>> [sorted(g.tolist()) == list(range(20)) for g in groups]
    [True]
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist

from ..config import SignalsConfig
from .detect import Components, Scan, coherent_components, recurring_examples, scan_losses
from .matrix import LossMatrix
from .neighbours import neighbour_seeds
from .result import SignalsError
from .tuning import MERGE_CORR, RELATIVE_FLOOR, SPARSE_COS, SPARSE_SCALE_FLOOR, SPARSE_SHARE, SPARSE_Z, robust_scale


def cohesion(series: np.ndarray) -> float:
    """Mean off-diagonal correlation of the columns of ``series`` (T, m); NaN for m < 2.

    Example:
        >>> t = np.arange(50.0)
        >>> round(cohesion(np.stack([np.sin(t), 2 * np.sin(t) + 1], axis=1)), 6)
        1.0
    """
    m = series.shape[1]
    if m < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.nan_to_num(np.corrcoef(np.asarray(series, dtype=np.float64).T), nan=0.0)
    return float((c.sum() - np.trace(c)) / (m * (m - 1)))


def template_fit(lm: LossMatrix, scan: Scan, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation and regression slope of every example's loss changes on each template.

    Args:
        lm: the loss matrix (R, N), read in row blocks.
        scan: its :func:`~oppsig.signals.detect.scan_losses` (per-example standard deviations).
        templates: (R-1, G) template series (e.g. group-mean loss changes).

    Returns:
        ``(corr, beta)``, each (N, G): ``beta = cov(D_i, t_g) / var(t_g)`` is 1 for
        an example that swings exactly like the template and near 0 for one that
        moves with it only faintly.
    """
    t = np.asarray(templates, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != lm.shape[0] - 1:
        raise SignalsError(f"templates must be ({lm.shape[0] - 1}, G), got shape {t.shape}")
    t = t - t.mean(axis=0)
    acc = lm.sum_blocks(functools.partial(_dt_block, t32=t.astype(np.float32)))
    cov = acc / t.shape[0]  # the templates are centred, so the examples' means drop out
    var_t = (t * t).mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / (scan.std[:, None] * np.sqrt(var_t)[None, :])
        beta = cov / var_t[None, :]
    corr[~np.isfinite(corr)] = 0.0
    beta[~np.isfinite(beta)] = 0.0
    return corr, beta


def _dt_block(t0: int, blk: np.ndarray, t32: np.ndarray) -> np.ndarray:
    """``D[t0 : t0 + B]^T t[t0 : t0 + B]`` of one block: (N, G) float64."""
    d = np.diff(blk, axis=0)
    return (d.T @ t32[t0 : t0 + len(d)]).astype(np.float64)


def group_means(lm: LossMatrix, groups: list[np.ndarray]) -> np.ndarray:
    """Each group's mean loss change, (R-1, G), in one pass over the matrix (not one per group)."""
    series = lm.diff_columns(np.concatenate(groups))
    bounds = np.cumsum([0] + [len(g) for g in groups])
    return np.stack([series[:, bounds[i] : bounds[i + 1]].mean(axis=1) for i in range(len(groups))], axis=1)


def component_seeds(comps: Components, seed_size: int) -> list[np.ndarray]:
    """For each component and sign, the ``seed_size`` examples loading most on that side (sorted rows)."""
    out = []
    v = comps.loadings
    k = min(seed_size, v.shape[0])
    for j in range(v.shape[1]):
        for sign in (1.0, -1.0):
            out.append(np.sort(np.argpartition(-sign * v[:, j], k - 1)[:k]).astype(np.int64))
    return out


def extreme_seeds(lm: LossMatrix, scan: Scan, config: SignalsConfig) -> list[np.ndarray]:
    """Clusters (average linkage on ``1 - corr``, cut at ``1 - min_corr``) of the recurring per-step extremes."""
    rows = recurring_examples(scan, config.min_recurrence)[: config.max_candidates]
    if len(rows) < 2 * config.min_group_size:
        return []
    series = lm.diff_columns(rows).astype(np.float64)
    ok = series.std(axis=0) > 0
    rows, series = rows[ok], series[:, ok]
    if len(rows) < 2:
        return []
    z = hierarchy.linkage(pdist(series.T, "correlation"), method="average")
    lab = hierarchy.fcluster(z, t=1.0 - config.min_corr, criterion="distance")
    return [np.sort(rows[lab == c]) for c in np.unique(lab) if (lab == c).sum() >= config.min_group_size]


def grow_groups(
    lm: LossMatrix, scan: Scan, seeds: list[np.ndarray], min_corr: float, min_beta: float, iterations: int = 3
) -> list[np.ndarray]:
    """Every example joins the seed template it correlates with best (if ``corr >= min_corr`` and
    ``beta >= min_beta``); repeated ``iterations`` times with the new groups' mean loss changes.

    Returns:
        Rows of each group, in seed order (possibly empty).
    """
    if not seeds:
        return []
    templates = group_means(lm, seeds)
    groups = [np.asarray(s) for s in seeds]
    for _ in range(iterations):
        corr, beta = template_fit(lm, scan, templates)
        score = np.where((corr >= min_corr) & (beta >= min_beta), corr, -np.inf)
        best = np.argmax(score, axis=1)
        has = np.isfinite(score[np.arange(len(best)), best])
        groups = [np.flatnonzero(has & (best == g)) for g in range(templates.shape[1])]
        keep = [g for g, r in enumerate(groups) if len(r)]
        if not keep:
            return []
        groups = [groups[g] for g in keep]
        templates = group_means(lm, groups)
    return groups


def merge_overlaps(groups: list[np.ndarray], max_jaccard: float = 0.5, score=None) -> list[np.ndarray]:
    """Drop every group whose Jaccard index with a better kept group exceeds ``max_jaccard``.

    Args:
        score: (G,) what makes a group better (default: more members); ties keep the earlier group.

    Example:
        >>> [g.tolist() for g in merge_overlaps([np.arange(10), np.arange(2, 12), np.arange(20, 25)])]
        [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [20, 21, 22, 23, 24]]
        >>> [g.tolist() for g in merge_overlaps([np.arange(10), np.arange(2, 12)], score=[0.5, 0.9])]
        [[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    """
    score = [len(g) for g in groups] if score is None else score
    out: list[np.ndarray] = []
    for i in np.argsort(-np.asarray(score, dtype=np.float64), kind="stable"):
        g = groups[i]
        if all(_jaccard(g, h) <= max_jaccard for h in out):
            out.append(g)
    return out


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return len(np.intersect1d(a, b)) / len(np.union1d(a, b))


def merge_alike(lm: LossMatrix, groups: list[np.ndarray], min_corr: float) -> list[np.ndarray]:
    """Join groups whose mean loss changes correlate at least ``min_corr`` (single linkage).

    Example:
        >>> t = np.arange(100.0)
        >>> L = np.cumsum(np.stack([np.sin(t), np.sin(t), np.cos(t)], axis=1), axis=0)
        >>> [g.tolist() for g in merge_alike(LossMatrix(L), [np.array([0]), np.array([1]), np.array([2])], 0.9)]
        [[0, 1], [2]]
    """
    if len(groups) < 2:
        return groups
    means = group_means(lm, groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.nan_to_num(np.corrcoef(means.T), nan=0.0)
    z = hierarchy.linkage(np.clip(1.0 - c[np.triu_indices(len(groups), 1)], 0.0, 2.0), method="single")
    lab = hierarchy.fcluster(z, t=1.0 - min_corr, criterion="distance")
    return [np.unique(np.concatenate([groups[i] for i in np.flatnonzero(lab == k)])) for k in np.unique(lab)]


def _robust_z(x: np.ndarray) -> np.ndarray:
    return (x - np.median(x, axis=0)) / robust_scale(x, SPARSE_SCALE_FLOOR, axis=0)


def participation(v: np.ndarray) -> np.ndarray:
    """Participation ratio ``(sum v^2)^2 / sum v^4`` of each column of ``v`` (N, c): about N for a component every
    example carries, about k for one k examples carry (NaN for a zero column)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (v**2).sum(axis=0) ** 2 / (v**4).sum(axis=0)


def sparse_groups(comps: Components, min_group_size: int = 5, iterations: int = 3) -> list[np.ndarray]:
    """Groups in the subspace of the *sparse* components, where the shared oscillation is left out.

    When every example oscillates with the top direction (with its own sign and
    size), the leading components are broad (participation ratio
    ``(sum v^2)^2 / sum v^4`` near ``N``) and a group of modest swingers moves
    together only in the components that few examples carry. In the coordinates
    ``V S`` of the components with participation ratio at most
    :data:`~oppsig.signals.tuning.SPARSE_SHARE` ``x N``, the examples whose weight lies
    :data:`~oppsig.signals.tuning.SPARSE_Z`
    robust standard deviations out are clustered by cosine (average linkage, cut
    0.5); each cluster then takes every example whose projection on its mean is
    :data:`~oppsig.signals.tuning.SPARSE_Z` out with cosine at least :data:`~oppsig.signals.tuning.SPARSE_COS`.

    Returns:
        Rows of each group (possibly none).
    """
    v, sv = comps.loadings, comps.values
    n = v.shape[0]
    if v.shape[1] == 0:
        return []
    pr = participation(v)
    keep = np.isfinite(pr) & (pr <= SPARSE_SHARE * n)
    if not keep.any():
        return []
    x = v[:, keep] * sv[keep]
    r = np.linalg.norm(x, axis=1)
    cand = np.flatnonzero(_robust_z(r) >= SPARSE_Z)
    if len(cand) < min_group_size:
        return []
    if len(cand) > 1:
        z = hierarchy.linkage(pdist(x[cand], "cosine"), method="average")
        lab = hierarchy.fcluster(z, t=0.5, criterion="distance")
    else:
        lab = np.ones(1, dtype=int)
    seeds = [cand[lab == c] for c in np.unique(lab) if (lab == c).sum() >= min_group_size]
    if not seeds:
        return []
    w = np.stack([x[s].mean(axis=0) for s in seeds])
    groups: list[np.ndarray] = []
    for _ in range(iterations):
        proj = x @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T  # (N, G)
        cos = proj / np.maximum(r[:, None], 1e-12)
        score = np.where((_robust_z(proj) >= SPARSE_Z) & (cos >= SPARSE_COS), cos, -np.inf)
        best = np.argmax(score, axis=1)
        has = np.isfinite(score[np.arange(n), best])
        groups = [np.flatnonzero(has & (best == g)) for g in range(len(w))]
        w = np.stack([x[g].mean(axis=0) if len(g) else w[i] for i, g in enumerate(groups)])
    return [g for g in groups if len(g) >= min_group_size]


def relative_losses(lm: LossMatrix) -> LossMatrix | None:
    """``log(L + floor)`` (see :data:`~oppsig.signals.tuning.RELATIVE_FLOOR`), read like ``lm``; ``None`` for losses
    that can be negative.

    A cross-entropy loss far below 1 changes in proportion to itself (``dL ~ -L dmargin``): an example the model
    already fits well moves little in loss, yet its *relative* change follows the same margin change as its
    louder group mates. Grouping on these changes finds such quiet members.

    Example:
        >>> rel = relative_losses(LossMatrix(np.array([[1.0, 0.1], [0.5, 0.05]] * 4)))
        >>> np.round(np.diff(rel.columns(np.arange(2))[:2], axis=0).astype(float), 2).tolist()
        [[-0.69, -0.69]]
    """
    if min(lm.map_blocks(_block_min)) < 0:
        return None
    return lm.mapped(functools.partial(_log_floor, floor=np.float32(relative_floor(lm.row(0)))))


def relative_floor(first_row: np.ndarray) -> float:
    """The floor of :func:`relative_losses`: :data:`~oppsig.signals.tuning.RELATIVE_FLOOR` x the median first-row
    loss (else itself)."""
    floor = RELATIVE_FLOOR * float(np.median(np.asarray(first_row)))
    return floor if floor > 0 else RELATIVE_FLOOR


def _block_min(t0: int, blk: np.ndarray) -> float:
    return float(blk.min())


def _log_floor(blk: np.ndarray, floor: np.float32) -> np.ndarray:
    return np.log(np.maximum(blk, 0) + floor).astype(np.float32)


def member_fit(lm: LossMatrix, scan: Scan, groups: list[np.ndarray]) -> np.ndarray:
    """(G,) each group's mean correlation of its members with the group's mean loss change (one pass)."""
    if not groups:
        return np.zeros(0)
    corr, _ = template_fit(lm, scan, group_means(lm, groups))
    return np.array([corr[g, i].mean() for i, g in enumerate(groups)])


def view_groups(lm: LossMatrix, scan: Scan, comps: Components, config: SignalsConfig,
                late: set[int] | None = None) -> list[np.ndarray]:
    """Seeds -> templates -> merged groups -> sparse groups (steps 1-4 of the module docstring) on one view, then
    the neighbourhood groups (step 6), whose ``id`` each goes into ``late`` when given."""
    seeds = component_seeds(comps, config.seed_size) + extreme_seeds(lm, scan, config)
    seeds = merge_overlaps(seeds, 0.8)
    groups = grow_groups(lm, scan, seeds, config.min_corr, config.min_beta)
    groups = grow_groups(lm, scan, merge_alike(lm, groups, MERGE_CORR), config.min_corr, config.min_beta, 2)
    groups = [g for g in merge_overlaps(sparse_groups(comps, config.min_group_size) + groups)
              if len(g) >= config.min_group_size]
    if config.neighbour_seeds:  # small groups the components cannot see, grown among the examples left
        extra = neighbour_groups(lm, scan, comps, config, groups)
        if late is not None:
            late.update(id(g) for g in extra)
        groups += extra
    return groups


def noise_edge(rows: int, cols: int) -> float:
    """The largest eigenvalue of the correlation matrix of ``cols`` independent series of ``rows - 1`` changes, about
    ``(1 + sqrt(cols / (rows - 1)))^2`` (Marchenko-Pastur): components below it are indistinguishable from noise.

    Example:
        >>> round(noise_edge(101, 400), 2)
        9.0
    """
    return float((1.0 + np.sqrt(cols / (rows - 1))) ** 2)


def neighbour_groups(lm: LossMatrix, scan: Scan, comps: Components, config: SignalsConfig,
                     found: list[np.ndarray]) -> list[np.ndarray]:
    """Groups grown from at most ``max_groups`` :func:`~oppsig.signals.neighbours.neighbour_seeds` outside the
    groups ``found``, seeded with the shared oscillation taken out: the components above the noise
    (:func:`noise_edge`) that are broad (participation ratio above :data:`~oppsig.signals.tuning.SPARSE_SHARE` x
    N)."""
    taken = np.concatenate(found) if found else None
    v = comps.loadings
    pr = participation(v)
    above = comps.values**2 / comps.time.shape[0] > noise_edge(*lm.shape)
    broad = comps.time[:, np.isfinite(pr) & (pr > SPARSE_SHARE * v.shape[0]) & above]
    seeds = neighbour_seeds(lm, scan, config.neighbour_seeds, config.min_corr, config.max_groups, exclude=taken,
                            broad=broad)
    groups = grow_groups(lm, scan, seeds, config.min_corr, config.min_beta)
    # two seeds of one small group have noisy means, each a member of the other's (at min_corr): they are joined
    groups = grow_groups(lm, scan, merge_alike(lm, groups, config.min_corr), config.min_corr, config.min_beta, 2)
    if taken is not None:
        groups = [np.setdiff1d(g, taken) for g in groups]
    return [g for g in groups if len(g) >= config.min_group_size]


def relative_view(lm: LossMatrix, config: SignalsConfig) -> tuple[LossMatrix, Scan, Components] | None:
    """The relative changes (:func:`relative_losses`) with their scan and leading components; ``None`` for
    losses that can be negative."""
    rel = relative_losses(lm)
    if rel is None:
        return None
    rscan = scan_losses(rel, config.k)
    return rel, rscan, coherent_components(rel, rscan, config)


def find_groups(lm: LossMatrix, scan: Scan, comps: Components, config: SignalsConfig,
                relative: tuple[LossMatrix, Scan, Components] | None | bool = True) -> list[np.ndarray]:
    """Groups of examples whose losses move together (see the module docstring).

    Args:
        lm: the loss matrix (R, N).
        scan: its :func:`~oppsig.signals.detect.scan_losses`.
        comps: its :func:`~oppsig.signals.detect.coherent_components`.
        config: ``seed_size``, ``min_corr``, ``min_beta``, ``min_group_size``,
            ``min_recurrence``, ``max_candidates``, ``max_groups``, ``k``, ``n_components``.
        relative: the :func:`relative_view` of ``lm`` when it is at hand, ``True`` to compute it here,
            ``None`` when there is none (losses that can be negative).

    Returns:
        Rows of each group (ascending), at most ``max_groups``: the groups of steps 1-5, largest swing of the
        group-mean loss change first, then the neighbourhood groups of step 6 the same way (they fill the room
        the others leave).
    """
    late: set[int] = set()  # id of each neighbourhood group (step 6): they fill the room the groups of steps 1-5 leave
    groups = view_groups(lm, scan, comps, config, late)
    if relative is True:
        relative = relative_view(lm, config)
    if relative is not None:  # the same on relative changes; of two overlapping groups, the better-fitting one
        rel, rscan, rcomps = relative
        more = view_groups(rel, rscan, rcomps, config, late)
        fit = np.concatenate([member_fit(lm, scan, groups), member_fit(rel, rscan, more)])
        early = [g for g in groups + more if id(g) not in late]
        groups = merge_overlaps(groups + more, 0.5, fit)
        for g in groups:  # a neighbourhood group kept in place of a group of steps 1-5 takes its place
            if id(g) in late and any(_jaccard(g, e) > 0.5 for e in early):
                late.discard(id(g))
    if not groups:
        return []
    swing = lm.diff_columns(np.concatenate(groups))
    s, out = 0, []
    for g in groups:
        out.append(float(swing[:, s : s + len(g)].mean(axis=1).std()))
        s += len(g)
    order = np.lexsort((-np.asarray(out), [id(g) in late for g in groups]))[: config.max_groups]
    return [groups[i] for i in order]
