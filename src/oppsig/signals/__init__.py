"""Find opposing signals: groups of training examples that pull the network in opposite directions.

Opposing signals (Rosenfeld & Risteski, arXiv 2311.04163) are small groups of
examples sharing a large-magnitude input feature that is correlated with the
target in opposite directions. Near the edge of stability their losses
oscillate in anti-phase with growing amplitude, and the total loss spikes
when the oscillation grows. This package finds them in a per-example loss
record:

- :mod:`~oppsig.signals.detect`: loss spikes, per-step top-k extremes,
  recurring examples, coherent components;
- :mod:`~oppsig.signals.group`: groups that move together (loss-change
  correlation plus input descriptors);
- :mod:`~oppsig.signals.pair`: anti-phase pairs, tested against the generic
  edge-of-stability null;
- :mod:`~oppsig.signals.explain`: class mix, shared descriptors in words,
  signal direction;
- :mod:`~oppsig.signals.verify`: gradient cosine, Hessian alignment, spike shares;
- :mod:`~oppsig.signals.result`: dataclasses and the versioned ``signals.json``.

Example:
    >>> import numpy as np
    >>> from oppsig.data import opposing_signals
    >>> ds = opposing_signals(n=200, seed=0)
    >>> L = np.random.default_rng(0).random((40, 200)).astype("float32") + 1
    >>> res = find_signals(L, np.arange(40), ds, config=SignalsConfig(k=5))
    >>> len(res.pairs)
    0
"""

from .api import find_signals, find_signals_in_run, summary_text
from .config import SignalsConfig
from .detect import MIN_ROWS, LossMatrix, detect_spikes, extremes
from .explain import Descriptors, explain_group, input_descriptors
from .result import (
    FORMAT_VERSION,
    Group,
    Pair,
    Recurring,
    SignalsError,
    SignalsResult,
    Spike,
    Verification,
    pair_name,
    read_signals_json,
    write_signals_json,
)
from .verify import group_gradient, spike_shares, verify_pair

__all__ = [
    "find_signals",
    "find_signals_in_run",
    "summary_text",
    "SignalsConfig",
    "SignalsResult",
    "Spike",
    "Recurring",
    "Group",
    "Pair",
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
    "group_gradient",
    "spike_shares",
]
