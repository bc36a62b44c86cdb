"""Result dataclasses of the opposing-signals search.

Everything :func:`oppsig.signals.find_signals` finds is held in a
:class:`SignalsResult`: the loss spikes of the run, the per-step extremes at
each spike, the recurring examples, the groups that move together, the pairs of
groups that move in anti-phase (a :class:`Pair`, with its :class:`Coherence` test
against the within-class permutation null and its :class:`AntiPhase` against
random splits), and optionally the gradient checks of :mod:`oppsig.signals.verify`.
:mod:`oppsig.signals.signals_json` stores it as versioned JSON. Example positions
(``rows``, ``members``) are column positions in the loss matrix, i.e. rows of the
data set; ``ids`` are the data set's stable ``index`` values of the same examples.

Example:
    >>> p = Pair(0, 1, corr=-0.9, strength=0.9, swing=1.0, spike_share=1.0, significant=True,
    ...          coherence=Coherence(statistic=2.0, p_value=0.001, threshold=0.01))
    >>> p.coherence.p_value <= p.coherence.threshold, p.anti_phase.weak
    (True, False)
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np

from ..errors import OppsigError

FORMAT_VERSION = 4
"""Version of the ``signals.json`` layout; bumped when a field changes meaning or is removed. Version 4 spells
non-finite floats ``"NaN"``/``"Infinity"``/``"-Infinity"`` (version 3: ``null``); version 3 nests each pair's
:class:`Coherence` and :class:`AntiPhase`; version 2 held their fields flat in the pair."""

NAN = float("nan")


class SignalsError(OppsigError, ValueError):
    """The input of the opposing-signals search is unusable (shape, values, length)."""


@dataclass(frozen=True)
class Spike:
    """A spike of the total training loss.

    Attributes:
        row: row of the peak in the loss matrix.
        step: training step of the peak.
        onset_row: row of the lowest total loss in the context window before the peak.
        onset_step: training step of ``onset_row``.
        loss: total loss at the peak.
        trend: the slow trend of the total loss at the peak (rolling median).
        height: relative rise above the trend, ``loss / trend - 1``.
        z: the rise in robust standard deviations of the log-loss residual.
        sharpness: sharpness recorded nearest to the peak, only when that
            measurement lies within ``spike_context`` rows of it (``None`` when
            not given or farther: a distant value says nothing of the spike).
        sharpness_step: the training step of that measurement (``None`` with it).
        sharpness_error, sharpness_converged: that measurement's error bound and
            converged flag, as the run recorded them (``None`` when it did not).
        top_up: rows of the ``k`` examples whose loss rose most in the step into the peak.
        top_down: rows of the ``k`` examples whose loss fell most in that step.
    """

    row: int
    step: int
    onset_row: int
    onset_step: int
    loss: float
    trend: float
    height: float
    z: float
    sharpness: float | None = None
    top_up: tuple[int, ...] = ()
    top_down: tuple[int, ...] = ()
    sharpness_step: int | None = None
    sharpness_error: float | None = None
    sharpness_converged: bool | None = None


@dataclass(frozen=True)
class Recurring:
    """An example that recurs among the per-step extremes.

    Attributes:
        row: the example's row in the data set (column of the loss matrix).
        id: its stable id (``dataset.index``).
        n_up: steps at which it was among the ``k`` largest loss increases.
        n_down: steps at which it was among the ``k`` largest loss decreases.
        energy: sum over steps of its squared loss change (oscillation energy).
        alternation: minus the lag-1 autocorrelation of its loss changes
            (near 1 when the loss goes up and down every step).
        n_spikes: spikes at whose peak it was among the extremes.
    """

    row: int
    id: int
    n_up: int
    n_down: int
    energy: float
    alternation: float
    n_spikes: int = 0


@dataclass(frozen=True)
class Extension:
    """A group found on a mini-batch run's probe subset, extended to the unprobed examples
    (:mod:`oppsig.signals.extend`): their ids, and the precision and recall the extension is expected to have
    (cross-validated on the probed examples, where membership is known). Its membership model also completes
    the group on the probe: the probed examples it names that co-movement left out (``added``), and the
    co-moving members it does not name (``dropped``)."""

    ids: tuple[int, ...]  # stable ids of the unprobed examples named members
    precision: float
    recall: float
    threshold: float  # membership probability at least
    features: tuple[str, ...]  # what told members apart: follow (batch record), class, input
    probed_members: int
    note: str = ""
    added: tuple[int, ...] = ()  # probed examples the membership model names that co-movement left out
    dropped: tuple[int, ...] = ()  # probed members found by co-movement that the membership model does not name


@dataclass(frozen=True)
class Group:
    """Examples whose losses move together.

    Attributes:
        id: group number within the result (0, 1, ...).
        members: rows of its examples in the data set, largest loss swing first.
        ids: their stable ids (``dataset.index``), same order.
        cohesion: mean pairwise correlation of the members' loss changes.
        swing: root mean square of the group-mean loss change over the run.
        class_counts: ``{class name: count}`` of its members, most common first.
        descriptors: ``{descriptor: effect size}`` (group mean minus data mean, in
            data standard deviations) of every input descriptor.
        shared: the descriptors that set it apart, in words, strongest first
            (e.g. ``"bright top border"``).
        direction_norm: norm of its mean input minus the data mean (standardised input).
        direction_ratio: that norm over the median norm of ``x_i - mean`` over the data.
        projection_ratio: median projection of its members on the direction over the
            median absolute projection of all examples (how far out along it they lie).
        direction: the mean input minus the data mean, shape of one input (e.g. (3, 32, 32)).
        explanation: one line summing up the above.
    """

    id: int
    members: tuple[int, ...]
    ids: tuple[int, ...]
    cohesion: float = float("nan")
    swing: float = float("nan")
    class_counts: dict[str, int] = field(default_factory=dict)
    descriptors: dict[str, float] = field(default_factory=dict)
    shared: tuple[str, ...] = ()
    direction_norm: float = float("nan")
    direction_ratio: float = float("nan")
    projection_ratio: float = float("nan")
    direction: np.ndarray | None = None
    explanation: str = ""
    extension: Extension | None = None  # mini-batch runs: members outside the probe subset

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def all_ids(self) -> tuple[int, ...]:
        """Its members' ids, with those found outside the probe subset (mini-batch runs): the group as its
        membership model completes it (:attr:`Extension.added` in, :attr:`Extension.dropped` out)."""
        e = self.extension
        if e is None:
            return self.ids
        out = set(e.dropped)
        return tuple(i for i in self.ids if i not in out) + e.added + e.ids


@dataclass(frozen=True)
class Coherence:
    """A pair's input-coherence test against the within-class permutation null (:mod:`oppsig.signals.pair`).

    Attributes:
        statistic: mean over the two groups of the coherence statistic divided by
            its null expectation (about 1 for groups without input structure).
        p_value: ``max(p_a, p_b)``.
        threshold: ``alpha``, the family-wise level of the test.
        p_a, p_b: each group's Monte Carlo p-value ``(1 + #null >= observed) / (n + 1)``.
        n_null: null draws behind the larger p-value (fewer than planned when the
            draws stopped early because the group could no longer reach the threshold).
        resolution: ``1 / (n + 1)`` for the planned number of draws: the smallest p-value possible.
    """

    statistic: float = NAN
    p_value: float = NAN
    threshold: float = NAN
    p_a: float = NAN
    p_b: float = NAN
    n_null: int = 0
    resolution: float = NAN


@dataclass(frozen=True)
class AntiPhase:
    """A pair's anti-phase against random examples of its sizes split by their co-movement
    (:class:`~oppsig.signals.antiphase.AntiPhaseNull`), and against the leading oscillation.

    Attributes:
        null_corr: mean correlation of random examples of the pair's two sizes split by
            their co-movement with the leading oscillation (what anti-phase alone gives).
        p: p-value of "the pair's anti-phase is what random examples of its sizes split
            by their co-movement give": ``min(1, 2 min(p_corr, p_beyond))`` over the correlation of
            the group means and their correlation beyond the leading oscillation, each
            ``(1 + #{random splits at least as anti-phase}) / (n + 1)`` (NaN where not computed:
            pairs that fail the test and are not shown).
        beyond_corr: correlation of the two group means after the leading component's time
            profile is projected out of both (an oscillation of the pair's own).
        null_beyond: the random splits' mean of that correlation.
        leading_corr: correlation of the difference of the two group means with the
            leading component's time profile.
        p_beyond: the part of ``p`` from the correlation beyond the leading oscillation alone
            (``(1 + #{random splits at least as anti-phase there}) / (n + 1)``; NaN where not computed).
        weak: ``p > anti_phase_level``: random examples of its sizes split by
            their co-movement are as anti-phase as the pair, with and without the leading
            oscillation. Shown with the pair, which is removed by the default
            ``anti_phase_gate`` and kept, flagged, without it.
    """

    null_corr: float = NAN
    p: float = NAN
    beyond_corr: float = NAN
    null_beyond: float = NAN
    leading_corr: float = NAN
    weak: bool = False
    p_beyond: float = NAN


@dataclass(frozen=True)
class Pair:
    """Two groups whose losses move in anti-phase, tested against a null of the same procedure.

    Anti-phase and a large swing are what the detection selects for, so they are
    reported as evidence, not tested. The test asks whether both groups share
    more input structure than the groups the same pipeline finds when the loss
    record is permuted among the examples of each class (see
    :mod:`oppsig.signals.pair`); the error controlled is the family-wise error
    over the groups that enter a tested pair. Everything after ``spike_share`` is
    keyword-only.

    Attributes:
        a, b: group ids (``a`` the larger swing).
        corr: correlation of the two group-mean loss-change series.
        strength: ``-corr`` times ``swing`` (orders the pairs).
        swing: geometric mean over the two groups of the group-mean loss change's
            standard deviation over the total loss's.
        spike_share: the pair's share of the absolute loss change in the spike
            windows divided by its share of the examples (1: no more than its size;
            NaN without spikes).
        significant: the pair passed every check (``failed`` is empty): ``coherence.p_value <=
            coherence.threshold`` and ``corr`` at most the configured maximum (the test), and the
            gates after it (:func:`~oppsig.signals.pair.failed_checks`): with ``anti_phase_gate``, its
            anti-phase beyond that of random examples of its sizes split the same way
            (``anti_phase.p <= anti_phase_level``), both groups' direction images at least
            ``min_direction_ratio`` (a visible difference from their classes), the difference of
            the group means not the run's leading oscillation itself
            (``|anti_phase.leading_corr| < max_leading_corr``), chosen as a partner
            (:func:`~oppsig.signals.pair.match_pairs`: the most anti-phase pair, lowest ``corr``,
            of one of its groups, or more anti-phase than a reported pair of one of its groups),
            and, where the pair was checked on the model, a negative gradient cosine.
        failed: the checks the pair failed, in order: ``"test"``, ``"anti-phase"``,
            ``"visible"``, ``"leading"``, ``"partner"`` (each group has a more anti-phase reported partner),
            ``"gradient"`` (a non-negative gradient cosine on the model); empty for a reported pair.
        coherence: its input-coherence test (:class:`Coherence`).
        anti_phase: its anti-phase against random splits (:class:`AntiPhase`).
        direction_ratio: the smaller of the two groups' direction-image norms over a
            typical example's distance from its class mean.
        view: the loss changes the pair is anti-phase in: ``"raw"``, or ``"relative"`` (of ``log L``)
            for a pair whose groups oppose only relative to their own losses (examples the model
            already fits well move little in raw loss); ``corr`` and the correlations of
            ``anti_phase`` are then of the relative changes.
        spikes: rows of the spikes where the pair carries most of the loss change.
        spike_rise_share: for each of those spikes, the pair's share of the net total-loss rise.
        tested_on: ``"inputs"``: the input-coherence test; ``"record"``: searched from the record alone, the
            replication test of :mod:`~oppsig.signals.replication` (``coherence.statistic`` is then the pair's
            correlation on the held-out rows, ``p_a``/``p_b`` NaN) and no visible gate (it needs inputs).
    """

    a: int
    b: int
    corr: float
    strength: float
    swing: float
    spike_share: float
    _: KW_ONLY
    significant: bool = False
    failed: tuple[str, ...] = ()
    coherence: Coherence = Coherence()
    anti_phase: AntiPhase = AntiPhase()
    direction_ratio: float = NAN
    view: str = "raw"
    spikes: tuple[int, ...] = ()
    spike_rise_share: tuple[float, ...] = ()
    tested_on: str = "inputs"


@dataclass(frozen=True)
class Verification:
    """Gradient checks of one pair (see :func:`oppsig.signals.verify.verify_pair`).

    Attributes:
        a, b: group ids.
        grad_cosine: cosine between the two groups' mean-loss gradients
            (negative for opposing signals).
        grad_norm_a, grad_norm_b: norms of those gradients.
        eig_cosine_a, eig_cosine_b: cosine of each gradient with the top Hessian
            eigenvector (``None`` when no eigenvector was given).
        step: training step of the parameters used (``None`` if unknown).
        sharpness: the top Hessian eigenvalue there (``None`` when not measured).
        sharpness_error: its error bound (absolute).
        eig_converged: whether that eigensolve met its tolerance (``False``: the
            eigenvalue and the eigenvector cosines are not certified).
        error: why the check failed or is incomplete (``None`` when it ran in full);
            a failed check has NaN cosines.
    """

    a: int
    b: int
    grad_cosine: float
    grad_norm_a: float
    grad_norm_b: float
    eig_cosine_a: float | None = None
    eig_cosine_b: float | None = None
    step: int | None = None
    sharpness: float | None = None
    sharpness_error: float | None = None
    eig_converged: bool | None = None
    error: str | None = None

    @classmethod
    def failed(cls, a: int, b: int, cause: str, step: int | None = None) -> "Verification":
        """A check that could not run, recorded with its cause (NaN cosines)."""
        nan = float("nan")
        return cls(a=int(a), b=int(b), grad_cosine=nan, grad_norm_a=nan, grad_norm_b=nan, step=step, error=cause)


@dataclass(frozen=True)
class SignalsResult:
    """Everything the opposing-signals search found in one run.

    Attributes:
        n_rows: recorded steps (rows of the loss matrix).
        n_examples: examples (columns).
        steps: the training step of each row, (n_rows,).
        total_loss: total loss per row, (n_rows,).
        spikes: detected spikes of the total loss, by row.
        recurring: examples recurring among the per-step extremes, strongest first.
        groups: groups of examples that move together, largest swing first.
        pairs: anti-phase pairs of groups that beat the null, strongest first
            (empty when none does).
        rejected_pairs: the strongest anti-phase pairs that did not beat the null.
        verifications: gradient checks added by :func:`oppsig.signals.verify.verify_pair`.
        config: the :class:`~oppsig.signals.SignalsConfig` used, as a dict.
        dataset: name and class names of the data set.
        top_share: mean over steps of the share of the total absolute loss change
            carried by the ``2k`` most extreme examples.
        null_corr: mean correlation of the generic-oscillation null halves (size 20 each).
        test: how the pairs were tested: ``method``, ``error`` (the error rate
            controlled), ``alpha``, ``groups_tested``, ``threshold``, ``n_null``
            (planned null draws per group) and ``resolution`` (``1 / (n_null + 1)``).
        timings: seconds spent per stage.
        format_version, oppsig_version: of the writer.
    """

    n_rows: int
    n_examples: int
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    total_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spikes: tuple[Spike, ...] = ()
    recurring: tuple[Recurring, ...] = ()
    groups: tuple[Group, ...] = ()
    pairs: tuple[Pair, ...] = ()
    rejected_pairs: tuple[Pair, ...] = ()
    verifications: tuple[Verification, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    top_share: float = float("nan")
    null_corr: float = float("nan")
    test: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    oppsig_version: str = ""

    @property
    def significant_pairs(self) -> tuple[Pair, ...]:
        """The pairs that beat the null."""
        return tuple(p for p in self.pairs if p.significant)

    def group(self, gid: int) -> Group:
        """The group with id ``gid``.

        Raises:
            KeyError: when there is no such group.
        """
        for g in self.groups:
            if g.id == gid:
                return g
        raise KeyError(f"no group {gid}; groups are {[g.id for g in self.groups]}")


def pair_name(index: int, pair: Pair) -> str:
    """The one name of a pair used everywhere (summary, report, CLI, ``signals.json``): its rank and its groups.

    Example:
        >>> pair_name(0, Pair(0, 12, corr=-0.9, strength=0.9, swing=1.0, spike_share=1.0, significant=True))
        'pair 0 (group 0 vs group 12)'
    """
    return f"pair {index} (group {pair.a} vs group {pair.b})"
