"""Synthetic per-example loss records with known structure: for tests and for calibrating the search.

:func:`eos_matrix` makes a loss matrix (steps, N) in which every example
oscillates with the top direction (period 2, a slowly varying envelope), each
with its own sign and size, plus noise; planted groups swing in anti-phase in
episodes of their own. Its options give the null families of the calibration
harness (``benchmarks/signals_calibration.py``): random or class-dependent
signs, log-normal or heavy-tailed (Pareto) per-example amplitudes, and planted
members whose own swing is no larger than the median example's.

:func:`quiet_matrix` makes one whose planted members are *quiet*: their losses fall early to a small fraction
of the others' and the planted pair moves them only in relative terms (``log L``), so that no member swings
as much as the median example and their raw loss changes are dominated by the early, common phase.

:func:`cross_class_matrix` makes one whose planted pair (e.g. two classes' groups sharing a feature) is each
group's most anti-phase partner, while each group is also opposed, less anti-phase, by a louder group.

:func:`overlap_f1` scores a found group against a planted one.

Example:
    >>> L = eos_matrix(50, 30, seed=0)
    >>> L.shape, bool((L > 0).all())
    ((30, 50), True)
    >>> overlap_f1([1, 2, 3], [2, 3, 4])
    0.6666666666666666
"""

from __future__ import annotations

import numpy as np


def overlap_f1(found, truth) -> float:
    """F1 of a found set of examples against a true one: ``2 |A & B| / (|A| + |B|)`` (1 when both are empty)."""
    found, truth = set(map(int, found)), set(map(int, truth))
    tp = len(found & truth)
    return 2 * tp / (len(found) + len(truth)) if found or truth else 1.0


