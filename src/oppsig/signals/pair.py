"""Pair: groups whose losses move in anti-phase, tested against the generic-oscillation null.

Near the edge of stability every example's loss oscillates along the top
Hessian direction with some sign, so *any* examples split by the sign of their
co-movement give anti-correlated halves. Anti-correlation alone is therefore
no evidence. A candidate pair (group-mean loss changes correlating at most
``max_pair_corr``) is compared with null pairs of the same sizes made by that
splitting procedure from random examples (random examples split by their
correlation with the dominant oscillation of the run), on what is specific to
opposing signals, group by group:

- **swing**: the standard deviation of the group-mean loss change;
- **spike share**: the group's share of the absolute loss change in the spike
  windows, over its share of the examples;
- **coherence**: class purity (fraction of the most common class) plus the rms
  effect size of the input descriptors.

Each of the six statistics (three per group) gets a one-sided p-value from a
normal fit to the null (log scale for swing and spike share); the pair's
p-value is the largest of the six (both groups must beat the null on all
three), and it is significant when that is at most ``alpha`` divided by the
number of pairs tested. Each group is then kept in at most one significant
pair, its strongest.

Example:
    >>> rng = np.random.default_rng(0)
    >>> osc = (-1.0) ** np.arange(300) * np.linspace(0.1, 1, 300)
    >>> a, b = osc[:, None] + 0.2 * rng.standard_normal((300, 8)), -osc[:, None] + 0.2 * rng.standard_normal((300, 8))
    >>> pair_correlation(a.mean(1), b.mean(1)) < -0.9
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from .result import Pair


def pair_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two series (0 when either is constant)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    d = np.linalg.norm(x) * np.linalg.norm(y)
    return float(x @ y / d) if d > 0 else 0.0


@dataclass
class PairContext:
    """What the group statistics need about the run and the data.

    Attributes:
        spike_rows: (W,) change rows inside spike windows (all rows when no spike).
        abs_row: (R-1,) total absolute loss change per change row.
        n_examples: N.
        desc_z: (N, F) standardised input descriptors.
        labels: (N,) classes (or ``None``).
    """

    spike_rows: np.ndarray
    abs_row: np.ndarray
    n_examples: int
    desc_z: np.ndarray
    labels: np.ndarray | None

    @property
    def spike_total(self) -> float:
        return float(self.abs_row[self.spike_rows].sum())

    def swing(self, series: np.ndarray) -> float:
        """Std over time of the mean of ``series`` (T, m)."""
        return float(series.mean(axis=1).std())

    def spike_enrichment(self, series: np.ndarray) -> float:
        """Share of the spike-window |loss change| carried by the columns, over their share of examples."""
        tot = self.spike_total
        if tot <= 0:
            return float("nan")
        share = float(np.abs(series[self.spike_rows]).sum()) / tot
        return share / (series.shape[1] / self.n_examples)

    def coherence(self, rows: np.ndarray) -> float:
        """Class purity plus rms descriptor effect size of the examples ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        pur = 0.0
        if self.labels is not None and self.labels.ndim == 1:
            pur = float(np.bincount(self.labels[rows]).max() / len(rows))
        feat = 0.0
        if self.desc_z.shape[1]:
            feat = float(np.sqrt(np.mean(self.desc_z[rows].mean(axis=0) ** 2)))
        return pur + feat

    def group_stats(self, series: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(3,) swing, spike enrichment and coherence of one group with loss changes ``series`` (T, m)."""
        return np.array([self.swing(series), self.spike_enrichment(series), self.coherence(rows)])


@dataclass
class NullDraws:
    """Null pairs of one pair of sizes.

    Attributes:
        corr: (n,) correlation of the two halves' mean loss changes.
        a, b: (n, 3) swing, spike enrichment and coherence of each half.
    """

    corr: np.ndarray
    a: np.ndarray
    b: np.ndarray


@dataclass
class NullModel:
    """The generic edge-of-stability null: random examples split by their co-movement.

    A null pair of sizes (na, nb) takes na + nb random pool examples and splits
    them by their correlation with the dominant oscillation of the run: the na
    most positive and the nb most negative (a split by sign that always yields
    the sizes asked for).

    Attributes:
        rows: (P,) pool of random example rows.
        series: (T, P) their loss changes.
        score: (P,) correlation of each pool example's loss changes with the
            dominant oscillation (the leading component's time profile).
    """

    rows: np.ndarray
    series: np.ndarray
    score: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, rows: np.ndarray, series: np.ndarray, reference: np.ndarray) -> "NullModel":
        """The null of the pool ``rows`` / ``series`` (T, P) split along ``reference`` (T,)."""
        x = series - series.mean(axis=0)
        r = np.asarray(reference, dtype=np.float64)
        r = r - r.mean()
        den = np.linalg.norm(x, axis=0) * max(float(np.linalg.norm(r)), 1e-30)
        score = np.where(den > 0, (x.T @ r) / np.where(den > 0, den, 1.0), 0.0)
        return cls(np.asarray(rows), series, score)

    def lean(self, mean_series: np.ndarray) -> int:
        """+1 or -1: whether a group with this mean loss change moves with the positive or negative side."""
        x = self.series - self.series.mean(axis=0)
        m = mean_series - mean_series.mean()
        return 1 if float((x.T @ m) @ self.score) >= 0 else -1

    def draws(self, ctx: PairContext, na: int, nb: int, n: int, rng: np.random.Generator) -> NullDraws:
        """``n`` null pairs: ``na`` examples from the positive end of a random sample, ``nb`` from its negative end."""
        key = (na, nb, n)
        if key not in self._cache:
            p = len(self.rows)
            k = min(na + nb, p)
            ka = min(na, max(1, k - 1))
            kb = k - ka
            abs_spike = np.abs(self.series[ctx.spike_rows]).sum(axis=0)
            tot = ctx.spike_total
            corr = np.empty(n)
            sa, sb = np.empty((n, 3)), np.empty((n, 3))
            for i in range(n):
                pick = rng.choice(p, size=k, replace=False)
                pick = pick[np.argsort(-self.score[pick], kind="stable")]
                out = []
                for half in (pick[:ka], pick[ka:]):
                    m = self.series[:, half].mean(axis=1)
                    spike = (abs_spike[half].sum() / tot) / (len(half) / ctx.n_examples) if tot > 0 else np.nan
                    out.append((m, (m.std(), spike, ctx.coherence(self.rows[half]))))
                corr[i] = pair_correlation(out[0][0], out[1][0])
                sa[i], sb[i] = out[0][1], out[1][1]
            self._cache[key] = NullDraws(corr, sa, sb)
        return self._cache[key]


def _z(obs: float, null: np.ndarray, log: bool) -> float:
    """One-sided z of ``obs`` against the null sample (log scale if ``log``); NaN if undefined."""
    null = null[np.isfinite(null)]
    if not np.isfinite(obs) or len(null) < 2:
        return float("nan")
    if log:
        obs, null = np.log(max(obs, 1e-30)), np.log(np.maximum(null, 1e-30))
    sd = float(null.std(ddof=1))
    mu = float(null.mean())
    if sd <= 1e-12:
        return float("inf") if obs > mu else float("-inf") if obs < mu else 0.0
    return (obs - mu) / sd


def find_pairs(
    group_series: list[np.ndarray],
    group_rows: list[np.ndarray],
    ctx: PairContext,
    null: NullModel,
    max_pair_corr: float = -0.3,
    alpha: float = 0.01,
    n_null: int = 200,
    seed: int = 0,
) -> tuple[list[Pair], float]:
    """Test every pair of groups whose mean loss changes anti-correlate.

    Args:
        group_series: per group, its members' loss changes (T, m_g).
        group_rows: per group, its members' rows in the data set.
        ctx: run and data facts (:class:`PairContext`).
        null: the generic-oscillation null (:class:`NullModel`).
        max_pair_corr: pairs correlating above this are not tested.
        alpha: family-wise level; each test uses ``alpha / n_tests``.
        n_null: null pairs drawn per pair of sizes.

    Returns:
        (pairs, null_corr): every tested pair, significant ones first, then by
        strength; and the mean correlation of 20-vs-20 null halves.
    """
    rng = np.random.default_rng(seed)
    g = len(group_series)
    means = [s.mean(axis=1) for s in group_series]
    stats = [ctx.group_stats(s, r) for s, r in zip(group_series, group_rows)]
    cands = []
    for i in range(g):
        for j in range(i + 1, g):
            c = pair_correlation(means[i], means[j])
            if c <= max_pair_corr:
                # report each pair as (larger swing, smaller swing)
                cands.append((i, j, c) if stats[i][0] >= stats[j][0] else (j, i, c))
    null_corr = float(np.mean(null.draws(ctx, 20, 20, n_null, rng).corr)) if len(null.rows) >= 40 else float("nan")
    thr = alpha / max(1, len(cands))
    pairs = []
    for i, j, c in cands:
        na, nb = group_series[i].shape[1], group_series[j].shape[1]
        # group a is compared with the half of the null on the side it moves with, b with the other
        if null.lean(means[i]) > 0:
            nd = null.draws(ctx, na, nb, n_null, rng)
            da, db = nd.a, nd.b
        else:
            nd = null.draws(ctx, nb, na, n_null, rng)
            da, db = nd.b, nd.a
        z = np.array(
            [_z(stats[i][k], da[:, k], log=k < 2) for k in range(3)]
            + [_z(stats[j][k], db[:, k], log=k < 2) for k in range(3)]
        )
        p = 1.0 if np.isnan(z).any() else float(norm.sf(z.min()))
        swing = float(np.sqrt(stats[i][0] * stats[j][0]))
        null_swing = float(np.median(np.sqrt(da[:, 0] * db[:, 0])))
        strength = -c * (swing / null_swing if null_swing > 0 else float("inf"))
        spike = ctx.spike_enrichment(np.concatenate([group_series[i], group_series[j]], axis=1))
        pairs.append(
            Pair(
                a=i, b=j, corr=float(c), strength=float(strength), swing=swing, spike_share=spike,
                coherence=float(0.5 * (stats[i][2] + stats[j][2])), null_corr=float(np.mean(nd.corr)),
                z_swing=float(min(z[0], z[3])), z_spike=float(min(z[1], z[4])), z_coherence=float(min(z[2], z[5])),
                p_value=p, threshold=thr, significant=bool(p <= thr and c <= max_pair_corr),
            )
        )
    pairs.sort(key=lambda p: (not p.significant, -p.strength))
    return match_pairs(pairs), null_corr


def match_pairs(pairs: list[Pair]) -> list[Pair]:
    """Keep each group in at most one significant pair: the strongest, taken greedily.

    ``pairs`` must be sorted significant first, strongest first. A significant
    pair whose group already has a stronger partner is marked not significant
    (its groups are explained by their main partners).
    """
    used: set[int] = set()
    out = []
    for p in pairs:
        if p.significant:
            if p.a in used or p.b in used:
                p = Pair(**{**p.__dict__, "significant": False})
            else:
                used.update((p.a, p.b))
        out.append(p)
    out.sort(key=lambda p: (not p.significant, -p.strength))
    return out


def spike_rise_shares(
    series: np.ndarray, total: np.ndarray, spikes, n_examples: int
) -> list[float]:
    """Share of each spike's net total-loss rise (onset to peak) carried by the columns of ``series``.

    Args:
        series: (R-1, m) loss changes of the examples.
        total: (R,) total (mean) loss.
        spikes: :class:`~oppsig.signals.result.Spike` objects.
        n_examples: N (the total loss is a mean over N examples).

    Returns:
        One share per spike (NaN when the total loss did not rise).
    """
    out = []
    for s in spikes:
        rise = float(total[s.row] - total[s.onset_row])
        part = float(series[s.onset_row : s.row].sum()) / n_examples
        out.append(part / rise if rise > 0 else float("nan"))
    return out
