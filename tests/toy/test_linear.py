"""The two-layer linear model of opposing signals: closed forms against autograd, the data model, training."""

import argparse
import math

import numpy as np
import pytest
import torch

from oppsig.curvature import lanczos
from oppsig.errors import ConfigError
from oppsig.toy import figures
from oppsig.toy import linear as tl

DT = torch.float64
# torch.func.hessian warns from inside torch about torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def random_params(m, d, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(m, d, generator=g, dtype=DT), scale * torch.randn(m, generator=g, dtype=DT))


@pytest.fixture(scope="module")
def data():
    return tl.make_data(tl.OpposingDataConfig(n=96, d=5, seed=3))


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("m,seed", [(1, 0), (3, 1), (6, 2)])
def test_hessian_equals_autograd(data, m, seed):
    W, v = random_params(m, data.d, seed)
    theta = tl.flatten(W, v)
    H_auto = torch.func.hessian(lambda t: tl.loss_flat(t, data.X, data.y, m))(theta)
    H = tl.hessian(W, v, data.X, data.y)
    assert H.shape == (m * data.d + m,) * 2
    scale = max(1.0, float(H_auto.abs().max()))
    assert float((H - H_auto).abs().max()) <= 1e-10 * scale
    # the residual cross term matters away from a minimum
    W0, v0 = W.clone(), v.clone()
    gn_only = tl.hessian(W0, v0, data.X, torch.zeros_like(data.y) + data.X @ (W0.T @ v0))
    assert float((gn_only - H_auto).abs().max()) > 1e-3


def test_gradients_equal_autograd(data):
    W, v = random_params(4, data.d, 7)
    W.requires_grad_(True)
    v.requires_grad_(True)
    gW, gv = torch.autograd.grad(tl.loss(W, v, data.X, data.y), (W, v))
    cW, cv = tl.gradients(W.detach(), v.detach(), data.X, data.y)
    assert torch.allclose(cW, gW, rtol=0, atol=1e-12) and torch.allclose(cv, gv, rtol=0, atol=1e-12)


def test_hvp_equals_dense_hessian(data):
    W, v = random_params(3, data.d, 11)
    H = tl.hessian(W, v, data.X, data.y)
    z = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0), dtype=DT)
    dW, dv = tl.unflatten(z, 3, data.d)
    hW, hv = tl.hvp(W, v, data.X, data.y, dW, dv)
    assert torch.allclose(tl.flatten(hW, hv), H @ z, rtol=0, atol=1e-10)
    assert torch.allclose(tl.hvp_operator(W, v, data.X, data.y)(z), H @ z, rtol=0, atol=1e-10)


def test_lanczos_matches_closed_form_top_eigenvalue(data):
    W, v = random_params(4, data.d, 5, scale=0.7)
    P = W.numel() + v.numel()
    top = tl.sharpness(W, v, data.X, data.y)
    r = lanczos(tl.hvp_operator(W, v, data.X, data.y), k=1, tol=1e-12, max_iter=P, dim=P, dtype=DT)
    assert abs(r.top - top) <= 1e-8 * max(1.0, abs(top))
    # autograd HVP (forward over reverse) through the same solver
    theta = tl.flatten(W, v)
    grad = torch.func.grad(lambda t: tl.loss_flat(t, data.X, data.y, 4))

    def hvp_auto(z):
        return torch.func.jvp(grad, (theta,), (z,))[1]

    r2 = lanczos(hvp_auto, k=1, tol=1e-12, max_iter=P, dim=P, dtype=DT, seed=3)
    assert abs(r2.top - top) <= 1e-8 * max(1.0, abs(top))
    assert abs(tl.lanczos_sharpness(W, v, data.X, data.y).top - top) <= 1e-8 * max(1.0, abs(top))


def test_gauss_newton_and_opposing_curvature(data):
    W, v = random_params(3, data.d, 2)
    theta = tl.flatten(W, v)
    J = torch.func.jacrev(lambda th: tl.predict(*tl.unflatten(th, 3, data.d), data.X))(theta)  # (n, P)
    gn = J.T @ J / data.n
    assert abs(tl.gauss_newton_sharpness(W, v, data.X) - float(torch.linalg.eigvalsh(gn)[-1])) < 1e-10
    t = tl.opposing_direction(W, v)

    def u_of(th):
        Wt, vt = tl.unflatten(th, 3, data.d)
        return Wt.T @ vt

    # t is the normalised gradient of u_o = u . e_o with respect to theta
    grad_uo = torch.func.grad(lambda th: u_of(th)[tl.OPPOSING])(theta)
    assert torch.allclose(t, grad_uo / grad_uo.norm(), rtol=0, atol=1e-14)
    H = tl.hessian(W, v, data.X, data.y)
    assert abs(tl.opposing_curvature(W, v, data.X, data.y) - float(t @ H @ t)) < 1e-10


