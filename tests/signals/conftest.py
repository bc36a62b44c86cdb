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


def record_matrix(path, ds, losses, sharpness_every: int = 0):
    """Write a (T, N) loss matrix of ``ds``'s examples as a run (one recorded step per row) and open it."""
    from oppsig import store

    with store.Recorder(path, index=ds.index.numpy(), chunk_steps=16) as rec:
        for step, row in enumerate(losses):
            rec.log(step, ds.index.numpy(), row)
            if sharpness_every and step % sharpness_every == 0:
                rec.log_metrics(step, loss=float(row.mean()), sharpness=19.5)
    return store.open_run(path)