def _period_two(steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``t``, the period-2 sign ``(-1)^t`` and the slowly varying envelope of the generic oscillation."""
    t = np.arange(steps)
    return t, (-1.0) ** t, 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * t / 60.0))


def _episodes(steps: int, k: int) -> np.ndarray:
    """(steps,) envelope of planted pair ``k``'s own episodes: growing swings (25 rows) that end in a burst,
    every ``70 + 23 k`` rows from row ``10 + 17 k``."""
    env = np.zeros(steps)
    for start in range(10 + 17 * k, steps, 70 + 23 * k):
        ramp = np.arange(min(25, steps - start))
        env[start : start + len(ramp)] = np.exp(ramp / 8.0) / np.exp(24 / 8.0)
    return env


def eos_matrix(
    n: int,
    steps: int,
    planted: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    generic: float = 0.02,
    noise: float = 0.005,
    amplitude: float = 0.4,
    seed: int = 0,
    spikes: tuple[int, ...] = (),
    labels: np.ndarray | None = None,
    tails: str = "lognormal",
    ordinary: bool = False,
) -> np.ndarray:
    """Losses (steps, n): slow decay, generic period-2 oscillation, noise, and anti-phase planted groups.

    Args:
        n, steps: size of the matrix.
        planted: pair number k -> (rows of group a, rows of group b); pair k swings
            in its own episodes (growing oscillation that ends in a burst), group a
            up when group b goes down.
        generic: size of the generic oscillation (every example, its own sign and amplitude).
        noise: standard deviation of independent noise per step and example.
        amplitude: size of the planted swing.
        seed: seed of every draw.
        spikes: rows of total-loss spikes: every loss rises (+15 % of the total) and
            pair i (cycling) overshoots, group a at the row and group b one row later.
        labels: (n,) classes; when given, the sign of the generic oscillation is
            the class's (class-dependent signs) instead of each example's own.
        tails: per-example amplitude of the generic oscillation: ``"lognormal"``
            (sigma 0.5) or ``"pareto"`` (heavy-tailed, shape 1.5).
        ordinary: planted members get the 10th-percentile generic amplitude, so
            their own swing stays near or below the median example's.

    Returns:
        (steps, n) float32 losses, all positive.
    """
    rng = np.random.default_rng(seed)
    t, alt, growth = _period_two(steps)
    sign = rng.choice([-1.0, 1.0], size=n)
    if labels is not None:
        cls_sign = rng.choice([-1.0, 1.0], size=int(np.max(labels)) + 1)
        sign = cls_sign[np.asarray(labels)]
    if tails == "pareto":
        size = 1.0 + rng.pareto(1.5, size=n)
    elif tails == "lognormal":
        size = rng.lognormal(0.0, 0.5, size=n)
    else:
        raise ValueError(f"tails must be 'lognormal' or 'pareto', got {tails!r}")
    if ordinary and planted:
        members = np.concatenate([np.concatenate([a, b]) for a, b in planted.values()])
        size[members] = np.quantile(size, 0.1)
    c = sign * size
    d = generic * (alt * growth)[:, None] * c[None, :]
    d += noise * rng.standard_normal((steps, n))
    for k, (a, b) in (planted or {}).items():
        osc = amplitude * alt * (0.15 + _episodes(steps, k))
        d[:, a] += osc[:, None] * rng.uniform(0.7, 1.3, size=len(a))
        d[:, b] -= osc[:, None] * rng.uniform(0.7, 1.3, size=len(b))
    loss = 1.0 + 0.5 * np.exp(-t / 80.0)[:, None] + np.cumsum(d, axis=0) - np.cumsum(d, axis=0).mean(0)
    loss = np.maximum(loss, 0.01)
    owners = [planted[k] for k in sorted(planted)] if planted else []
    for i, s in enumerate(spikes):
        loss[s] += 0.15 * float(loss[s].mean())
        if owners:
            first, second = owners[i % len(owners)]
            loss[s, first] += 3 * amplitude
            if s + 1 < steps:
                loss[s + 1, second] += 3 * amplitude
    return loss.astype(np.float32)


def cross_class_matrix(
    n: int,
    steps: int,
    planted: tuple[np.ndarray, np.ndarray],
    partners: tuple[np.ndarray, np.ndarray],
    amplitude: float = 0.04,
    partner_swing: float = 8.0,
    share: float = 0.8,
    seed: int = 0,
) -> np.ndarray:
    """Losses (steps, n) of a cross-class planted pair whose groups each also oppose a louder, weaker partner.

    ``planted = (a, b)`` (e.g. groups of two classes sharing a feature) swing in anti-phase
    in episodes of their own (:func:`eos_matrix`, ``amplitude``). ``partners = (c, d)`` (e.g.
    groups of ``a``'s and ``b``'s classes) swing ``partner_swing`` times as much in episodes
    of their own, with period 4 (along another direction), ``c`` against ``a`` and ``d`` against
    ``b``, which follow them at ``share`` of their planted swing. Each planted group is then
    more anti-phase with the other than with its partner, while the partner pair, louder, has
    the larger ``-corr`` times swing.

    Returns:
        (steps, n) float32 losses, all positive.

    Example:
        >>> rows = [np.arange(i * 20, i * 20 + 20) for i in range(4)]
        >>> L = cross_class_matrix(1000, 200, (rows[0], rows[1]), (rows[2], rows[3]), seed=1)
        >>> m = np.diff(L, axis=0)
        >>> ab, ac = (float(np.corrcoef(m[:, rows[0]].mean(1), m[:, rows[j]].mean(1))[0, 1]) for j in (1, 2))
        >>> round(ab, 2), round(ac, 2)
        (-0.75, -0.5)
    """
    a, b = planted
    loss = eos_matrix(n, steps, {0: (a, b)}, amplitude=amplitude, seed=seed).astype(np.float64)
    rng = np.random.default_rng([seed, 1])
    second = (-1.0) ** (np.arange(steps) // 2)  # period 4: along another direction than the planted pair's
    d = np.zeros((steps, n))
    for k, (loud, planted_group) in ((1, (partners[0], a)), (2, (partners[1], b))):
        osc = amplitude * second * _episodes(steps, k)  # the partner pair's own episodes
        d[:, loud] += partner_swing * osc[:, None] * rng.uniform(0.7, 1.3, size=len(loud))
        d[:, planted_group] -= share * osc[:, None] * rng.uniform(0.7, 1.3, size=len(planted_group))
    loss += np.cumsum(d, axis=0) - np.cumsum(d, axis=0).mean(axis=0)
    return np.maximum(loss, 0.01).astype(np.float32)


def quiet_matrix(
    n: int,
    steps: int,
    planted: tuple[np.ndarray, np.ndarray],
    amplitude: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """Losses (steps, n) whose planted pair is made of quiet, low-loss examples that move in relative terms.

    Every example's ``log L`` decays slowly and oscillates with the top direction (its
    own sign and log-normal size) plus a random walk; the planted members' losses fall
    from 1.2 to 0.01 within the first ``steps / 2`` rows, after which the two groups
    swing in anti-phase in ``log L`` (relative amplitude ``amplitude``). In raw loss the
    members are quiet (they sit near 0.01 when they swing); in relative terms they
    follow their group closely.

    Returns:
        (steps, n) float32 losses, all positive.
    """
    rng = np.random.default_rng(seed)
    t, alt, growth = _period_two(steps)
    c = rng.choice([-1.0, 1.0], size=n) * rng.lognormal(0.0, 0.5, size=n)
    common = 0.05 * np.cumsum((alt * growth)[:, None] * c[None, :], axis=0)
    common += np.cumsum(0.01 * rng.standard_normal((steps, n)), axis=0)
    level = np.repeat((np.log(1.2) - t / 400.0)[:, None], n, axis=1)
    a, b = planted
    members = np.concatenate([a, b])
    level[:, members] = np.maximum(np.log(1.2) - t / (steps / 10.0), np.log(0.01))[:, None]
    env = np.where(t >= steps // 2, 0.2 + np.abs(np.sin(2 * np.pi * t / 50.0)), 0.0) * alt
    logl = level + common
    for rows, sign in ((a, 1.0), (b, -1.0)):
        logl[:, rows] += sign * amplitude * np.cumsum(env)[:, None] * rng.uniform(0.7, 1.3, size=len(rows))
    return np.exp(logl).astype(np.float32)
