"""Settings of the analysis: the opposing-signals search (:class:`SignalsConfig`) and live spike attribution
while training (:class:`LiveConfig`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .parse import MAX_SEED, check


@dataclass(frozen=True)
class SignalsConfig:
    """Settings of :func:`oppsig.signals.find_signals`; validated when built.

    Detection:
        k: examples per step and direction among the extremes (top-k loss
            increases and top-k decreases). Default 20, as in the paper.
        min_recurrence: times an example must be among the per-step extremes to
            count as recurring (reported, and clustered into grouping seeds). Default 3.
        max_candidates: at most this many recurring extremes are clustered into seeds. Default 600.
        n_components: principal components of the standardised loss changes
            that seed the groups. Default 30.

    Spikes:
        spike_window: rows of the rolling median that gives the slow trend of the
            log total loss. Default 31.
        spike_z: rise of the log loss over its trend, in robust standard
            deviations of the residual, to count as a spike. Default 4.
        spike_min_height: smallest relative rise over the trend (0.1: 10 %). Default 0.1.
        spike_context: rows before a spike's onset that belong to its window (the
            growing oscillation; see :func:`~oppsig.signals.spikes.spike_window`). Default 12.
        min_spike_gap: peaks closer than this many rows are merged (highest kept). Default 5.

    Grouping (:mod:`~oppsig.signals.group`):
        seed_size: examples taken from each side of each component as a seed. Default 60.
        min_corr: a member's loss changes correlate with its group's mean at least this. Default 0.8.
        probe_min_corr: the same on a mini-batch run's probe subset, whose rows lie k steps apart, each
            change holding k steps of mini-batch noise (see :mod:`~oppsig.signals.extend`). Default 0.6.
        min_beta: and its regression slope on the group's mean is at least this (it
            swings with at least this fraction of the group's amplitude). Default 0.3.
        min_group_size: smaller groups are dropped. Default 5.
        neighbour_seeds: also seed a group from each example and its most correlated examples, this many in all
            (:mod:`~oppsig.signals.neighbours`: for records with too few rows for the components to see a small
            group); 0 turns it off. Default 0.
        probe_neighbour_seeds: the same on a mini-batch run's probe subset. Default 8.
        max_groups: at most this many groups (largest swing first) are kept. Default 60.

    Pairing (:mod:`~oppsig.signals.pair`):
        max_pair_corr: a pair's group-mean loss changes must correlate at most this. Default -0.3.
        alpha: family-wise error rate over the groups tested (single-step max-T). Default 0.01.
        n_null: fewest within-class permutations (raised until the p-value's resolution
            is at most half of ``alpha``). Default 999.
        n_pcs: leading principal components of the inputs added to the input
            descriptors in the coherence statistic. Default 16.
        min_direction_ratio: a reported pair's groups must also differ *visibly*
            from their classes: each group's mean input minus its classes' mean has
            at least this norm, relative to a typical example's distance from its
            class mean. With hundreds of members a difference too small to see is
            still significant (e.g. the two halves of the generic oscillation before
            any spike); this gate only removes pairs, so the error rate holds; 0 turns it off. Default 0.3.
        anti_phase_level: a reported pair's anti-phase must also not be what random
            examples of its two sizes split by their co-movement with the leading
            oscillation give (:class:`~oppsig.signals.antiphase.AntiPhaseNull`): it must be
            beyond theirs, either as it is or with the leading oscillation projected out
            of both group means (an oscillation of the pair's own); the Bonferroni
            combination of the two Monte Carlo p-values ``(1 + #{splits at least as
            anti-phase}) / (n + 1)`` at most this, with ``n`` enough draws to resolve
            half of it (399 at 0.01); a pair above it is ``weak``. Default 0.01.
        anti_phase_gate: remove the weak pairs (a gate after the test: it only removes
            pairs). False keeps them, flagged ``weak`` in the summary and the report. Default True.
        max_leading_corr: a reported pair's group-mean difference must correlate less than
            this (in absolute value) with the leading component's time profile: else it
            is the run's generic oscillation itself (any examples split by their sign
            along the top direction give it). A gate after the test; 1 turns it off
            (in effect). Default 0.9.
        max_pairs: at most this many pairs are reported. Default 20.

    Explanation:
        min_effect: smallest descriptor effect size (within-class standard
            deviations) put into words. Default 0.8.
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
    n_components: int = 30
    spike_window: int = 31
    spike_z: float = 4.0
    spike_min_height: float = 0.1
    spike_context: int = 12
    min_spike_gap: int = 5
    seed_size: int = 60
    min_corr: float = 0.8
    probe_min_corr: float = 0.6
    min_beta: float = 0.3
    min_group_size: int = 5
    neighbour_seeds: int = 0
    probe_neighbour_seeds: int = 8
    max_groups: int = 60
    max_pair_corr: float = -0.3
    alpha: float = 0.01
    n_null: int = 999
    n_pcs: int = 16
    min_direction_ratio: float = 0.3
    anti_phase_level: float = 0.01
    anti_phase_gate: bool = True
    max_leading_corr: float = 0.9
    max_pairs: int = 20
    min_effect: float = 0.8
    max_words: int = 3
    block_rows: int = 256
    max_memory_mb: float = 2048.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = type(f.default)  # every field has a default of its own type (bool, int or float)
            if want is bool:
                if not isinstance(v, bool):
                    raise ConfigError(f"signals.{f.name}: expected true or false, got {v!r} ({type(v).__name__})")
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and not isinstance(v, int)):
                raise ConfigError(f"signals.{f.name}: expected {want.__name__}, got {v!r} ({type(v).__name__})")
            if want is float and not math.isfinite(v):
                raise ConfigError(f"signals.{f.name}: expected a finite number, got {v!r}")
        _check(self.k >= 1, "k", ">= 1", self.k)
        _check(self.min_recurrence >= 1, "min_recurrence", ">= 1", self.min_recurrence)
        _check(self.max_candidates >= 2 * self.min_group_size, "max_candidates",
               f">= 2 * min_group_size = {2 * self.min_group_size}", self.max_candidates)
        _check(self.n_components >= 0, "n_components", ">= 0", self.n_components)
        _check(self.spike_window >= 3, "spike_window", ">= 3", self.spike_window)
        _check(self.spike_z > 0, "spike_z", "> 0", self.spike_z)
        _check(self.spike_min_height >= 0, "spike_min_height", ">= 0", self.spike_min_height)
        _check(self.spike_context >= 1, "spike_context", ">= 1", self.spike_context)
        _check(self.min_spike_gap >= 1, "min_spike_gap", ">= 1", self.min_spike_gap)
        _check(self.seed_size >= self.min_group_size, "seed_size", f">= min_group_size = {self.min_group_size}",
               self.seed_size)
        _check(0 < self.min_corr < 1, "min_corr", "in (0, 1)", self.min_corr)
        _check(0 < self.probe_min_corr < 1, "probe_min_corr", "in (0, 1)", self.probe_min_corr)
        _check(0 < self.min_beta <= 1, "min_beta", "in (0, 1]", self.min_beta)
        _check(self.min_group_size >= 2, "min_group_size", ">= 2", self.min_group_size)
        for f in ("neighbour_seeds", "probe_neighbour_seeds"):
            _check(getattr(self, f) == 0 or getattr(self, f) >= 2, f, "0 (off) or >= 2", getattr(self, f))
        _check(self.max_groups >= 2, "max_groups", ">= 2", self.max_groups)
        _check(-1 <= self.max_pair_corr < 0, "max_pair_corr", "in [-1, 0)", self.max_pair_corr)
        _check(0 < self.alpha < 1, "alpha", "in (0, 1)", self.alpha)
        _check(self.n_null >= 19, "n_null", ">= 19", self.n_null)
        _check(self.n_pcs >= 0, "n_pcs", ">= 0", self.n_pcs)
        _check(self.min_direction_ratio >= 0, "min_direction_ratio", ">= 0", self.min_direction_ratio)
        _check(0 < self.anti_phase_level <= 1, "anti_phase_level", "in (0, 1]", self.anti_phase_level)
        _check(0 < self.max_leading_corr <= 1, "max_leading_corr", "in (0, 1]", self.max_leading_corr)
        _check(self.max_pairs >= 1, "max_pairs", ">= 1", self.max_pairs)
        _check(self.min_effect > 0, "min_effect", "> 0", self.min_effect)
        _check(self.max_words >= 1, "max_words", ">= 1", self.max_words)
        _check(self.block_rows >= 2, "block_rows", ">= 2", self.block_rows)
        _check(self.max_memory_mb > 0, "max_memory_mb", "> 0", self.max_memory_mb)
        _check(0 <= self.seed <= MAX_SEED, "seed", "an integer from 0 to 2**63 - 1", self.seed)

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