def test_group_losses(data):
    W, v = random_params(2, data.d, 4)
    r = tl.predict(W, v, data.X) - data.y
    la, lb = tl.group_losses(W, v, data.X, data.y, data.groups)
    assert math.isclose(la, float(0.5 * (r[data.groups == 0] ** 2).mean()), rel_tol=1e-13)
    assert math.isclose(lb, float(0.5 * (r[data.groups == 1] ** 2).mean()), rel_tol=1e-13)


def test_valley_prediction_is_the_sharpness_of_the_constructed_minima():
    data = tl.make_data()
    pred = tl.predict_valley(data)
    S = data.X.T @ data.X / data.n
    b = data.X.T @ data.y / data.n
    assert torch.allclose(S @ pred.u_star, b, atol=1e-12)
    u = pred.u_star
    for a, expected in ((float(u.norm()), pred.s_balanced), (pred.a_flattest, pred.s_flattest)):
        v = torch.zeros(4, dtype=DT)
        v[0] = math.sqrt(a)
        W = torch.outer(v, u) / a  # W^T v = u, |v|^2 = a
        gW, gv = tl.gradients(W, v, data.X, data.y)
        assert float(gW.abs().max()) < 1e-12 and float(gv.abs().max()) < 1e-12
        assert abs(tl.sharpness(W, v, data.X, data.y) - expected) < 1e-8 * expected
    assert pred.s_flattest < pred.s_balanced
    # the opposing feature sets the scale: S_bal ~ Sigma_oo |u*|, and it is the curvature along t_o
    assert abs(pred.s_balanced / (pred.sigma_oo * float(u.norm())) - 1) < 0.1
    assert abs(pred.kappa_opposing / pred.s_balanced - 1) < 0.01
    assert tl.predict_valley(tl.make_data(alpha=0.0)).s_balanced < 0.05 * pred.s_balanced


def test_predicted_phase_boundaries():
    assert [tl.predicted_phase(10.0, lr) for lr in (0.19, 0.2, 0.39, 0.4)] == ["smooth", "eos", "eos", "diverges"]
    with pytest.raises(ConfigError, match="lr"):
        tl.predicted_phase(10.0, 0.0)


# ----------------------------------------------------------------------------- data model and configs


def test_data_model_shapes_groups_and_seed():
    cfg = tl.OpposingDataConfig(n=200, d=7, p=0.2, imbalance=0.5, alpha=3.0, seed=1)
    d1 = tl.make_data(cfg)
    assert d1.X.shape == (200, 7) and d1.y.shape == (200,) and d1.groups.shape == (200,)
    assert d1.X.dtype == DT and d1.groups.dtype == torch.int64
    assert int((d1.y == 1).sum()) == 100
    assert (int((d1.groups == 0).sum()), int((d1.groups == 1).sum())) == cfg.group_sizes == (30, 10)
    assert bool((d1.y[d1.groups == 0] == 1).all()) and bool((d1.y[d1.groups == 1] == -1).all())
    assert bool((d1.X[d1.groups >= 0, tl.OPPOSING] == 3.0).all())
    assert bool((d1.X[d1.groups < 0, tl.OPPOSING] == 0).all())
    assert torch.equal(tl.make_data(cfg).X, d1.X)
    assert not torch.equal(tl.make_data(cfg, seed=2).X, d1.X)
    d0 = tl.make_data(cfg, alpha=0.0)  # the draws do not depend on alpha
    keep = [i for i in range(7) if i != tl.OPPOSING]
    assert torch.equal(d0.X[:, keep], d1.X[:, keep]) and bool((d0.X[:, tl.OPPOSING] == 0).all())


BAD_DATA = [
    ("n", 3), ("n", 10.5), ("d", 1), ("signal", 0.0), ("signal", -0.1), ("signal_noise", -1.0),
    ("alpha", -1.0), ("alpha", float("nan")), ("p", 1.5), ("p", -0.1), ("imbalance", 1.2),
    ("noise", -0.5), ("seed", -1), ("alpha", "4"),
]


@pytest.mark.parametrize("field,value", BAD_DATA)
def test_invalid_data_parameters_raise_one_line_config_errors(field, value):
    with pytest.raises(ConfigError) as e:
        tl.OpposingDataConfig(**{field: value})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"config key '{field}' must be") and f"(got {value!r})" in msg


