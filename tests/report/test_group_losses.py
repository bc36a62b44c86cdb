"""``plot_group_losses`` (the README's anti-phase figure) draws the groups' mean losses around the spike."""

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest

from oppsig.report import plot_group_losses
from oppsig.report.summary import load_signals
from oppsig.store import open_run
from tests.report.test_report import add_fake_signals


@pytest.fixture
def run_and_signals(run_copy):
    add_fake_signals(run_copy)  # pair of group 0 (rows 0-9) and group 1 (rows 10-19); a spike at step 6
    yield open_run(run_copy), load_signals(run_copy)
    plt.close("all")


def drawn(ax):
    return [(np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata(), dtype=np.float64)) for ln in ax.get_lines()]


def test_plotted_data_are_the_groups_mean_losses(run_and_signals):
    run, sig = run_and_signals
    L = np.asarray(run.losses, dtype=np.float64)
    fig = plot_group_losses(run, sig)  # the pair's spike at step 6; window [6 - 30, 6 + 10] -> steps 0..16
    top, bottom = fig.axes[:2]
    (x, total), (spike_x, _), (peak_x, peak_y) = drawn(top)  # the total loss, the spike, the largest loss in view
    assert np.array_equal(x, np.arange(17)) and np.allclose(total, L[:17].mean(1))
    assert set(spike_x.tolist()) == {6}
    assert peak_x.tolist() == [int(np.argmax(total))] and np.allclose(peak_y, total.max())
    (xa, a), (xb, b) = drawn(bottom)
    assert np.array_equal(xa, x) and np.array_equal(xb, x)
    assert np.allclose(a, L[:17, 0:10].mean(1)) and np.allclose(b, L[:17, 10:20].mean(1))
    assert not np.allclose(a, b)


def test_window_pair_and_no_pair(run_and_signals):
    run, sig = run_and_signals
    L = np.asarray(run.losses, dtype=np.float64)
    fig = plot_group_losses(run, sig, before=2, after=3)  # steps 4..9
    (x, a), (_, b) = drawn(fig.axes[1])
    assert x.tolist() == [4, 5, 6, 7, 8, 9]
    assert np.allclose(a, L[4:10, :10].mean(1)) and np.allclose(b, L[4:10, 10:20].mean(1))
    # a pair given explicitly, with the groups swapped: drawn in that order
    swapped = dataclasses.replace(sig.pairs[0], a=1, b=0)
    (_, a), (_, b) = drawn(plot_group_losses(run, sig, pair=swapped, before=2, after=3).axes[1])
    assert np.allclose(a, L[4:10, 10:20].mean(1)) and np.allclose(b, L[4:10, :10].mean(1))
    # no pair: the whole run's total loss, no group curve
    fig = plot_group_losses(run, dataclasses.replace(sig, pairs=(), spikes=()))
    (x, total), _peak = drawn(fig.axes[0])
    assert np.array_equal(x, run.steps) and np.allclose(total, L.mean(1))
    assert drawn(fig.axes[1]) == []


def test_a_pair_found_on_relative_changes_is_drawn_as_mean_log_loss(run_and_signals):
    run, sig = run_and_signals
    L = np.asarray(run.losses, dtype=np.float64)
    rel = dataclasses.replace(sig.pairs[0], view="relative")
    ax = plot_group_losses(run, sig, pair=rel, before=2, after=3).axes[1]
    (_, a), (_, b) = drawn(ax)
    floor = 1e-4 * np.median(L[0])
    assert np.allclose(a, np.log(L[4:10, :10] + floor).mean(1))
    assert np.allclose(b, np.log(L[4:10, 10:20] + floor).mean(1))
    assert ax.get_ylabel() == "group mean log loss"
