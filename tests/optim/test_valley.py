import numpy as np
import pytest
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from oppsig.optim.sam import SAM
from oppsig.toy.valley import Valley, valley_figure, valley_summary, valley_trajectories


@pytest.fixture(scope="module")
def runs():
    # a = 100, lr = 0.019: lr * a = 1.9, GD is stable but overshoots the floor every step
    return valley_trajectories(optimizers=("gd", "adam", "splitsgd"), lr=0.019, steps=80)


def test_gd_bounces_across_while_adam_does_not(runs):
    s = valley_summary(runs)
    gd, adam = s["gd"], s["adam"]
    assert gd["cross_reversals"] >= 70  # the premise: GD oscillates at this lr
    assert gd["cross_oscillation"] > 5.0
    assert adam["cross_oscillation"] < 0.1 * gd["cross_oscillation"]
    assert adam["cross_reversals"] <= 5
    assert adam["along_progress"] > 2 * gd["along_progress"]  # and it runs along the floor
    assert s["splitsgd"]["cross_oscillation"] < 0.1 * gd["cross_oscillation"]
    assert not any(v["diverged"] for v in s.values())


def test_below_the_oscillation_threshold_gd_does_not_bounce():
    s = valley_summary(valley_trajectories(optimizers=("gd",), lr=0.009, steps=40))  # lr * a = 0.9
    assert s["gd"]["cross_oscillation"] == pytest.approx(0.0, abs=1e-12)
    assert s["gd"]["cross_reversals"] == 0


def test_summary_numbers_on_a_hand_trajectory():
    traj = np.array([[2.0, 1.0], [1.5, -0.5], [1.0, 0.25], [0.5, 0.0]])
    s = valley_summary({"t": traj}, Valley(a=100.0, b=0.1))["t"]
    assert s["cross_oscillation"] == pytest.approx((1.5 + 0.75 + 0.25 - 1.0) / 2)
    assert s["cross_reversals"] == 2
    assert s["cross_amplitude_late"] == pytest.approx(0.25)
    assert s["along_progress"] == pytest.approx(0.75)
    assert s["final_loss"] == pytest.approx(0.5 * 0.1 * 0.25)
    # on a bent valley the distance across is measured from the floor y = c x^2
    bent = valley_summary({"t": np.array([[1.0, 0.5], [1.0, 0.5]])}, Valley(c=0.5))["t"]
    assert bent["cross_amplitude_late"] == 0.0


def test_divergence_is_reported_and_cut():
    traj = valley_trajectories(optimizers=("gd",), lr=0.05, steps=30)["gd"]  # lr * a = 5
    assert np.isnan(traj[-1]).all() and np.isfinite(traj[0]).all()
    assert valley_summary({"gd": traj})["gd"]["diverged"] == 1.0


def test_custom_factories_including_closure_optimizers():
    traj = valley_trajectories(optimizers={"sam": lambda p, lr: SAM(p, rho=0.05, lr=lr)}, lr=0.009, steps=5)
    assert traj["sam"].shape == (6, 2) and np.isfinite(traj["sam"]).all()
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        valley_trajectories(optimizers=("rmsprop",))
    with pytest.raises(ValueError, match="lr"):
        valley_trajectories(lr=-1.0)
    with pytest.raises(ValueError, match="Valley: a "):
        Valley(a=-1.0)


def test_figure_has_contours_and_one_line_per_optimizer(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = valley_figure(runs)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert any(isinstance(c, ContourSet) for c in ax.collections)
    labels = [line.get_label() for line in ax.get_lines()]
    for name in runs:
        assert name in labels
    assert list(tmp_path.iterdir()) == []  # nothing written
    # drawing into given axes returns their figure
    fig2 = Figure()
    ax2 = fig2.add_subplot()
    assert valley_figure(runs, ax=ax2) is fig2