@dataclass(frozen=True)
class LiveConfig:
    """Live spike attribution while training (see :mod:`oppsig.live`); actions are off by default."""

    enabled: bool = False
    groups: str | None = None  # signals.json of an earlier `oppsig detect` (this or another run); None: online groups
    window: int = 31  # previous steps of the detector's baseline (median + trend)
    z: float = 4.0  # rise over the baseline in robust standard deviations
    min_rise: float = 0.2  # and at least this relative rise (0.2: 20 %)
    gap: int = 5  # quiet steps after a spike ends
    context: int = 12  # steps back searched for the spike's onset
    history: int = 24  # per-example loss rows kept (> context)
    max_share_examples: int = 200  # largest online group / list of examples carrying the rise
    tensorboard: bool = False  # also write events to <run>/tb
    skip_update: bool = False  # action: undo the update of a spiking step
    rollback: bool = False  # action: go back to the last checkpoint at or before the onset, skipping the batches since
    checkpoint_every: int = 100  # callbacks: keep an in-memory rollback point every k steps
    lr_factor: float = 1.0  # action: multiply the lr by this for lr_steps steps after a spike
    lr_steps: int = 0
    downweight_group: int | None = None  # action: weight this group of `groups` by `downweight` once it spikes
    downweight: float = 1.0
    replay: bool | None = None  # keep recent states, name groups from a probe at them, replay the spike (None: on
    # for mini-batch runs, off under full-batch GD, where each replayed step is a pass over every example)
    replay_window: int = 48  # steps back the kept states reach (the spike's build-up)
    state_every: int = 4  # keep the state every k steps (replay_window / k + 1 copies in memory)
    replay_around: int = 8  # the replayed spike's height: the largest loss within this many steps of its peak
    replay_lead: int | None = 0  # replays start this many steps before the onset (None: the optimiser's momentum
    # horizon, 1 / (1 - momentum or beta1) rounded up; measured, it proves as many spikes at more cost)
    replay_drop: str = "zero"  # how a replay leaves examples out of a batch: "zero" (their loss terms, each batch
    # still divided by its full size: every other example's update as trained) or "mean" (the mean over the rest)
    probe_n: int = 1024  # examples the spike's probe measures when the record has no probe

    def validate(self, key: str) -> None:
        check(self.window >= 3, f"{key}.window", "must be >= 3", self.window)
        check(self.z > 0, f"{key}.z", "must be > 0", self.z)
        check(self.min_rise >= 0, f"{key}.min_rise", "must be >= 0", self.min_rise)
        check(self.gap >= 0, f"{key}.gap", "must be >= 0", self.gap)
        check(self.context >= 1, f"{key}.context", "must be >= 1", self.context)
        check(self.history > self.context, f"{key}.history", f"must exceed live.context ({self.context})", self.history)
        check(self.max_share_examples >= 1, f"{key}.max_share_examples", "must be >= 1", self.max_share_examples)
        check(self.checkpoint_every >= 1, f"{key}.checkpoint_every", "must be >= 1", self.checkpoint_every)
        check(0 < self.lr_factor <= 1, f"{key}.lr_factor", "must lie in (0, 1]", self.lr_factor)
        check(self.lr_steps >= 0, f"{key}.lr_steps", "must be >= 0", self.lr_steps)
        check(0 <= self.downweight <= 1, f"{key}.downweight", "must lie in [0, 1]", self.downweight)
        check(self.probe_n >= 2, f"{key}.probe_n", "must be >= 2", self.probe_n)
        check(self.replay_drop in ("zero", "mean"), f"{key}.replay_drop", "must be 'zero' or 'mean'",
              self.replay_drop)
        check(self.state_every >= 1, f"{key}.state_every", "must be >= 1", self.state_every)
        check(self.replay_around >= 0, f"{key}.replay_around", "must be >= 0", self.replay_around)
        check(self.replay_lead is None or self.replay_lead >= 0, f"{key}.replay_lead", "must be >= 0 (or null)",
              self.replay_lead)
        check(self.replay_window >= self.state_every, f"{key}.replay_window",
              f"must be >= live.state_every ({self.state_every})", self.replay_window)
        check(self.downweight_group is None or self.groups is not None, f"{key}.downweight_group",
               "needs live.groups (the signals.json that names the group)", self.downweight_group)
