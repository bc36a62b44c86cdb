"""The anti-phase null: what the leading oscillation alone gives to a pair of groups of given sizes.

:class:`AntiPhaseNull` draws random examples of a pair's sizes from a pool, splits them by their
co-movement with the leading oscillation, and compares the pair's anti-phase (as it is, and beyond
that oscillation) with the draws' (:class:`AntiPhaseTest`). It is a gate after the coherence test
of :mod:`~oppsig.signals.pair`: it can only remove pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pair import draws_needed, pair_correlation
from .result import SignalsError
from .tuning import ANTI_PHASE_MIN_DRAWS


def anti_phase_draws(level: float) -> int:
    """Draws of :class:`AntiPhaseNull`: at least 199, and enough that each of its two p-values resolves
    ``level / 2`` (their Bonferroni combination is compared with ``level``): 399 at 0.01."""
    return draws_needed(ANTI_PHASE_MIN_DRAWS, level / 2)


class AntiPhaseNull:
    """What the leading oscillation alone gives: random examples of a pair's sizes, split by their co-movement.

    Near the edge of stability every example oscillates along the top direction
    with its own sign, so any examples split by that sign give anti-correlated
    halves. A pair of groups of sizes ``(m_a, m_b)`` is compared with ``n`` draws
    of ``m_a + m_b`` random examples (without replacement), ranked by the
    correlation of their loss changes with ``reference`` (the leading component's
    time profile), the ``m_a`` on group ``a``'s side of it against the other
    ``m_b``. Two statistics of each draw (:meth:`draws`):

    - the correlation of the two halves' mean series (*anti-phase*), and
    - the same after the reference is projected out of both means (*anti-phase beyond
      the leading oscillation*).

    A pair's anti-phase is explained by the leading oscillation when neither is beyond
    the draws. The first misses a pair with an oscillation of its own that is weaker
    than the leading one (where that one is clean, random splits by it correlate near
    -1); the second misses a pair that *is* the run's strongest oscillation (then the
    reference is the pair's own profile, and projecting it out leaves noise). :meth:`test`
    gives each one's Monte Carlo p-value ``(1 + #{draws at least as anti-phase}) / (n + 1)``
    and their Bonferroni combination ``min(1, 2 min(p, p_beyond))``: the chance that a pair
    whose anti-phase is that of random splits passes it at a level is at most the level.

    Args:
        series: (T, P) loss changes of the pool of examples the draws come from.
        reference: (T,) the series the examples are ranked by.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> t = np.arange(200); ref = (-1.0) ** t
        >>> x = ref[:, None] * rng.normal(0, 1, 400) + rng.normal(0, 1, (200, 400))
        >>> null = AntiPhaseNull(x, ref)
        >>> null.test(-0.99, 0.0, 20, 20, 1.0, 199, rng).p
        0.01
        >>> null.test(0.0, 0.9, 20, 20, 1.0, 199, rng).p  # no anti-phase, as it is or beyond
        1.0
    """

    def __init__(self, series: np.ndarray, reference: np.ndarray) -> None:
        x = np.asarray(series, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        if x.ndim != 2 or r.shape != (x.shape[0],):
            raise SignalsError(f"series must be (T, P) and reference (T,), got {x.shape} and {r.shape}")
        self.xt = np.ascontiguousarray(x.T)  # (P, T): one example's series per row
        xc = x - x.mean(axis=0)
        rc = r - r.mean()
        nr = float(np.linalg.norm(rc))
        self.unit = rc / nr if nr > 0 else rc  # the centred reference, unit length (zero when constant)
        den = np.linalg.norm(xc, axis=0) * max(nr, 1e-30)
        self.score = (xc.T @ rc) / np.where(den > 0, den, 1.0)  # (P,) correlation with the reference

    @property
    def size(self) -> int:
        """Examples in the pool."""
        return int(self.xt.shape[0])

    def beyond(self, a: np.ndarray, b: np.ndarray) -> float:
        """Correlation of two series after the reference is projected out of both (0 when one is left constant)."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        a, b = a - a.mean(), b - b.mean()
        return pair_correlation(a - (a @ self.unit) * self.unit, b - (b @ self.unit) * self.unit)

    def draws(self, size_a: int, size_b: int, sign: float, n: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(corr, beyond)``, each (n,): the two statistics of random splits of sizes ``(size_a, size_b)``,
        ``size_a`` on the ``sign`` side.

        Raises:
            SignalsError: when the pool holds fewer than ``size_a + size_b`` examples (draws are never shrunk).
        """
        from scipy.sparse import csr_matrix

        m, p = int(size_a) + int(size_b), self.size
        if size_a < 1 or size_b < 1 or m > p:
            raise SignalsError(f"random splits of {size_a} + {size_b} examples need that many in the pool, "
                               f"which holds {p}")
        picks = np.stack([rng.choice(p, m, replace=False) for _ in range(n)])  # (n, m)
        order = np.argsort(-np.sign(sign or 1.0) * self.score[picks], axis=1, kind="stable")
        picks = np.take_along_axis(picks, order, axis=1)
        rows = np.repeat(np.arange(n), m)
        w = np.tile(np.r_[np.full(size_a, 1.0 / size_a), np.full(size_b, 1.0 / size_b)], n)
        side_a = np.tile(np.arange(m) < size_a, n)
        ma = csr_matrix((w[side_a], (rows[side_a], picks.ravel()[side_a])), shape=(n, p)) @ self.xt  # (n, T)
        mb = csr_matrix((w[~side_a], (rows[~side_a], picks.ravel()[~side_a])), shape=(n, p)) @ self.xt
        ma -= ma.mean(axis=1, keepdims=True)
        mb -= mb.mean(axis=1, keepdims=True)
        out = []
        for x, y in ((ma, mb), (ma - np.outer(ma @ self.unit, self.unit), mb - np.outer(mb @ self.unit, self.unit))):
            den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
            out.append(np.where(den > 0, (x * y).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0))
        return out[0], out[1]

    def test(self, corr: float, beyond: float, size_a: int, size_b: int, sign: float, n: int,
             rng: np.random.Generator) -> "AntiPhaseTest":
        """The pair's anti-phase (``corr``, and ``beyond`` from :meth:`beyond`) against ``n`` random splits."""
        c, cb = self.draws(size_a, size_b, sign, n, rng)
        p_corr = float((1 + (c <= corr).sum()) / (n + 1))
        p_beyond = float((1 + (cb <= beyond).sum()) / (n + 1))
        return AntiPhaseTest(p=min(1.0, 2 * min(p_corr, p_beyond)), p_corr=p_corr, p_beyond=p_beyond,
                         null_corr=float(c.mean()), beyond=float(beyond), null_beyond=float(cb.mean()))


@dataclass(frozen=True)
class AntiPhaseTest:
    """A pair's anti-phase against :class:`AntiPhaseNull` (p-values ``(1 + #{draws as anti-phase}) / (n + 1)``).

    Attributes:
        p: ``min(1, 2 min(p_corr, p_beyond))``: small when either statistic is beyond random splits.
        p_corr: of the correlation of the two group means.
        p_beyond: of their correlation after the leading oscillation is projected out of both.
        null_corr, null_beyond: the draws' mean of each statistic.
        beyond: the pair's correlation beyond the leading oscillation.
    """

    p: float
    p_corr: float
    p_beyond: float
    null_corr: float
    beyond: float
    null_beyond: float
