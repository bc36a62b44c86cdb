import numpy as np
import pytest

from oppsig.data import opposing_signals
from oppsig.signals import find_signals

from ._synth import eos_matrix

N, T = 1000, 200


def _planted(spikes):
    ds = opposing_signals(n=N, frequency=0.2, seed=0)
    g = ds.groups
    pairs = {0: (np.flatnonzero(g == 0), np.flatnonzero(g == 1)), 1: (np.flatnonzero(g == 2), np.flatnonzero(g == 3))}
    losses = eos_matrix(N, T, pairs, seed=1, spikes=spikes)
    return ds, losses, find_signals(losses, np.arange(T), ds, sharpness=np.full(T, 19.5))


@pytest.fixture(scope="session")
def planted():
    """(data set, losses, result): two planted anti-phase pairs of 20-example groups in 1000 examples."""
    return _planted(())


@pytest.fixture(scope="session")
def planted_spikes():
    """The same with total-loss spikes at rows 90 (driven by pair 0) and 150 (pair 1)."""
    return _planted((90, 150))
