"""Data model of the two-layer linear toy: a rare large feature that two groups pull in opposite directions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...config import check
from ...errors import ConfigError

__all__ = ["SIGNAL", "OPPOSING", "PHASES", "OpposingDataConfig", "ToyData", "make_data"]

SIGNAL = 0  #: input coordinate of the genuine signal
OPPOSING = 1  #: input coordinate of the opposing feature
PHASES = ("smooth", "eos", "diverges")  #: phase labels, in the order of their codes 0, 1, 2

_DT = torch.float64






def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(float(x))


@dataclass(frozen=True)
class OpposingDataConfig:
    """Parameters of the opposing-signals data model (validated when built).

    Attributes:
        n: number of examples (>= 4; half have ``y = +1``).
        d: input dimension (>= 2): coordinate 0 the signal, 1 the opposing feature, the rest noise.
        signal: magnitude ``beta > 0`` of the genuine signal feature.
        signal_noise: relative noise ``sigma_s >= 0`` on the signal feature (what the signal cannot explain).
        alpha: magnitude ``>= 0`` of the opposing feature (0 removes it).
        p: fraction of examples carrying the opposing feature, in ``[0, 1]``.
        imbalance: ``(n_A - n_B) / (n_A + n_B)`` in ``[-1, 1]``.
        noise: standard deviation ``sigma_n >= 0`` of the ``d - 2`` noise coordinates.
        seed: seed of every random draw (the draws do not depend on ``alpha``).

    Raises:
        ConfigError: for a field out of range, naming it and the valid range.

    Example:
        >>> OpposingDataConfig(alpha=2.0).alpha
        2.0
        >>> OpposingDataConfig(p=1.5)
        Traceback (most recent call last):
        ...
        oppsig.errors.ConfigError: config key 'p' must be a fraction in [0, 1] (got 1.5)
    """

    n: int = 256
    d: int = 6
    signal: float = 0.05
    signal_noise: float = 1.0
    alpha: float = 4.0
    p: float = 0.1
    imbalance: float = 0.4
    noise: float = 0.1
    seed: int = 0

    def __post_init__(self):
        check(_is_int(self.n) and self.n >= 4, "n", "must be an integer number of examples >= 4", self.n)
        check(_is_int(self.d) and self.d >= 2, "d",
              "must be an integer dimension >= 2 (signal and opposing coordinates, then noise)", self.d)
        check(_is_num(self.signal) and self.signal > 0, "signal",
              "must be the magnitude of the genuine feature, a number > 0 (e.g. 0.1)", self.signal)
        check(_is_num(self.signal_noise) and self.signal_noise >= 0, "signal_noise", "must be a number >= 0",
               self.signal_noise)
        check(_is_num(self.alpha) and self.alpha >= 0, "alpha",
              "must be the opposing feature's magnitude, a number >= 0 (0 removes it)", self.alpha)
        check(_is_num(self.p) and 0 <= self.p <= 1, "p", "must be a fraction in [0, 1]", self.p)
        check(_is_num(self.imbalance) and -1 <= self.imbalance <= 1, "imbalance",
              "must be (n_A - n_B) / (n_A + n_B), a number in [-1, 1]", self.imbalance)
        check(_is_num(self.noise) and self.noise >= 0, "noise", "must be a standard deviation >= 0", self.noise)
        check(_is_int(self.seed) and self.seed >= 0, "seed", "must be an integer >= 0", self.seed)
        n_a, n_b = self.group_sizes
        n_pos = self.n // 2
        check(n_a <= n_pos and n_b <= self.n - n_pos, "p",
              f"groups of {n_a} and {n_b} examples do not fit in {n_pos} positives and {self.n - n_pos} "
              "negatives; pass a smaller p or imbalance",
              self.p)

    @property
    def group_sizes(self) -> tuple[int, int]:
        """``(n_A, n_B)``: examples with the opposing feature and ``y = +1``, and with ``y = -1``."""
        n_opp = int(round(self.p * self.n))
        n_a = int(round(n_opp * (1 + self.imbalance) / 2))
        return n_a, n_opp - n_a


@dataclass(frozen=True)
class ToyData:
    """A sample of the data model.

    Attributes:
        X: ``(n, d)`` float64 inputs.
        y: ``(n,)`` float64 targets in {+1, -1}.
        groups: ``(n,)`` int64: 0 for group A, 1 for group B, -1 for examples without the feature.
        config: the :class:`OpposingDataConfig` it was drawn from.
    """

    X: torch.Tensor
    y: torch.Tensor
    groups: torch.Tensor
    config: OpposingDataConfig

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        return int(self.X.shape[1])


def make_data(config: OpposingDataConfig | None = None, **overrides) -> ToyData:
    """Draw ``X (n, d)``, ``y (n,)`` and group labels from the data model (seeded, float64).

    Args:
        config: the parameters (default :class:`OpposingDataConfig`).
        **overrides: fields replacing those of ``config`` (e.g. ``alpha=0.0``).

    Returns:
        a :class:`ToyData`.

    Raises:
        ConfigError: for invalid parameters or an unknown field name.

    Example:
        >>> data = make_data(n=100, p=0.2, imbalance=0.5)
        >>> data.X.shape, int((data.groups == 0).sum()), int((data.groups == 1).sum())
        (torch.Size([100, 6]), 15, 5)
    """
    cfg = config or OpposingDataConfig()
    if overrides:
        unknown = sorted(set(overrides) - set(OpposingDataConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown data-model field {unknown[0]!r}; valid: "
                              f"{', '.join(OpposingDataConfig.__dataclass_fields__)}")
        cfg = OpposingDataConfig(**{**cfg.__dict__, **overrides})
    n, d = cfg.n, cfg.d
    gen = torch.Generator().manual_seed(cfg.seed)
    n_pos = n // 2
    y = -torch.ones(n, dtype=_DT)
    order = torch.randperm(n, generator=gen)
    pos, neg = order[:n_pos], order[n_pos:]
    y[pos] = 1.0
    n_a, n_b = cfg.group_sizes
    grp_a = pos[torch.randperm(pos.numel(), generator=gen)[:n_a]]
    grp_b = neg[torch.randperm(neg.numel(), generator=gen)[:n_b]]
    xi = torch.randn(n, generator=gen, dtype=_DT)
    z = torch.randn(n, d - 2, generator=gen, dtype=_DT)
    X = torch.zeros(n, d, dtype=_DT)
    X[:, SIGNAL] = cfg.signal * (y + cfg.signal_noise * xi)
    groups = torch.full((n,), -1, dtype=torch.int64)
    groups[grp_a] = 0
    groups[grp_b] = 1
    X[:, OPPOSING] = cfg.alpha * (groups >= 0).to(_DT)
    X[:, 2:] = cfg.noise * z
    return ToyData(X, y, groups, cfg)