def test_groups_that_do_not_fit_and_unknown_fields_are_config_errors():
    with pytest.raises(ConfigError, match="config key 'p' .*smaller p or imbalance"):
        tl.OpposingDataConfig(n=10, p=1.0, imbalance=1.0)
    with pytest.raises(ConfigError, match="unknown data-model field 'alhpa'"):
        tl.make_data(alhpa=1.0)


@pytest.mark.parametrize("cls,kwargs,field", [
    (tl.NetConfig, {"width": 0}, "width"),
    (tl.NetConfig, {"init_scale": 0.0}, "init_scale"),
    (tl.TrainConfig, {"lr": 0.0}, "lr"),
    (tl.TrainConfig, {"lr": 0.1, "optimizer": "sgd"}, "optimizer"),
    (tl.TrainConfig, {"lr": 0.1, "steps": -1}, "steps"),
    (tl.TrainConfig, {"lr": 0.1, "betas": (0.9, 1.0)}, "betas"),
    (tl.TrainConfig, {"lr": 0.1, "blowup": 1.0}, "blowup"),
])
def test_invalid_net_and_train_configs(cls, kwargs, field):
    with pytest.raises(ConfigError) as e:
        cls(**kwargs)
    assert str(e.value).startswith(f"config key '{field}' must be") and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- training


def test_gd_and_adam_steps_are_exact(data):
    net = tl.NetConfig(width=3, init_scale=0.5, seed=4)
    W0, v0 = tl.init_params(data.d, net)
    lr = 0.05
    tr = tl.train(data, net, tl.TrainConfig(lr=lr, steps=1, sharpness_every=1))
    gW, gv = tl.gradients(W0, v0, data.X, data.y)
    assert torch.allclose(tr.W, W0 - lr * gW, rtol=0, atol=1e-15)
    assert torch.allclose(tr.v, v0 - lr * gv, rtol=0, atol=1e-15)
    assert math.isclose(tr.loss[0], float(tl.loss(W0, v0, data.X, data.y)), rel_tol=1e-14)
    assert math.isclose(tr.sharpness[0], tl.sharpness(W0, v0, data.X, data.y), rel_tol=1e-12)
    assert tr.u_opposing[0] == pytest.approx(float((W0.T @ v0)[tl.OPPOSING]), rel=1e-14)
    ad = tl.train(data, net, tl.TrainConfig(lr=lr, steps=1, optimizer="adam", eps=1e-8))
    # Adam's first step: m_hat = g, v_hat = g^2
    assert torch.allclose(ad.W, W0 - lr * gW / (gW.abs() + 1e-8), rtol=0, atol=1e-14)
    assert np.isfinite(ad.precond_sharpness[0]) and ad.threshold == pytest.approx(38 / lr)


def test_phases_of_single_runs():
    data = tl.make_data()
    pred = tl.predict_valley(data)
    small = tl.train(data, config=tl.TrainConfig(lr=1.5 / pred.s_balanced, steps=1500, sharpness_every=50))
    assert tl.classify(small) == "smooth" and np.nanmax(small.sharpness) < 2 / small.config.lr
    big = tl.train(data, config=tl.TrainConfig(lr=6.0 / pred.s_balanced, steps=1500, sharpness_every=0))
    assert big.diverged and tl.classify(big) == "diverges" and len(big.loss) < 1501
    adam = tl.train(data, config=tl.TrainConfig(lr=0.01, steps=300, optimizer="adam", sharpness_every=0))
    assert adam.loss[-1] < adam.loss[0]


def test_edge_of_stability_with_antiphase_groups():
    """Sharpening to 2/lr, then oscillation with the groups' losses in anti-phase; none without the feature."""
    data = tl.make_data()
    lr = 0.15
    tr = tl.train(data, config=tl.TrainConfig(lr=lr, steps=2200))
    assert tl.classify(tr) == "eos"
    ratio = tr.sharpness * lr / 2
    assert ratio[0] < 0.1 and np.nanmax(ratio) > 1.0
    w = tl.oscillation_window(tr)
    assert w.size > 200
    assert abs(np.median(ratio[w]) - 1.0) < 0.02
    assert tl.antiphase_correlation(tr, w) <= -0.8
    control = tl.train(tl.make_data(alpha=0.0), config=tl.TrainConfig(lr=lr, steps=2200, sharpness_every=100))
    assert tl.classify(control) == "smooth" and np.nanmax(control.sharpness) * lr / 2 < 0.1
    assert tl.oscillation_window(control).size == 0 and math.isnan(tl.antiphase_correlation(control))


