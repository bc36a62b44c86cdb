"""Sharpness: top Hessian eigenvalues, per layer, Adam-preconditioned, presampled cold starts."""

import pytest
import torch

from oppsig.curvature import (
    HessianOperator,
    adam_preconditioner,
    layerwise_sharpness,
    parameter_groups,
    preconditioned_sharpness,
    sharpness,
)
from oppsig.curvature.lanczos import lanczos
from oppsig.errors import OppsigError
from oppsig.losses import get_loss
from oppsig.models import build_model

from ._reference import F64, assert_close, dense, index_of, problem


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
