"""Result dataclasses of the opposing-signals search and their ``signals.json`` file.

Everything :func:`oppsig.signals.find_signals` finds is held in a
:class:`SignalsResult`: the loss spikes of the run, the per-step extremes at
each spike, the recurring examples, the groups that move together, the pairs of
groups that move in anti-phase (with their significance against the generic
edge-of-stability null), and optionally the gradient checks of
:mod:`oppsig.signals.verify`.

``write_signals_json(result, path)`` / ``read_signals_json(path)`` store and
load it as versioned JSON (``format_version`` and the ``oppsig_version`` that
wrote it). Example positions (``rows``, ``members``) are column positions in
the loss matrix, i.e. rows of the data set; ``ids`` are the data set's stable
``index`` values of the same examples.

Example:
    >>> r = SignalsResult(n_rows=10, n_examples=4)
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "signals.json")
    >>> _ = write_signals_json(r, p)
    >>> read_signals_json(p).n_examples
    4
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, OppsigError
from ..store.format import atomic_write

FORMAT_VERSION = 2
"""Version of the ``signals.json`` layout; bumped when a field changes meaning or is removed."""


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

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class Pair:
    """Two groups whose losses move in anti-phase, tested against a null of the same procedure.

    Anti-phase and a large swing are what the detection selects for, so they are
    reported as evidence, not tested. The test asks whether both groups share
    more input structure than the groups the same pipeline finds when the loss
    record is permuted among the examples of each class (see
    :mod:`oppsig.signals.pair`); the error controlled is the family-wise error
    over the groups that enter a tested pair.

    Attributes:
        a, b: group ids (``a`` the larger swing).
        corr: correlation of the two group-mean loss-change series.
        strength: ``-corr`` times ``swing`` (orders the pairs).
        swing: geometric mean over the two groups of the group-mean loss change's
            standard deviation over the total loss's.
        spike_share: the pair's share of the absolute loss change in the spike
            windows divided by its share of the examples (1: no more than its size;
            NaN without spikes).
        coherence: mean over the two groups of the coherence statistic divided by
            its null expectation (about 1 for groups without input structure).
        null_corr: mean correlation of random examples of the pair's two sizes split by
            their co-movement with the leading oscillation (what anti-phase alone gives;
            :class:`~oppsig.signals.pair.AntiPhaseNull`).
        p_value: ``max(p_a, p_b)``.
        threshold: ``alpha``, the family-wise level of the test.
        significant: the pair passed every check (``failed`` is empty): ``p_value <= threshold``
            and ``corr`` at most the configured maximum (the test), and the gates after it
            (:func:`~oppsig.signals.pair.failed_checks`): with ``anti_phase_gate``, its
            anti-phase beyond that of random examples of its sizes split the same way
            (``anti_phase_p <= anti_phase_level``), both groups' direction images at least ``min_direction_ratio`` (a visible
            difference from their classes), the difference of the group means not the run's
            leading oscillation itself (``|leading_corr| < max_leading_corr``), no stronger
            significant pair holding either group, and, where the pair was checked on the
            model, a negative gradient cosine.
        p_a, p_b: each group's Monte Carlo p-value ``(1 + #null >= observed) / (n + 1)``.
        n_null: null draws behind the larger p-value (fewer than planned when the
            draws stopped early because the group could no longer reach the threshold).
        resolution: ``1 / (n + 1)`` for the planned number of draws: the smallest p-value possible.
        spikes: rows of the spikes where the pair carries most of the loss change.
        spike_rise_share: for each of those spikes, the pair's share of the net total-loss rise.
        anti_phase_p: p-value of "the pair's anti-phase is what random examples of its sizes split
            by their co-movement give": ``min(1, 2 min(p_corr, p_beyond))`` over the correlation of
            the group means and their correlation beyond the leading oscillation, each
            ``(1 + #{random splits at least as anti-phase}) / (n + 1)``
            (:class:`~oppsig.signals.pair.AntiPhaseNull`; NaN where not computed: pairs that
            fail the test and are not shown).
        beyond_corr: correlation of the two group means after the leading component's time
            profile is projected out of both (an oscillation of the pair's own).
        null_beyond: the random splits' mean of that correlation.
        weak: ``anti_phase_p > anti_phase_level``: random examples of its sizes split by
            their co-movement are as anti-phase as the pair, with and without the leading
            oscillation. Shown with the pair, which is removed by the default
            ``anti_phase_gate`` and kept, flagged, without it.
        leading_corr: correlation of the difference of the two group means with the
            leading component's time profile.
        direction_ratio: the smaller of the two groups' direction-image norms over a
            typical example's distance from its class mean.
        view: the loss changes the pair is anti-phase in: ``"raw"``, or ``"relative"`` (of ``log L``)
            for a pair whose groups oppose only relative to their own losses (examples the model
            already fits well move little in raw loss); ``corr``, ``null_corr``, ``beyond_corr``
            and ``leading_corr`` are then of the relative changes.
        failed: the checks the pair failed, in order: ``"test"``, ``"anti-phase"``,
            ``"visible"``, ``"leading"``, ``"partner"`` (a stronger pair holds a group),
            ``"gradient"`` (a non-negative gradient cosine on the model); empty for a reported pair.
    """

    a: int
    b: int
    corr: float
    strength: float
    swing: float
    spike_share: float
    coherence: float
    null_corr: float
    p_value: float
    threshold: float
    significant: bool
    p_a: float = float("nan")
    p_b: float = float("nan")
    n_null: int = 0
    resolution: float = float("nan")
    spikes: tuple[int, ...] = ()
    spike_rise_share: tuple[float, ...] = ()
    anti_phase_p: float = float("nan")
    beyond_corr: float = float("nan")
    null_beyond: float = float("nan")
    leading_corr: float = float("nan")
    direction_ratio: float = float("nan")
    failed: tuple[str, ...] = ()
    weak: bool = False
    view: str = "raw"


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
        >>> pair_name(0, Pair(0, 12, -0.9, 1, 1, 1, 1, -0.5, 1, 1, 1, 1e-6, 1e-3, True))
        'pair 0 (group 0 vs group 12)'
    """
    return f"pair {index} (group {pair.a} vs group {pair.b})"


# ----------------------------------------------------------------------------- JSON


def _version() -> str:
    from ..version import __version__

    return __version__


def _clean(obj: Any) -> Any:
    """Turn numpy values and non-finite floats into plain JSON values (NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def result_to_dict(result: SignalsResult) -> dict[str, Any]:
    """The JSON-ready dict of ``result`` (what :func:`write_signals_json` writes)."""
    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "oppsig_version": result.oppsig_version or _version(),
    }
    for f in dataclasses.fields(result):
        if f.name in ("format_version", "oppsig_version"):
            continue
        v = getattr(result, f.name)
        if f.name == "groups":
            v = [_group_dict(g) for g in v]
        elif f.name == "pairs":
            v = [{"name": pair_name(i, p), **dataclasses.asdict(p)} for i, p in enumerate(v)]
        elif isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0]):
            v = [dataclasses.asdict(x) for x in v]
        out[f.name] = v
    return _clean(out)


def _group_dict(g: Group) -> dict[str, Any]:
    d = {f.name: getattr(g, f.name) for f in dataclasses.fields(g)}
    if g.direction is not None:
        d["direction_shape"] = list(g.direction.shape)
        d["direction"] = np.round(np.asarray(g.direction, dtype=np.float64).ravel(), 5)
    return d


def write_signals_json(result: SignalsResult, path: str | os.PathLike) -> Path:
    """Write ``result`` as ``signals.json`` (atomically: a temporary file, then a rename).

    Returns:
        The path written.

    Raises:
        OSError: when the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(result_to_dict(result), indent=1, allow_nan=False) + "\n")
    return path


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _build(cls, d: dict[str, Any]):
    """``cls(**d)`` keeping only known fields, with tuples for sequences and NaN for nulls."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if isinstance(v, list):
            v = tuple(v)
        if v is None and f.type in ("float",):
            v = float("nan")
        kw[f.name] = v
    return cls(**kw)


def result_from_dict(d: dict[str, Any]) -> SignalsResult:
    """Rebuild a :class:`SignalsResult` from :func:`result_to_dict`'s output.

    Raises:
        DataFormatError: for a missing or newer format version, or missing fields.
    """
    ver = d.get("format_version")
    if not isinstance(ver, int):
        raise DataFormatError(f"signals.json has no integer format_version (got {ver!r}); is this a signals file?")
    if ver > FORMAT_VERSION:
        raise DataFormatError(
            f"signals.json has format_version {ver}, newer than this oppsig reads ({FORMAT_VERSION}); upgrade oppsig"
        )
    try:
        groups = []
        for g in d.get("groups", []):
            g = dict(g)
            shape = g.pop("direction_shape", None)
            if g.get("direction") is not None:
                arr = np.asarray(g["direction"], dtype=np.float32)
                g["direction"] = arr.reshape(shape) if shape else arr
            for k in ("cohesion", "swing", "direction_norm", "direction_ratio", "projection_ratio"):
                g[k] = _nan(g.get(k))
            groups.append(_build(Group, g))
        def _pairs(key):
            out = []
            for p in d.get(key, []):
                p = {k: (_nan(v) if v is None else v) for k, v in p.items()}
                p["spike_rise_share"] = [_nan(v) for v in p.get("spike_rise_share", [])]
                out.append(_build(Pair, p))
            return tuple(out)

        pairs, rejected = _pairs("pairs"), _pairs("rejected_pairs")
        spikes = [_build(Spike, s) for s in d.get("spikes", [])]
        recurring = [_build(Recurring, r) for r in d.get("recurring", [])]
        verifs = [_build(Verification, v) for v in d.get("verifications", [])]
        tl = d.get("total_loss", [])
        return SignalsResult(
            n_rows=int(d["n_rows"]),
            n_examples=int(d["n_examples"]),
            steps=np.asarray(d.get("steps", []), dtype=np.int64),
            total_loss=np.asarray([_nan(v) for v in tl], dtype=np.float64),
            spikes=tuple(spikes),
            recurring=tuple(recurring),
            groups=tuple(groups),
            pairs=pairs,
            rejected_pairs=rejected,
            verifications=tuple(verifs),
            config=dict(d.get("config", {})),
            dataset=dict(d.get("dataset", {})),
            top_share=_nan(d.get("top_share")),
            null_corr=_nan(d.get("null_corr")),
            test=dict(d.get("test", {})),
            timings=dict(d.get("timings", {})),
            format_version=ver,
            oppsig_version=str(d.get("oppsig_version", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataFormatError(f"signals.json is malformed: {e}") from None


def read_signals_json(path: str | os.PathLike) -> SignalsResult:
    """Read a ``signals.json`` written by :func:`write_signals_json`.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        DataFormatError: when it is not valid JSON or not a signals file this version reads.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise DataFormatError(f"{path} holds a JSON {type(d).__name__}, expected an object")
    return result_from_dict(d)
