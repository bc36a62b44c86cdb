"""Loss streams with known spikes for ``benchmarks/spike_rules.py``: seeded synthetic families and recorded runs.

Every stream is a :class:`Stream`: the loss per step and its spikes as inclusive step intervals
``[onset, end]``. Synthetic families (800 steps each, one seed per stream):

- ``spikes``: a decaying loss under lognormal mini-batch noise (sigma 0.03-0.12 in log), 4 planted spikes;
- ``warmup``: the same under a linear lr warm-up of 100-200 steps (the loss stays high, then falls fast);
- ``step_lr``: two step lr drops (the loss falls to 0.4-0.75 of its level within 1-5 steps: no spike);
- ``cosine``: a cosine lr schedule (the loss falls faster as the lr anneals);
- ``drift``: a slow upward drift (20-60 % over the second half) and a slow oscillation (+-10 %): no spike;
- ``divergence``: one event, an exponential rise (2-10 % per step) from a step until the stream ends.

A planted spike multiplies the loss by ``1 + (h - 1) * p(k)`` for ``k = 0 .. w - 1`` steps after its onset:
height ``h`` log-uniform in [1.3, 5], width ``w`` in 1..20, ``p`` rising over ``w // 6`` steps to 1 and then
decaying geometrically to 0.05 at ``k = w - 1`` (the decaying tail); its interval is ``[onset, onset + w - 1]``.

Recorded streams (family ``real``) are the total losses of this project's runs stored in
``benchmarks/data/spike_real_losses.npz``; their spikes are those of the offline finder
(:func:`oppsig.signals.spikes.detect_spikes` with the default ``SignalsConfig``), each the interval
``[onset_row, row + min_spike_gap - 1]`` (onset to peak, plus the finder's merge distance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FAMILIES = ("spikes", "warmup", "step_lr", "cosine", "drift", "divergence")
REAL = Path(__file__).resolve().parent / "data" / "spike_real_losses.npz"


@dataclass
class Stream:
    """One loss stream (T,) and its spikes, inclusive ``(onset, end)`` step intervals."""

    family: str
    name: str
    loss: np.ndarray
    spikes: list[tuple[int, int]] = field(default_factory=list)


def spike_profile(w: int) -> np.ndarray:
    """The shape (w,) of a planted spike: rises over ``w // 6`` steps to 1, then decays to 0.05."""
    r = w // 6
    p = np.ones(w)
    p[:r] = np.arange(1, r + 1) / (r + 1)
    if w - r > 1:
        p[r:] = 0.05 ** (np.arange(w - r) / (w - r - 1))
    return p


def plant(rng: np.random.Generator, loss: np.ndarray, n: int, lo: int, avoid=()) -> list[tuple[int, int]]:
    """Multiply ``n`` spikes into ``loss`` in place at onsets in ``[lo, T - 25)``, 30 steps apart and 20 steps
    away from each step in ``avoid``; returns their intervals."""
    T = len(loss)
    out: list[tuple[int, int]] = []
    for _ in range(200):
        if len(out) == n:
            break
        t0 = int(rng.integers(lo, T - 25))
        if any(abs(t0 - a) < 30 for a, _ in out) or any(-20 < t0 - a < 20 for a in avoid):
            continue
        h, w = float(np.exp(rng.uniform(np.log(1.3), np.log(5.0)))), int(rng.integers(1, 21))
        loss[t0 : t0 + w] *= 1 + (h - 1) * spike_profile(w)
        out.append((t0, t0 + w - 1))
    return sorted(out)


def _curve(progress: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A training loss as a function of accumulated lr (progress in steps at full lr)."""
    l0, linf, tau = rng.uniform(1.8, 2.4), rng.uniform(0.05, 0.4), rng.uniform(80, 300)
    return linf + (l0 - linf) * np.exp(-progress / tau)


def synthetic(family: str, seed: int, T: int = 800) -> Stream:
    """One seeded stream of a synthetic family (see the module docstring)."""
    rng = np.random.default_rng([FAMILIES.index(family), seed])
    t = np.arange(T, dtype=np.float64)
    sigma = rng.uniform(0.03, 0.12)
    avoid: tuple[int, ...] = ()
    if family == "warmup":
        lr = np.minimum(1.0, (t + 1) / rng.integers(100, 201))
        loss = _curve(np.cumsum(lr), rng)
    elif family == "step_lr":
        drops = tuple(sorted(int(x) for x in rng.integers([250, 500], [400, 700])))
        loss = _curve(t, rng)
        for d in drops:
            k = np.clip((t - d + 1) / rng.integers(1, 6), 0, 1)  # reaches the lower level in 1-5 steps
            loss *= np.exp(np.log(rng.uniform(0.4, 0.75)) * k)
        avoid = drops
    elif family == "cosine":
        lr = 0.5 * (1 + np.cos(np.pi * t / T))
        loss = _curve(np.cumsum(lr), rng) * (1 + rng.uniform(0.2, 0.6) * lr) / (1 + rng.uniform(0.2, 0.6))
    elif family == "drift":
        half = T // 2
        loss = _curve(np.minimum(t, half), rng)
        loss *= np.exp(np.log1p(rng.uniform(0.2, 0.6)) * np.clip((t - half) / half, 0, 1))
        loss *= 1 + 0.1 * np.sin(2 * np.pi * t / rng.uniform(150, 300) + rng.uniform(0, 2 * np.pi))
    else:
        loss = _curve(t, rng)
    if family == "divergence":
        t0 = int(rng.integers(300, 600))
        loss = loss * np.exp(rng.uniform(0.02, 0.1) * np.maximum(t - t0, 0))
        spikes = [(t0, T - 1)]
    else:
        spikes = plant(rng, loss, 4 if family == "spikes" else 3, lo=220 if family == "warmup" else 120, avoid=avoid)
    loss = loss * np.exp(sigma * rng.standard_normal(T))
    return Stream(family, f"{family}/{seed}", loss, spikes)


def real_streams(path: Path = REAL) -> list[Stream]:
    """The recorded runs' losses, labelled by the offline finder (see the module docstring)."""
    from oppsig.config import SignalsConfig
    from oppsig.signals.spikes import detect_spikes

    gap = SignalsConfig().min_spike_gap
    out = []
    with np.load(path) as z:
        for name in sorted(z.files):
            loss = z[name].astype(np.float64)
            spikes = [(s.onset_row, min(len(loss) - 1, s.row + gap - 1)) for s in detect_spikes(loss)]
            out.append(Stream("real", name, loss, spikes))
    return out


def streams(families=FAMILIES, seeds: int = 20, T: int = 800, real: bool = True) -> list[Stream]:
    """All streams: ``seeds`` per synthetic family, then the recorded ones when ``real``."""
    out = [synthetic(f, s, T) for f in families for s in range(seeds)]
    return out + (real_streams() if real else [])
