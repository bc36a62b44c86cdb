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
:data:`NULL_FITS` permutations of the membership labels (else its note says why not). Co-movement on a
noisy probe finds a group's core; the model then completes the group on the probe itself
(:func:`complete_labels`: the probed examples its out-of-fold fit names, and that move with the found members
beyond noise, join the labels until they settle), and is used only when its cross-validated precision on the
completed labels is at least
:data:`MIN_PRECISION`. The model fitted on every probed example then names the members among the unprobed
ones. Each extended group keeps its probed members as found; :class:`~oppsig.signals.result.Extension`
carries the ids named outside the probe, the probed ones the completion added and dropped, and the
estimate, so a number printed is one with its measured error.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((400, 2)); y = (X[:, 0] > 1.2)
    >>> p = cross_val_proba(X, y, folds=5, seed=0)
    >>> float(best_threshold(p, y)[1]) > 0.8   # F1 of the cross-validated fit
    True
"""

from __future__ import annotations

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
    changes: np.ndarray  # (R-1, n_probed) the probe's log-loss changes between rows

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
                   np.sqrt((rel * rel).sum(0)), cls_idx, flat, cls_mean, np.diff(probe_log, axis=0))

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


COMPLETE_ROUNDS = 10
"""Rounds of :func:`complete_labels` at most."""
NOISE_Z = 3.0
"""An example a completion adds must move with the found members beyond noise: its log-loss changes over the
probe's T changes correlate with the found members' mean at least ``NOISE_Z / sqrt(T)`` (a one-sided level of
about 0.0013 for an example that does not move with them, so that of a probe's thousand non-members about one
passes by chance)."""


def extend_group(view: BatchView, member_cols: np.ndarray, seed: int = 0) -> Extension:
    """Extend one group found on the probe (``member_cols``: its members as batch-record columns, all probed)
    to the unprobed examples of ``view``."""
    return predict_group(view, member_cols, seed)[0]


def predict_group(view: BatchView, member_cols: np.ndarray, seed: int = 0) -> tuple[Extension, set[int]]:
    """:func:`extend_group`, and the ids of every example (probed or not) the membership model names: the
    group as its model sees it, which :func:`~oppsig.signals.join.merge_extended` compares (empty when not
    extended)."""
    is_mem = np.isin(view.cols[: view.n_probed], np.asarray(member_cols, dtype=np.int64))
    names = view.names
    found = int(is_mem.sum())
    if found < MIN_PROBED_MEMBERS:
        return Extension((), float("nan"), float("nan"), float("nan"), names, found,
                         f"not extended: fewer than {MIN_PROBED_MEMBERS} probed members"), set()

    def features(mem: np.ndarray) -> np.ndarray:
        return view.features(mem, view.n_probed)

    p_cv = cross_val_proba(features, is_mem, seed=seed)
    thr, f1, prec, rec = best_threshold(p_cv, is_mem)
    rng = np.random.default_rng(seed)
    null = max(best_threshold(cross_val_proba(features, perm, seed=seed), perm)[1]
               for perm in (rng.permutation(is_mem) for _ in range(NULL_FITS)))
    if f1 <= null:
        return Extension((), prec, rec, thr, names, found,
                         f"not extended: membership is not predictable outside the probe (cross-validated F1 "
                         f"{f1:.2f}, at most {null:.2f} with the labels permuted)"), set()
    moving = co_moving(view.changes, is_mem)
    lab, (thr, f1, prec, rec), rounds = complete_labels(features, is_mem, p_cv, (thr, f1, prec, rec), moving, seed)
    if prec < MIN_PRECISION:
        return Extension((), prec, rec, thr, names, found,
                         f"not extended: cross-validated precision {prec:.2f} is below {MIN_PRECISION}"), set()
    F = view.features(lab, len(view.cols))
    w = _fit_logistic(F[: view.n_probed], lab)
    named = _proba(F, w) >= thr
    named[: view.n_probed] &= is_mem | moving  # on the probe, an example is added only with its co-movement
    kept = int((named[: view.n_probed] & is_mem).sum())
    if 2 * kept < found:  # a model that leaves out most of the group it learnt from does not describe it
        return Extension((), prec, rec, thr, names, found,
                         f"not extended: its membership model keeps only {kept} of the {found} members found"), set()
    chosen = view.n_probed + np.flatnonzero(named[view.n_probed:])
    pids = view.ids[: view.n_probed]
    on_probe = named[: view.n_probed]
    ext = Extension(tuple(int(i) for i in view.ids[chosen]), prec, rec, thr, names, found,
                    f"completed on the probe in {rounds} round(s)" if rounds else "",
                    added=tuple(int(i) for i in pids[on_probe & ~is_mem]),
                    dropped=tuple(int(i) for i in pids[is_mem & ~on_probe]))
    return ext, {int(i) for i in view.ids[named]}


def co_moving(changes: np.ndarray, is_mem: np.ndarray, z: float = NOISE_Z) -> np.ndarray:
    """(n,) whether each column of ``changes`` (T, n: the probe's log-loss changes) correlates with the mean of
    the columns ``is_mem`` at least ``z / sqrt(T)`` (:data:`NOISE_Z`): moves with them beyond noise.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> t = rng.standard_normal(100)
        >>> c = rng.standard_normal((100, 6)) + np.array([1, 1, 1, 0.5, 0, 0]) * t[:, None]
        >>> co_moving(c, np.array([True, True, True, False, False, False])).tolist()
        [True, True, True, True, False, False]
    """
    t = changes.shape[0]
    core = changes[:, is_mem].mean(axis=1)
    x = changes - changes.mean(axis=0)
    c = core - core.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (x.T @ c) / (np.linalg.norm(x, axis=0) * np.linalg.norm(c))
    return np.nan_to_num(corr, nan=0.0) >= z / np.sqrt(max(t, 1))


def complete_labels(features, is_mem: np.ndarray, p_cv: np.ndarray, fit: tuple[float, float, float, float],
                    moving: np.ndarray, seed: int = 0) -> tuple[np.ndarray, tuple[float, float, float, float], int]:
    """The probe's membership as the group's own membership model completes it.

    Co-movement on a noisy probe finds a group's core: members whose loss changes correlate with its mean
    above the threshold. Members whose own noise hides them look like non-members to the membership model
    fitted on these labels, and its cross-validated "false positives" are then mostly the members missed.
    Each round the found members and the probed examples the out-of-fold model names (``p_cv >= threshold``:
    each judged by a model that did not see it) and that move with the found members beyond noise (``moving``,
    :func:`co_moving`: what the inputs and classes alone would add is not the group's) become the labels, and
    the model is fitted again, until the labels stop changing or :data:`COMPLETE_ROUNDS` rounds pass.
    Completion starts only after the first fit beats its label-permutation null (:func:`predict_group`), so a
    group whose membership cannot be learnt is not completed.

    Returns:
        ``(labels, (threshold, f1, precision, recall), rounds)``: the completed labels over the probed
        examples, the cross-validated fit on them and the rounds that changed them.
    """
    lab, rounds = is_mem, 0
    for _ in range(COMPLETE_ROUNDS):
        new = is_mem | ((p_cv >= fit[0]) & moving)
        if (new == lab).all():
            break
        lab, rounds = new, rounds + 1
        p_cv = cross_val_proba(features, lab, seed=seed)
        fit = best_threshold(p_cv, lab)
    return lab, fit, rounds
