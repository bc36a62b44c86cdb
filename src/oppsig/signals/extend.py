"""Extend groups found on a mini-batch run's probe subset to every training example.

A mini-batch run's dense record probes a seeded subset (``record.probe_n``) every k steps; the groups
and pairs are found and tested there. Every other example has only its sparse batch record: its loss
when its own batch was trained on, once an epoch (:mod:`oppsig.store.batches`). Whether such an
example belongs to a group is decided by what tells members from non-members *among the probed
examples*, where both are known:

- ``follow``: how closely its batch-record losses follow the group's: the correlation, over its visits,
  of its log loss above the probe's mean log loss at that step with the group's mean log loss above it
  (interpolated between probe rows);
- ``class``: the share of the group's probed members in its class (labels where the run has them);
- ``input``: where the inputs are at hand, its projection on the group's direction in input space
  (the probed members' mean input minus the mean input of their classes' probed examples), from its
  own class's probed mean.

A logistic model of membership on these features is fitted on the probed examples (members against
the rest); a 5-fold cross-validated fit there (features built from the training folds' members only)
chooses the probability threshold of best F1 and gives the precision and recall the extension can be
expected to have. A group is extended only when that F1 beats the same fit on each of
:data:`NULL_FITS` permutations of the membership labels and its precision is at least
:data:`MIN_PRECISION` (else its note says why not). The model fitted on
every probed example then names the members among the unprobed ones. Each extended group keeps its
probed members as found; :class:`~oppsig.signals.result.Extension` carries the added ids and the
estimate, so a number printed is one with its measured error.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((400, 2)); y = (X[:, 0] > 1.2)
    >>> p = cross_val_proba(X, y, folds=5, seed=0)
    >>> float(best_threshold(p, y)[1]) > 0.8   # F1 of the cross-validated fit
    True
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .result import Extension

MIN_PROBED_MEMBERS = 5
"""Fewer probed members than this: the group is not extended (too little to learn membership from)."""
MIN_PRECISION = 0.5
"""A model whose cross-validated precision is below this names more wrong members than right ones: not used."""
FOLDS = 5
NULL_FITS = 19
"""Label permutations the cross-validated F1 must beat (all of them: p < 0.05) before a group is extended."""
RIDGE = 1.0  # L2 penalty of the logistic model on standardised features


def _fit_logistic(X: np.ndarray, y: np.ndarray, iters: int = 25) -> np.ndarray:
    """Weights (with intercept last) of an L2-penalised logistic regression, by Newton steps."""
    A = np.hstack([X, np.ones((len(X), 1))])
    w = np.zeros(A.shape[1])
    pen = np.full(A.shape[1], RIDGE)
    pen[-1] = 0.0
    t = y.astype(np.float64)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(A @ w, -30, 30)))
        g = A.T @ (p - t) + pen * w
        H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(pen) + 1e-9 * np.eye(A.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _proba(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(X @ w[:-1] + w[-1], -30, 30)))


def cross_val_proba(X, y: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Out-of-fold membership probabilities of every row (stratified folds).

    ``X`` is the feature matrix, or a function of the training fold's members (a mask over the rows) giving
    it: features built from the members (a group's mean, its direction) are then built without the held-out
    fold, as they must be for the estimate to hold outside the probe."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for lab in (False, True):
        rows = rng.permutation(np.flatnonzero(y == lab))
        fold[rows] = np.arange(len(rows)) % folds
    p = np.empty(len(y))
    for f in range(folds):
        test = fold == f
        Xf = X(y & ~test) if callable(X) else X
        p[test] = _proba(Xf[test], _fit_logistic(Xf[~test], y[~test]))
    return p


def best_threshold(p: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """``(threshold, f1, precision, recall)`` of the probability threshold of best F1 on ``(p, y)``.

    Every threshold between the last row it takes and the next one takes the same rows; the threshold returned
    lies midway between them in log-odds, so that a model fitted on more rows than these out-of-fold ones (whose
    probabilities differ a little) names the same kind of row, rather than only those at least as certain as the
    least certain member taken here.

    Example:
        >>> t, f1, prec, rec = best_threshold(np.array([0.9, 0.8, 0.2, 0.1]), np.array([True, True, False, False]))
        >>> round(t, 2), f1, prec, rec
        (0.5, 1.0, 1.0, 1.0)
    """
    order = np.argsort(-p, kind="stable")
    tp = np.cumsum(y[order])
    k = np.arange(1, len(p) + 1)
    prec, rec = tp / k, tp / max(int(y.sum()), 1)
    f1 = np.where(tp > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    i = int(np.argmax(f1))
    thr = float(p[order[i]])
    if i + 1 < len(p) and p[order[i + 1]] < thr:
        lo, hi = (float(np.clip(q, 1e-12, 1 - 1e-12)) for q in (p[order[i + 1]], thr))
        mid = 0.5 * (np.log(lo / (1 - lo)) + np.log(hi / (1 - hi)))
        thr = float(1.0 / (1.0 + np.exp(-mid)))
    return thr, float(f1[i]), float(prec[i]), float(rec[i])


@dataclass(frozen=True)
class BatchView:
    """What every group's extension reads, prepared once per run: the batch record's columns, the probed ones
    first (in the probe's column order), then the unprobed ones it saw.

    Build it with :meth:`build`; :meth:`features` gives a group's standardised features from its members."""

    cols: np.ndarray  # batch-record columns: probed, then unprobed
    n_probed: int
    ids: np.ndarray  # stable ids of cols
    probe_log: np.ndarray  # (R, n_probed) log losses of the probe
    mean_log: np.ndarray  # (R,) their mean per row
    k0: np.ndarray  # (E, C): each visit's step lies between probe rows k0 and k0 + 1 ...
    wt: np.ndarray  # ... at this weight of row k0 + 1 (linear interpolation, clipped at the ends)
    seen: np.ndarray  # (E, C) 1.0 where the column was visited in that epoch
    rel: np.ndarray  # (E, C) its log loss above the probe's mean at that step, centred over its visits
    rel_norm: np.ndarray  # (C,)
    cls: np.ndarray | None  # (C,) class of each column (labels), or None
    flat: np.ndarray | None  # (C, D) inputs, or None
    cls_mean: np.ndarray | None  # (K + 1, D) probed mean input per class, and of all probed last

    @classmethod
    def build(cls, probed: np.ndarray, L: np.ndarray, S: np.ndarray, probe_log: np.ndarray, probe_steps: np.ndarray,
              ids: np.ndarray, labels: np.ndarray | None = None, inputs: np.ndarray | None = None,
              floor: float = 1e-4) -> "BatchView":
        """From the probed columns, the batch record's epoch matrix ``(L, S)`` (epochs, N; ``S`` -1 where
        unseen), the probe's ``log(loss + floor)`` (rows at ``probe_steps``) and, where known, every column's
        stable id, label and input."""
        probed = np.asarray(probed, dtype=np.int64)
        rest = np.setdiff1d(np.arange(L.shape[1]), probed)
        rest = rest[(S[:, rest] >= 0).any(axis=0)]
        cols = np.concatenate([probed, rest])
        Sc = S[:, cols]
        seen = (Sc >= 0).astype(np.float64)
        st = np.asarray(probe_steps, dtype=np.float64)
        s = np.where(Sc >= 0, Sc, 0).astype(np.float64)
        k0 = np.clip(np.searchsorted(st, s, side="right") - 1, 0, max(len(st) - 2, 0))
        gap = (st[np.minimum(k0 + 1, len(st) - 1)] - st[k0])
        wt = np.clip(np.where(gap > 0, (s - st[k0]) / np.where(gap > 0, gap, 1.0), 0.0), 0.0, 1.0)
        mean_log = probe_log.mean(axis=1)
        k1 = np.minimum(k0 + 1, len(st) - 1)
        base = mean_log[k0] * (1 - wt) + mean_log[k1] * wt
        rel = (np.log(np.where(Sc >= 0, L[:, cols], 1.0).astype(np.float64) + floor) - base) * seen
        rel -= seen * (rel.sum(0) / np.maximum(seen.sum(0), 1))
        flat = cls_idx = cls_mean = None
        if labels is not None:
            cls_idx = np.asarray(labels)[cols]
        if inputs is not None:
            flat = np.asarray(inputs).reshape(len(inputs), -1)[cols].astype(np.float32, copy=False)
            lab = cls_idx if cls_idx is not None else np.zeros(len(cols), dtype=np.int64)
            k = int(lab.max()) + 1 if len(lab) else 1
            cls_mean = np.zeros((k + 1, flat.shape[1]))
            cls_mean[k] = flat[: len(probed)].mean(0, dtype=np.float64)
            for c in range(k):
                rows = np.flatnonzero(lab[: len(probed)] == c)
                cls_mean[c] = flat[rows].mean(0, dtype=np.float64) if len(rows) else cls_mean[k]
        return cls(cols, len(probed), np.asarray(ids)[cols], probe_log, mean_log, k0, wt, seen, rel,
                   np.sqrt((rel * rel).sum(0)), cls_idx, flat, cls_mean)

    @property
    def names(self) -> tuple[str, ...]:
        return ("follow",) + (("class",) if self.cls is not None else ()) + (("input",) if self.flat is not None
                                                                           else ())

    def follow(self, mem: np.ndarray, upto: int) -> np.ndarray:
        """How closely each of the first ``upto`` columns follows the group of probed members ``mem`` (a mask)."""
        tmpl = self.probe_log[:, mem].mean(axis=1) - self.mean_log
        k0, wt, seen = self.k0[:, :upto], self.wt[:, :upto], self.seen[:, :upto]
        t = (tmpl[k0] * (1 - wt) + tmpl[np.minimum(k0 + 1, len(tmpl) - 1)] * wt) * seen
        t -= seen * (t.sum(0) / np.maximum(seen.sum(0), 1))
        den = self.rel_norm[:upto] * np.sqrt((t * t).sum(0))
        return np.where(den > 0, (self.rel[:, :upto] * t).sum(0) / np.where(den > 0, den, 1.0), 0.0)

    def projection(self, mem: np.ndarray, upto: int) -> np.ndarray:
        """The first ``upto`` columns' projections on the group's input direction (its members' mean input minus
        their classes' probed mean), each from its own class's probed mean."""
        lab = self.cls if self.cls is not None else np.zeros(len(self.cols), dtype=np.int64)
        members = np.flatnonzero(mem)
        d = self.flat[members].mean(0, dtype=np.float64) - self.cls_mean[lab[members]].mean(0)
        n = np.linalg.norm(d)
        if n == 0:
            return np.zeros(upto)
        d /= n
        return self.flat[:upto] @ d.astype(self.flat.dtype) - (self.cls_mean @ d)[lab[:upto]]

    def features(self, mem: np.ndarray, upto: int) -> np.ndarray:
        """Standardised (over the probed columns) features of the first ``upto`` columns, from members ``mem``."""
        feats = [self.follow(mem, upto)]
        if self.cls is not None:
            counts = np.bincount(self.cls[: self.n_probed][mem], minlength=int(self.cls.max()) + 1)
            feats.append(counts[self.cls[:upto]] / max(int(mem.sum()), 1))
        if self.flat is not None:
            feats.append(self.projection(mem, upto))
        F = np.stack(feats, axis=1)
        p = F[: self.n_probed]
        mu, sd = p.mean(0), p.std(0)
        return (F - mu) / np.where(sd > 0, sd, 1.0)


def extend_group(view: BatchView, member_cols: np.ndarray, seed: int = 0) -> Extension:
    """Extend one group found on the probe (``member_cols``: its members as batch-record columns, all probed)
    to the unprobed examples of ``view``."""
    return predict_group(view, member_cols, seed)[0]


def predict_group(view: BatchView, member_cols: np.ndarray, seed: int = 0) -> tuple[Extension, set[int]]:
    """:func:`extend_group`, and the ids of every example (probed or not) the membership model names: the
    group as its model sees it, which :func:`merge_extended` compares (empty when not extended)."""
    is_mem = np.isin(view.cols[: view.n_probed], np.asarray(member_cols, dtype=np.int64))
    names = view.names
    if is_mem.sum() < MIN_PROBED_MEMBERS:
        return Extension((), float("nan"), float("nan"), float("nan"), names, int(is_mem.sum()),
                         f"not extended: fewer than {MIN_PROBED_MEMBERS} probed members"), set()
    p_cv = cross_val_proba(lambda mem: view.features(mem, view.n_probed), is_mem, seed=seed)
    thr, f1, prec, rec = best_threshold(p_cv, is_mem)
    rng = np.random.default_rng(seed)
    null = max(best_threshold(cross_val_proba(lambda mem: view.features(mem, view.n_probed), perm, seed=seed),
                              perm)[1] for perm in (rng.permutation(is_mem) for _ in range(NULL_FITS)))
    if f1 <= null:
        return Extension((), prec, rec, thr, names, int(is_mem.sum()),
                         f"not extended: membership is not predictable outside the probe (cross-validated F1 "
                         f"{f1:.2f}, at most {null:.2f} with the labels permuted)"), set()
    if prec < MIN_PRECISION:
        return Extension((), prec, rec, thr, names, int(is_mem.sum()),
                         f"not extended: cross-validated precision {prec:.2f} is below {MIN_PRECISION}"), set()
    F = view.features(is_mem, len(view.cols))
    w = _fit_logistic(F[: view.n_probed], is_mem)
    named = _proba(F, w) >= thr
    chosen = view.n_probed + np.flatnonzero(named[view.n_probed:])
    ext = Extension(tuple(int(i) for i in view.ids[chosen]), prec, rec, thr, names, int(is_mem.sum()))
    return ext, {int(i) for i in view.ids[named | np.concatenate([is_mem, np.zeros(len(F) - len(is_mem), bool)])]}


MERGE_SHARE = 0.5
"""Two groups are one group the probe split when more than this share of the smaller one's examples, as their
membership models name them, belong to the other's too."""


def merge_extended(groups, pairs, rejected, named: list[set[int]] | None = None):
    """Join groups the probe split: those where more than :data:`MERGE_SHARE` of the smaller one's examples are
    also the other's, as ``named`` (per group: the ids its membership model names, :func:`predict_group`)
    or else their :attr:`~oppsig.signals.result.Group.all_ids` say. The first stays, with the other's probed
    members and extension added. Groups are renumbered in order; a pair between two joined groups is dropped,
    and of pairs that became the same pair the first (strongest) stays. Returns ``(groups, pairs, rejected)``."""
    sets = [set(g.all_ids) | (named[i] if named is not None else set()) for i, g in enumerate(groups)]
    parent = list(range(len(groups)))
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            inter = len(sets[i] & sets[j])
            if inter and inter / min(len(sets[i]), len(sets[j])) > MERGE_SHARE:
                _union(parent, i, j)
    return _join(groups, pairs, rejected, parent)


def join_split_partners(groups, pairs, rejected, changes: np.ndarray, col: dict[int, int]):
    """Join groups the probe split in two halves that oppose the same group: two groups each reported in a pair
    with one partner, of the same largest class, whose probed members' mean loss changes correlate positively
    (``changes``: (R-1, n) the probe's loss changes; ``col``: stable id -> its column). Each half's own pair
    passed the test; joining them adds no pair and only takes halves together. Returns ``(groups, pairs,
    rejected)`` as :func:`merge_extended` does."""
    partners: dict[int, list[int]] = {}
    for p in pairs:
        partners.setdefault(p.a, []).append(p.b)
        partners.setdefault(p.b, []).append(p.a)
    pos = {g.id: i for i, g in enumerate(groups)}
    parent = list(range(len(groups)))

    def mean_change(g) -> np.ndarray:
        return changes[:, [col[int(i)] for i in g.ids if int(i) in col]].mean(axis=1)

    def top_class(g):
        return max(g.class_counts, key=g.class_counts.get) if g.class_counts else None

    for halves in partners.values():
        for k, a in enumerate(halves):
            for b in halves[k + 1:]:
                ga, gb = groups[pos[a]], groups[pos[b]]
                if b in partners.get(a, ()) or top_class(ga) != top_class(gb):
                    continue
                if np.corrcoef(mean_change(ga), mean_change(gb))[0, 1] > 0:
                    _union(parent, pos[a], pos[b])
    return _join(groups, pairs, rejected, parent, "that oppose the same group")


def _union(parent: list[int], i: int, j: int) -> None:
    ri, rj = _root(parent, i), _root(parent, j)
    if ri != rj:
        parent[max(ri, rj)] = min(ri, rj)


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i


def _join(groups, pairs, rejected, parent: list[int], why: str = "the probe split it into"):
    """Groups joined by the forest ``parent`` (the first of each tree stays, with the others' probed members and
    extension added), renumbered; pairs within a joined group dropped, repeated pairs kept once."""
    def root(i: int) -> int:
        return _root(parent, i)

    if all(root(i) == i for i in range(len(groups))):
        return tuple(groups), tuple(pairs), tuple(rejected)
    new_id, out = {}, []
    for i, g in enumerate(groups):
        if root(i) != i:
            continue
        parts = [groups[j] for j in range(len(groups)) if root(j) == i]
        members = tuple(dict.fromkeys(m for p in parts for m in p.members))
        ids = tuple(dict.fromkeys(x for p in parts for x in p.ids))
        ext = g.extension
        if ext is not None:
            extra = tuple(dict.fromkeys(x for p in parts if p.extension for x in p.extension.ids if x not in ids))
            if len(parts) > 1:
                ext = dataclasses.replace(ext, ids=extra, note=(ext.note + "; " if ext.note else "")
                                          + f"joined with {len(parts) - 1} group(s) {why}")
        counts = g.class_counts
        if len(parts) > 1 and sum(len(q.ids) for q in parts) == len(ids):  # disjoint parts: their counts add up
            counts = dict(sum((Counter(q.class_counts) for q in parts), Counter()))
        new_id.update({groups[j].id: len(out) for j in range(len(groups)) if root(j) == i})
        out.append(dataclasses.replace(g, id=len(out), members=members, ids=ids, extension=ext, class_counts=counts))

    def remap(ps):
        seen, kept = set(), []
        for p in ps:
            a, b = new_id[p.a], new_id[p.b]
            if a == b or frozenset((a, b)) in seen:
                continue
            seen.add(frozenset((a, b)))
            kept.append(dataclasses.replace(p, a=a, b=b))
        return tuple(kept)

    return tuple(out), remap(pairs), remap(rejected)