def test_phase_diagram_small_grid():
    pd = tl.phase_diagram([0.0, 4.0], [0.05, 0.15, 1.0], time=150.0, sharpness_every=50)
    assert pd.observed.shape == pd.predicted.shape == (2, 3)
    assert [tl.PHASES[k] for k in pd.predicted[1]] == ["smooth", "eos", "diverges"]
    assert pd.observed[1, 2] == 2 and pd.observed[0, 0] == 0 and (pd.observed[0] == 0).all()
    assert 0.0 <= pd.agreement <= 1.0 and pd.agreement >= 5 / 6
    assert np.isnan(pd.final_sharpness_ratio[1, 2]) and pd.final_sharpness_ratio[0, 0] < 1
    with pytest.raises(ConfigError, match="lrs"):
        tl.phase_diagram([1.0], [0.0])


# ----------------------------------------------------------------------------- figures and CLI


def test_figures_plot_the_trajectories():
    """Each figure draws the trajectory's own numbers (sharpness, group losses, weights, phases)."""
    from matplotlib.collections import QuadMesh

    def xy(line):
        return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)

    data = tl.make_data(n=64)
    tr = tl.train(data, config=tl.TrainConfig(lr=0.1, steps=30))
    ad = tl.train(data, config=tl.TrainConfig(lr=0.01, steps=30, optimizer="adam"))
    pd = tl.phase_diagram([0.0, 4.0], [0.1, 1.0], tl.OpposingDataConfig(n=64), time=5.0)

    fig = figures.trajectory_figure(tr)
    ok = np.isfinite(tr.sharpness)
    x, y = xy(fig.axes[0].get_lines()[0])
    assert np.array_equal(x, tr.steps[ok]) and np.allclose(y, tr.sharpness[ok])
    assert np.allclose(xy(fig.axes[0].get_lines()[2])[1], 2 / 0.1)  # the 2/lr line
    for line, want in zip(fig.axes[1].get_lines(), (tr.loss_a, tr.loss_b, tr.loss)):
        assert np.allclose(xy(line)[1], want)
    assert np.allclose(xy(fig.axes[2].get_lines()[0])[1], tr.u_opposing)
    fig = figures.trajectory_figure(ad)  # Adam: the preconditioned sharpness on its own axis
    ok = np.isfinite(ad.precond_sharpness)
    assert any(np.allclose(xy(ln)[1], ad.precond_sharpness[ok]) for a in fig.axes for ln in a.get_lines()
               if len(xy(ln)[1]) == ok.sum())

    w = np.arange(5, 15)
    fig = figures.antiphase_figure(tr, length=10, window=w)
    a, b = (xy(ln) for ln in fig.axes[0].get_lines()[:2])
    assert np.array_equal(a[0], tr.steps[5:15])
    assert np.allclose(a[1], tr.loss_a[5:15] - tr.loss_a[5:15].mean())
    assert np.allclose(b[1], tr.loss_b[5:15] - tr.loss_b[5:15].mean())

    fig = figures.comparison_figure({"a": tr, "b": ad})
    gaps = [xy(ln)[1] for ln in fig.axes[1].get_lines()]
    assert np.allclose(gaps[0], tr.loss_a - tr.loss_b) and np.allclose(gaps[1], ad.loss_a - ad.loss_b)

    fig = figures.phase_diagram_figure(pd)
    mesh = next(c for c in fig.axes[0].collections if isinstance(c, QuadMesh))
    assert np.array_equal(np.asarray(mesh.get_array()).reshape(2, 2), pd.observed.T)


def _cli(*argv):
    from oppsig.cli import toy

    p = argparse.ArgumentParser()
    toy.add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(list(argv))
    return args.func(args)


def test_cli_linear(tmp_path, capsys):
    assert _cli("toy", "linear", "--steps", "40", "--lr", "0.1", "--out-dir", str(tmp_path / "o")) == 0
    out = capsys.readouterr().out
    assert "S_bal=" in out and "predicted" in out and "observed" in out
    assert (tmp_path / "o" / "trajectory.png").stat().st_size > 0 and (tmp_path / "o" / "antiphase.png").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="out-dir"):
        _cli("toy", "linear", "--steps", "2", "--out-dir", str(tmp_path / "file" / "sub"))
    with pytest.raises(ConfigError, match="config key 'alpha'"):
        _cli("toy", "linear", "--alpha", "-1", "--no-figures")


def test_train_from_given_params(data):
    W, v = random_params(2, data.d, 9, scale=0.3)
    tr = tl.train(data, config=tl.TrainConfig(lr=0.01, steps=0), params=(W, v))
    assert torch.equal(tr.W, W) and len(tr.loss) == 1
    with pytest.raises(ConfigError, match="params have shapes"):
        tl.train(data, config=tl.TrainConfig(lr=0.01, steps=1), params=(W[:, :2], v))
