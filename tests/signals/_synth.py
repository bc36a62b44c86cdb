"""Synthetic per-example loss matrices with known structure, for the signals tests."""

from __future__ import annotations

import numpy as np


def eos_matrix(
    n: int,
    steps: int,
    planted: dict[int, np.ndarray] | None = None,
    generic: float = 0.02,
    noise: float = 0.005,
    amplitude: float = 0.4,
    seed: int = 0,
    spikes: tuple[int, ...] = (),
) -> np.ndarray:
    """Losses (steps, n): slow decay, generic period-2 oscillation with a random sign per example,
    noise, and anti-phase swings for planted groups.

    ``planted`` maps a pair number k to a (2, ...) pair of row arrays; pair k swings
    in its own episodes (growing oscillation that ends in a burst), group a up when
    group b goes down. ``spikes`` adds total-loss spikes at those rows: every loss
    rises, and pair i (cycling) overshoots, group a at the row, group b one row later.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    alt = (-1.0) ** t
    growth = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * t / 60.0))
    c = rng.choice([-1.0, 1.0], size=n) * rng.lognormal(0.0, 0.5, size=n)
    d = generic * (alt * growth)[:, None] * c[None, :]
    d += noise * rng.standard_normal((steps, n))
    for k, (a, b) in (planted or {}).items():
        # episodes of growing oscillation, different for each pair
        env = np.zeros(steps)
        period = 70 + 23 * k
        for start in range(10 + 17 * k, steps, period):
            ramp = np.arange(min(25, steps - start))
            env[start : start + len(ramp)] = np.exp(ramp / 8.0) / np.exp(24 / 8.0)
        osc = amplitude * alt * (0.15 + env)
        d[:, a] += osc[:, None] * rng.uniform(0.7, 1.3, size=len(a))
        d[:, b] -= osc[:, None] * rng.uniform(0.7, 1.3, size=len(b))
    loss = 1.0 + 0.5 * np.exp(-t / 80.0)[:, None] + np.cumsum(d, axis=0) - np.cumsum(d, axis=0).mean(0)
    loss = np.maximum(loss, 0.01)
    # a spike: every loss rises (+15 % of the total) and pair i (cycling) overshoots by
    # 3x its swing amplitude, group a at the peak row and group b one row later
    owners = [planted[k] for k in sorted(planted)] if planted else []
    for i, s in enumerate(spikes):
        loss[s] += 0.15 * float(loss[s].mean())
        if owners:
            first, second = owners[i % len(owners)]
            loss[s, first] += 3 * amplitude
            if s + 1 < steps:
                loss[s + 1, second] += 3 * amplitude
    return loss.astype(np.float32)


def f1(found: np.ndarray, truth: np.ndarray) -> float:
    found, truth = set(map(int, found)), set(map(int, truth))
    tp = len(found & truth)
    return 2 * tp / (len(found) + len(truth)) if found or truth else 1.0
