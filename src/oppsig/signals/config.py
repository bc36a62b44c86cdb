"""Settings of the opposing-signals search (:class:`SignalsConfig`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class SignalsConfig:
    """Settings of :func:`oppsig.signals.find_signals`; validated when built.

    Detection:
        k: examples per step and direction among the extremes (top-k loss
            increases and top-k decreases). Default 20, as in the paper.
        min_recurrence: times an example must be among the per-step extremes to
            count as recurring. Default 3.
        max_candidates: at most this many examples enter grouping. Default 600.
        n_components: principal components of the standardised loss changes
            searched for coherent groups (examples that swing together without
            being extreme one by one). Default 12.
        component_z: robust z-score of a loading that makes an example a member
            of a component's tail. Default 6.
        max_component_members: at most this many examples per component tail. Default 60.

    Spikes:
        spike_window: rows of the rolling median that gives the slow trend of the
            log total loss. Default 31.
        spike_z: rise of the log loss over its trend, in robust standard
            deviations of the residual, to count as a spike. Default 4.
        spike_min_height: smallest relative rise over the trend (0.1: 10 %). Default 0.1.
        spike_context: rows before a peak searched for its onset and counted in
            its window (the growing oscillation). Default 12.
        min_spike_gap: peaks closer than this many rows are merged (highest kept). Default 5.

    Grouping:
        cluster_distance: average-linkage cut on ``1 - corr`` (plus the feature
            and class terms below): members of a group correlate at about
            ``1 - cluster_distance`` or more. The number of groups follows from it. Default 0.6.
        feature_weight: weight of the input-descriptor distance (the second
            view). Default 0.15.
        class_weight: distance added between examples of different classes. Default 0.1.
        min_beta: after clustering, every example joins the group whose mean loss
            change it correlates with best (at least ``1 - cluster_distance``) if
            its regression slope on that mean is at least this (it swings with at
            least this fraction of the group's amplitude). Default 0.5.
        min_swing_ratio: only outliers join groups: examples whose loss-change
            standard deviation is at least this many times the median over all
            examples. Default 1.5.
        min_group_size: smaller clusters are dropped. Default 5.
        max_groups: at most this many groups (largest swing first) are kept. Default 40.

    Pairing:
        max_pair_corr: a pair's group-mean loss changes must correlate at most this. Default -0.3.
        alpha: family-wise significance level (Bonferroni over the pairs tested). Default 0.01.
        n_null: draws of the generic-oscillation null per pair size. Default 200.
        null_pool: examples kept for null draws (all if fewer). Default 3000.
        max_pairs: at most this many pairs are reported. Default 20.

    Explanation:
        min_effect: smallest descriptor effect size (data standard deviations)
            put into words. Default 0.8.
        max_words: descriptors named per group at most. Default 3.

    Reading:
        block_rows: rows read at a time from a lazy loss matrix. Default 256.
        max_memory_mb: loss matrices up to this size (float32) are held in memory;
            larger ones are streamed in row blocks. Default 2048.
        seed: seed of every random draw. Default 0.

    Raises:
        ConfigError: naming the field, the expected range and the value given.

    Example:
        >>> SignalsConfig(k=10).k
        10
    """

    k: int = 20
    min_recurrence: int = 3
    max_candidates: int = 600
    n_components: int = 12
    component_z: float = 6.0
    max_component_members: int = 60
    spike_window: int = 31
    spike_z: float = 4.0
    spike_min_height: float = 0.1
    spike_context: int = 12
    min_spike_gap: int = 5
    cluster_distance: float = 0.6
    feature_weight: float = 0.15
    class_weight: float = 0.1
    min_beta: float = 0.5
    min_swing_ratio: float = 1.5
    min_group_size: int = 5
    max_groups: int = 40
    max_pair_corr: float = -0.3
    alpha: float = 0.01
    n_null: int = 200
    null_pool: int = 3000
    max_pairs: int = 20
    min_effect: float = 0.8
    max_words: int = 3
    block_rows: int = 256
    max_memory_mb: float = 2048.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = int if f.type == "int" else float
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and not isinstance(v, int)):
                raise ConfigError(f"signals.{f.name}: expected {f.type}, got {v!r} ({type(v).__name__})")
            if want is float and not math.isfinite(v):
                raise ConfigError(f"signals.{f.name}: expected a finite number, got {v!r}")
        _check(self.k >= 1, "k", ">= 1", self.k)
        _check(self.min_recurrence >= 1, "min_recurrence", ">= 1", self.min_recurrence)
        _check(self.max_candidates >= 2 * self.min_group_size, "max_candidates",
               f">= 2 * min_group_size = {2 * self.min_group_size}", self.max_candidates)
        _check(self.n_components >= 0, "n_components", ">= 0", self.n_components)
        _check(self.component_z > 0, "component_z", "> 0", self.component_z)
        _check(self.max_component_members >= 1, "max_component_members", ">= 1", self.max_component_members)
        _check(self.spike_window >= 3, "spike_window", ">= 3", self.spike_window)
        _check(self.spike_z > 0, "spike_z", "> 0", self.spike_z)
        _check(self.spike_min_height >= 0, "spike_min_height", ">= 0", self.spike_min_height)
        _check(self.spike_context >= 1, "spike_context", ">= 1", self.spike_context)
        _check(self.min_spike_gap >= 1, "min_spike_gap", ">= 1", self.min_spike_gap)
        _check(0 < self.cluster_distance < 2, "cluster_distance", "in (0, 2)", self.cluster_distance)
        _check(self.feature_weight >= 0, "feature_weight", ">= 0", self.feature_weight)
        _check(self.class_weight >= 0, "class_weight", ">= 0", self.class_weight)
        _check(0 < self.min_beta <= 1, "min_beta", "in (0, 1]", self.min_beta)
        _check(self.min_swing_ratio >= 0, "min_swing_ratio", ">= 0", self.min_swing_ratio)
        _check(self.min_group_size >= 2, "min_group_size", ">= 2", self.min_group_size)
        _check(self.max_groups >= 2, "max_groups", ">= 2", self.max_groups)
        _check(-1 <= self.max_pair_corr < 0, "max_pair_corr", "in [-1, 0)", self.max_pair_corr)
        _check(0 < self.alpha < 1, "alpha", "in (0, 1)", self.alpha)
        _check(self.n_null >= 20, "n_null", ">= 20", self.n_null)
        _check(self.null_pool >= 4 * self.min_group_size, "null_pool",
               f">= 4 * min_group_size = {4 * self.min_group_size}", self.null_pool)
        _check(self.max_pairs >= 1, "max_pairs", ">= 1", self.max_pairs)
        _check(self.min_effect > 0, "min_effect", "> 0", self.min_effect)
        _check(self.max_words >= 1, "max_words", ">= 1", self.max_words)
        _check(self.block_rows >= 2, "block_rows", ">= 2", self.block_rows)
        _check(self.max_memory_mb > 0, "max_memory_mb", "> 0", self.max_memory_mb)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (as stored in ``signals.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SignalsConfig":
        """Build from a dict, rejecting unknown keys.

        Raises:
            ConfigError: for an unknown key or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"signals: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"signals.{name}: expected {expected}, got {value!r}")
