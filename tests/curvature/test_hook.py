import copy

import pytest
import torch

from oppsig.config import load_config
from oppsig.curvature import CurvatureHook, adam_threshold
from oppsig.data import ArrayDataset
from oppsig.training.hooks import TrainState

from ._reference import F64, assert_close, dense, problem, tiny_data


def make_state(model, optimizer, overrides, n=14, lr=0.05, seed=0, shape=(6,)):
    cfg = load_config(None, overrides)
    x, y = tiny_data(shape, n=n, seed=seed)
    data = ArrayDataset(x=x, y=y, index=torch.arange(n), classes=("a", "b", "c"))
    _, _, loss = problem("mlp")
    return TrainState(step=0, model=model, optimizer=optimizer, config=cfg, train_data=data, loss_fn=loss,
                      device=torch.device("cpu"), lr=lr)


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


GD = ["curvature.every=2", "curvature.top_k=2", "curvature.tol=1e-9", "curvature.max_iter=80",
      "curvature.criterion=residual", "curvature.n=12", "curvature.physical_batch_size=5", "optim.name=gd",
      "optim.lr=0.05"]


def test_hook_gd_metrics_warm_start_and_resume():
    model, _, _ = problem("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    state = make_state(model, opt, GD)
    hook = CurvatureHook(state.config.curvature)
    batches = [(state.train_data.x[s : s + 5][: 12 - s], state.train_data.y[s : s + 5][: 12 - s]) for s in (0, 5, 10)]
    H, _, _ = dense(model, batches, state.loss_fn)
    top2 = torch.linalg.eigvalsh(H).flip(0)[:2]

    theta0 = flat(model)
    hook.on_step_start(state)
    u = state.extras["top_eigvec"].clone()
    assert state.extras["top_eigvec_step"] == 0
    assert state.metrics == {}  # metrics are added at the end of the step
    with torch.no_grad():  # the update of step 0
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    hook.on_step_end(state)
    m = state.metrics
    assert_close(torch.tensor([m["sharpness"], m["sharpness_2"]], dtype=F64), top2, 1e-8, "sharpness")
    assert m["threshold"] == pytest.approx(2 / 0.05)
    assert m["eig_residual"] <= 1e-9 and m["hvps"] >= 2 and m["curv_time"] >= 0
    assert m["update_proj"] == pytest.approx(float((flat(model) - theta0) @ u), abs=1e-12)
    assert_close((H @ u), top2[0] * u, 1e-7, "extras eigenvector")
    assert all(p.grad is None for p in model.parameters()) and model.training

    # step 1: not due
    state.step, state.metrics = 1, {}
    hook.on_step_start(state)
    hook.on_step_end(state)
    assert state.metrics == {} and state.extras["top_eigvec_step"] == 0

    # step 2 at an unchanged point: warm start from the top-2 vectors converges at once
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta0, model.parameters())
    state.step, state.metrics = 2, {}
    hook.on_step_start(state)
    hook.on_step_end(state)
    assert state.metrics["hvps"] <= 3 and state.metrics["update_proj"] == 0.0
    warm = torch.tensor([state.metrics["sharpness"], state.metrics["sharpness_2"]], dtype=F64)
    assert_close(warm, top2, 1e-8, "warm")

    # resume: a new hook with the saved state is warm as well
    saved = copy.deepcopy(hook.state_dict())
    assert saved["vecs"].device.type == "cpu" and saved["last_step"] == 2
    other = CurvatureHook(state.config.curvature)
    other.load_state_dict(saved)
    state.step, state.metrics = 4, {}
    other.on_step_start(state)
    other.on_step_end(state)
    assert state.metrics["hvps"] <= 3
    cold = CurvatureHook(state.config.curvature)
    state.step, state.metrics = 4, {}
    cold.on_step_start(state)
    cold.on_step_end(state)
    assert state.metrics["hvps"] > 3


