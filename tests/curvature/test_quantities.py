import copy
import math

import pytest
import torch

from oppsig.curvature import (
    HessianOperator,
    adam_preconditioner,
    adam_threshold,
    full_loss,
    gd_threshold,
    hutchinson_trace,
    layerwise_sharpness,
    loss_slice,
    momentum_threshold,
    optimizer_threshold,
    parameter_groups,
    preconditioned_sharpness,
    sharpness,
    update_projection,
)
from oppsig.curvature.lanczos import lanczos
from oppsig.errors import OppsigError
from oppsig.losses import get_loss
from oppsig.models import build_model

from ._reference import F64, assert_close, dense, index_of, problem


def test_thresholds():
    assert gd_threshold(0.02) == pytest.approx(100.0)
    assert momentum_threshold(0.1, 0.9) == pytest.approx(38.0)
    assert momentum_threshold(0.1, 0.0) == pytest.approx(gd_threshold(0.1))
    assert momentum_threshold(0.1, 0.9, nesterov=True) == pytest.approx(38.0 / 2.8)
    assert adam_threshold(1e-3, 0.9) == pytest.approx(38000.0)
    assert optimizer_threshold("gd", 0.05) == pytest.approx(40.0)
    assert optimizer_threshold("sgd", 0.1, momentum=0.9, dampening=0.5) == pytest.approx(76.0)
    assert optimizer_threshold("adamw", 1e-3, betas=(0.9, 0.999)) == pytest.approx(38000.0)
    assert optimizer_threshold("gd", 0.0) == math.inf
    with pytest.raises(OppsigError, match="lr"):
        gd_threshold(0.0)
    with pytest.raises(OppsigError, match="beta"):
        momentum_threshold(0.1, 1.0)
    with pytest.raises(OppsigError, match="gd, sgd"):
        optimizer_threshold("lion", 0.1)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_sharpness_and_layer_blocks(dense_ref, name):
    model, batches, loss, H, _, _ = dense_ref(name)
    r = sharpness(model, batches, loss, k=2, tol=1e-10, max_iter=200)
    assert_close(r.eigenvalues, torch.linalg.eigvalsh(H).flip(0)[:2], 1e-8, "sharpness")
    groups = parameter_groups(model)
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    layers = layerwise_sharpness(model, batches, loss, tol=1e-10, max_iter=200)
    assert list(layers) == list(groups)
    full = HessianOperator.from_model(model, batches, loss)
    for g, names in groups.items():
        idx = index_of(model, names)
        block = H[idx][:, idx]
        assert_close(full.restrict(names).to_dense(), block, 1e-10, f"block {g}")
        assert_close(layers[g].eigenvalues[0], torch.linalg.eigvalsh(block)[-1], 1e-8, f"layer {g}")


def test_parameter_groups_cnn():
    model, _, _ = problem("cnn")
    assert parameter_groups(model) == {
        "features.0": ["features.0.weight"],
        "features.1": ["features.1.weight", "features.1.bias"],
        "head": ["head.weight", "head.bias"],
    }


def test_preconditioned_sharpness_from_adam():
    model, batches, loss = problem("mlp")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99), eps=1e-3)
    with pytest.raises(OppsigError, match="first step"):
        adam_preconditioner(opt, model)
    n = sum(x.shape[0] for x, _ in batches)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        sum(loss(model(x), y).sum() / n for x, y in batches).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    P = torch.cat([(opt.state[p]["exp_avg_sq"] / (1 - 0.99**3)).sqrt().reshape(-1) + 1e-3 for p in model.parameters()])
    assert_close(adam_preconditioner(opt, model), P, 1e-14, "P")
    H, _, _ = dense(model, batches, loss)
    S = torch.diag(P.rsqrt())
    r = preconditioned_sharpness(model, batches, loss, opt, k=2, tol=1e-10, max_iter=200)
    assert_close(r.eigenvalues, torch.linalg.eigvalsh(S @ H @ S).flip(0)[:2], 1e-8, "preconditioned")
    assert all(p.grad is None for p in model.parameters())


def test_update_projection():
    assert update_projection(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])) == pytest.approx(4.0)
    assert update_projection(torch.tensor([3.0, 4.0]), torch.tensor([-1.0, 0.0])) == pytest.approx(-3.0)
    with pytest.raises(OppsigError, match="same size"):
        update_projection(torch.zeros(2), torch.zeros(3))
    with pytest.raises(OppsigError, match="zero"):
        update_projection(torch.zeros(2), torch.zeros(2))


def test_loss_slice(dense_ref):
    model, batches, loss, H, _, L0 = dense_ref("mlp")
    d = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0), dtype=F64)
    d = d / d.norm()
    h = 1e-3
    vals = loss_slice(model, batches, loss, d, [-h, 0.0, h, 0.5])
    assert_close(vals[1], L0, 1e-13, "alpha=0")
    curv = (vals[0] - 2 * vals[1] + vals[2]) / h**2
    assert_close(curv, d @ H @ d, 1e-5, "second difference")
    moved = copy.deepcopy(model)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(moved.parameters()) + 0.5 * d,
                                            moved.parameters())
    assert_close(vals[3], full_loss(moved, batches, loss), 1e-13, "alpha=0.5")
    with pytest.raises(OppsigError, match="flat"):
        loss_slice(model, batches, loss, d[:-1], [0.0])


def test_hutchinson_trace():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(30, 30, generator=g, dtype=F64)
    A = M @ M.T / 30
    est, se = hutchinson_trace(A, num_samples=400, seed=1)
    assert abs(est - float(A.trace())) < 4 * se and se < 0.1 * float(A.trace())
    with pytest.raises(OppsigError):
        hutchinson_trace(A, num_samples=1)


def test_presample_cold_start_and_warm_start():
    from oppsig.curvature import make_hvp, presample_rows, top_hessian_eigs, warm_start

    torch.manual_seed(0)
    model = build_model("mlp", (6,), 3, widths=(8,), activation="tanh", dtype=F64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 6, generator=g, dtype=F64)
    x[:, 0] *= 4.0  # a large-magnitude feature: a clear top eigenvalue
    y = torch.randint(0, 3, (2000,), generator=g)
    hvp = make_hvp(model, [(x, y)], get_loss("mse"))
    exact = lanczos(HessianOperator(hvp), k=2, tol=1e-12, max_iter=hvp.layout.dim).eigenvalues
    cold = top_hessian_eigs(hvp, k=1, tol=1e-4, seed=1)
    plain = top_hessian_eigs(hvp, k=1, tol=1e-4, seed=1, presample=0.0)
    assert 0 < cold.extra_work < plain.work and plain.extra_work == 0
    assert cold.num_matvecs < plain.num_matvecs
    assert cold.converged and abs(cold.top - float(exact[0])) <= 1e-4 * float(exact[0])
    assert abs(cold.top - float(exact[0])) <= float(cold.error_bounds[0]) and cold.gap <= float(exact[0] - exact[1])
    # warm: no presample, and no gap carried over (it is not a bound for another matrix)
    warm = top_hessian_eigs(hvp, k=1, tol=1e-4, v0=warm_start(plain))  # with the next Ritz vector: the gap at once
    assert warm.extra_work == 0 and warm.num_matvecs <= 4 < plain.num_matvecs and warm.converged
    rows = presample_rows(2000, 0.1, seed=5)
    assert rows.shape == (200,) and torch.equal(rows, presample_rows(2000, 0.1, seed=5))
    assert bool((rows[1:] > rows[:-1]).all()) and presample_rows(2000, 0.0, seed=5) is None
