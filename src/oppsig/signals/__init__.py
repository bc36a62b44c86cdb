"""Find opposing signals: groups of training examples that pull the network in opposite directions.

Opposing signals (Rosenfeld & Risteski, arXiv 2311.04163) are small groups of
examples sharing a large-magnitude input feature that is correlated with the
target in opposite directions. Near the edge of stability their losses
oscillate in anti-phase with growing amplitude, and the total loss spikes
when the oscillation grows. This package finds them in a per-example loss
record:

- :mod:`~oppsig.signals.pipeline`: :func:`find_signals`, one function per stage
  (:mod:`~oppsig.signals.pairing` the pair stage), :mod:`~oppsig.signals.run` the search
  on a recorded run, :mod:`~oppsig.signals.text` the summaries in words;
- :mod:`~oppsig.signals.matrix`: the loss matrix read in row blocks (memory, stream, Dask);
- :mod:`~oppsig.signals.spikes`: loss spikes (one spike window, one spike share);
- :mod:`~oppsig.signals.detect`: per-step top-k extremes, recurring examples, leading components;
- :mod:`~oppsig.signals.group`: groups of examples that move together, found by
  coherence (no member needs to be extreme);
- :mod:`~oppsig.signals.pair`: anti-phase pairs, each group's input coherence
  tested against the same pipeline on the loss record permuted within classes
  (family-wise error rate), then gates that only remove pairs (anti-phase beyond
  random splits (:mod:`~oppsig.signals.antiphase`), a visible difference, not the
  leading oscillation itself);
- :mod:`~oppsig.signals.replication`: the pair test of a run searched from its record alone (no inputs):
  replication in time on held-out loss changes;
- :mod:`~oppsig.signals.explain`: class mix, descriptors (brightness, colour of
  background and object) against the group's own classes, direction image;
- :mod:`~oppsig.signals.verify`: gradient cosine, Hessian alignment, spike shares;
- :mod:`~oppsig.signals.result`: dataclasses; :mod:`~oppsig.signals.signals_json` the versioned
  ``signals.json``; :mod:`~oppsig.signals.tuning` the fixed tuning constants.

Example:
    >>> import numpy as np
    >>> from oppsig.data import opposing_signals
    >>> ds = opposing_signals(n=200, seed=0)
    >>> L = np.random.default_rng(0).random((40, 200)).astype("float32") + 1
    >>> res = find_signals(L, np.arange(40), ds, config=SignalsConfig(k=5))
    >>> len(res.pairs)
    0
"""

from ..config import SignalsConfig
from .detect import extremes
from .descriptors import Descriptors, input_descriptors
from .explain import explain_group
from .matrix import LossMatrix
from .pairing import pair_stage
from .pipeline import detect_stage, explain_stage, find_signals, group_stage
from .result import (
    FORMAT_VERSION,
    AntiPhase,
    Coherence,
    Group,
    Pair,
    Recurring,
    SignalsError,
    SignalsResult,
    Spike,
    Verification,
    pair_name,
)
from .run import find_signals_in_run
from .signals_json import read_signals_json, write_signals_json
from .spikes import detect_spikes, rise_shares, spike_window
from .text import summary_text
from .tuning import MIN_ROWS
from .verify import group_gradient, spike_shares, verify_pair, with_verifications

__all__ = [
    "find_signals",
    "find_signals_in_run",
    "summary_text",
    "detect_stage",
    "group_stage",
    "pair_stage",
    "explain_stage",
    "spike_window",
    "rise_shares",
    "SignalsConfig",
    "SignalsResult",
    "Spike",
    "Recurring",
    "Group",
    "Pair",
    "Coherence",
    "AntiPhase",
    "Verification",
    "SignalsError",
    "FORMAT_VERSION",
    "write_signals_json",
    "pair_name",
    "read_signals_json",
    "detect_spikes",
    "extremes",
    "LossMatrix",
    "MIN_ROWS",
    "input_descriptors",
    "explain_group",
    "Descriptors",
    "verify_pair",
    "with_verifications",
    "group_gradient",
    "spike_shares",
]