def test_hook_adam_layerwise_preconditioned():
    model, _, _ = problem("mlp")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    over = ["curvature.every=1", "curvature.layerwise=true", "curvature.preconditioned=true",
            "curvature.tol=1e-6", "curvature.max_iter=80", "optim.name=adam", "optim.lr=0.001",
            "optim.betas=[0.9, 0.99]", "train.physical_batch_size=4", "curvature.projection=false"]
    state = make_state(model, opt, over, lr=1e-3)
    hook = CurvatureHook(state.config.curvature)
    hook.on_step_start(state)
    hook.on_step_end(state)
    m = state.metrics
    assert {"layer/net.1", "layer/net.3", "layer/net.5"} <= set(m)
    assert "precond_sharpness" not in m and "update_proj" not in m  # no Adam state before the first step
    assert "threshold" not in m  # Adam's threshold is for the preconditioned sharpness, not measured yet
    # one real Adam step, then the preconditioned sharpness appears
    x, y = state.train_data.x, state.train_data.y
    state.loss_fn(model(x), y).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    state.step, state.metrics = 1, {}
    hook.on_step_start(state)
    hook.on_step_end(state)
    assert state.metrics["precond_sharpness"] > 0
    assert state.metrics["threshold"] == pytest.approx(adam_threshold(1e-3, 0.9))
    assert set(hook.state_dict()["layer_vecs"]) == {"net.1", "net.3", "net.5"}
    assert all(p.grad is None for p in model.parameters())


def test_hook_batchnorm_model_untouched():
    model, _, _ = problem("cnn")
    model.eval()
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    over = ["curvature.every=1", "curvature.max_iter=10", "optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9",
            "train.physical_batch_size=6", "curvature.layerwise=true"]
    state = make_state(model, opt, over, n=12, lr=0.1, seed=1, shape=(2, 6, 6))
    state.loss_fn = problem("cnn")[2]
    hook = CurvatureHook(state.config.curvature)
    hook.on_step_start(state)
    hook.on_step_end(state)
    assert state.metrics["threshold"] == pytest.approx(38.0)
    assert "layer/features.1" in state.metrics
    assert not model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_hook_off():
    hook = CurvatureHook(load_config(None, ["curvature.every=0"]).curvature)
    assert not hook.is_due(0)
    with pytest.raises(Exception, match="state dict"):
        hook.load_state_dict({})


def test_hook_eigenvalue_criterion_presample_and_warm_start():
    model, _, _ = problem("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    over = ["curvature.every=1", "curvature.tol=1e-6", "curvature.max_iter=80", "optim.name=gd", "optim.lr=0.05"]
    state = make_state(model, opt, over, n=1000)
    hook = CurvatureHook(state.config.curvature)
    assert state.config.curvature.criterion == "eigenvalue" and state.config.curvature.presample == 0.1
    x, y = state.train_data.x, state.train_data.y
    H, _, _ = dense(model, [(x, y)], state.loss_fn)
    top = float(torch.linalg.eigvalsh(H)[-1])
    hook.on_step_start(state)
    hook.on_step_end(state)
    m = state.metrics
    assert abs(m["sharpness"] - top) <= 1e-6 * top and m["eig_error"] <= 1e-6
    assert abs(m["sharpness"] - top) <= m["err/sharpness"] and m["converged/sharpness"] == 1.0
    cold = m["hvps"]
    state.step, state.metrics = 1, {}  # same point: the warm start needs only the gap to settle
    hook.on_step_start(state)
    hook.on_step_end(state)
    assert state.metrics["hvps"] < cold and abs(state.metrics["sharpness"] - top) <= 1e-6 * top
    # with cold_every=2 the next measurement at the same point starts cold again (presampled)
    hook2 = CurvatureHook(make_state(model, opt, over + ["curvature.cold_every=2"], n=1000).config.curvature)
    costs = []
    for step in range(3):
        state.step, state.metrics = step, {}
        hook2.on_step_start(state)
        hook2.on_step_end(state)
        costs.append(state.metrics["hvps"])
        assert abs(state.metrics["sharpness"] - top) <= 1e-6 * top
    assert costs[1] < costs[0] and costs[2] > costs[1]  # cold again (presampled, seeded by the step)
    assert hook2.state_dict()["count"] == 3
