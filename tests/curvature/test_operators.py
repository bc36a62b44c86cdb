import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh

from oppsig.curvature import (
    DenseOperator,
    GGNOperator,
    HessianOperator,
    ParamLayout,
    PreconditionedOperator,
    as_operator,
    flatten_params,
    unflatten_params,
)
from oppsig.errors import OppsigError

from ._reference import F64, assert_close, batch_stat_copy

MODELS = ["mlp", "cnn"]


def sym(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return (a + a.T) / 2


def test_layout_roundtrip():
    p = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7.0, 8.0])}
    lay = ParamLayout.from_dict(p)
    flat = flatten_params(p)
    assert flat.tolist() == [0, 1, 2, 3, 4, 5, 7, 8] and lay.dim == 8
    back = unflatten_params(flat, lay)
    assert all(torch.equal(back[k], p[k]) for k in p)
    assert lay.slice("b") == slice(6, 8)
    assert flatten_params(p, ["b", "w"])[:2].tolist() == [7.0, 8.0]
    with pytest.raises(OppsigError, match="shape"):
        lay.unflatten(torch.zeros(7))
    with pytest.raises(OppsigError, match="missing"):
        lay.flatten({"w": p["w"]})
    with pytest.raises(OppsigError, match="shape"):
        lay.flatten({"w": torch.zeros(3, 2), "b": p["b"]})


def test_operator_algebra():
    A, B = sym(5, 0), sym(5, 1)
    a, b = DenseOperator(A), DenseOperator(B)
    v, V = torch.randn(5, dtype=F64), torch.randn(5, 3, dtype=F64)
    assert_close((a + b) @ v, (A + B) @ v, 1e-14, "sum")
    assert_close((a - b) @ V, (A - B) @ V, 1e-14, "difference")
    assert_close((2.5 * a) @ v, 2.5 * A @ v, 1e-14, "scale")
    assert_close((a * 2) @ v, 2 * A @ v, 1e-14, "scale right")
    assert_close((-a) @ v, -A @ v, 1e-14, "neg")
    assert_close((a @ b) @ V, A @ B @ V, 1e-13, "product")
    assert_close((a @ b).to_dense(), A @ B, 1e-13, "dense")
    assert a.shape == (5, 5) and a.dtype == F64
    with pytest.raises(OppsigError, match="shape"):
        a @ torch.zeros(4, dtype=F64)
    with pytest.raises(OppsigError, match="same space"):
        a + DenseOperator(sym(4))
    with pytest.raises(OppsigError, match="dtype"):
        a + DenseOperator(sym(5).float())
    with pytest.raises(OppsigError, match="square"):
        DenseOperator(torch.zeros(2, 3))
    with pytest.raises(OppsigError, match="dim="):
        as_operator(lambda v: v)
    op = as_operator(lambda v: 3 * v, dim=4, dtype=F64)
    assert (op @ torch.ones(4, dtype=F64)).tolist() == [3.0] * 4


def test_to_scipy():
    A = sym(8)
    s = DenseOperator(A).to_scipy()
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.testing.assert_allclose(s @ x[:, 0], A.numpy() @ x[:, 0], atol=1e-13)
    np.testing.assert_allclose(s.matmat(x), A.numpy() @ x, atol=1e-13)
    np.testing.assert_allclose(s @ x[:, :1], A.numpy() @ x[:, :1], atol=1e-13)
    w = eigsh(s, k=2, which="LA", tol=1e-12)[0]
    np.testing.assert_allclose(np.sort(w)[::-1], torch.linalg.eigvalsh(A).flip(0)[:2].numpy(), atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_hessian_operator_dense_and_scipy(dense_ref, name):
    model, batches, loss, H, _, _ = dense_ref(name)
    op = HessianOperator.from_model(model, batches, loss)
    assert_close(op.to_dense(), H, 1e-10, "to_dense")
    top3 = torch.linalg.eigvalsh(H).flip(0)[:3]
    w = np.sort(eigsh(op.to_scipy(), k=3, which="LA", tol=1e-12)[0])[::-1]
    assert_close(torch.from_numpy(w.copy()), top3, 1e-8, "eigsh LA")


@pytest.mark.parametrize("name", MODELS)
def test_preconditioned_matches_explicit(dense_ref, name):
    model, batches, loss, H, _, _ = dense_ref(name)
    g = torch.Generator().manual_seed(3)
    diag = torch.rand(H.shape[0], generator=g, dtype=F64) * 2 + 0.1
    op = PreconditionedOperator(HessianOperator.from_model(model, batches, loss), diag)
    S = torch.diag(diag.rsqrt())
    assert_close(op.to_dense(), S @ H @ S, 1e-10, "P^-1/2 H P^-1/2")
    with pytest.raises(OppsigError, match="> 0"):
        PreconditionedOperator(DenseOperator(H), torch.zeros(H.shape[0], dtype=F64))
    with pytest.raises(OppsigError, match="shape"):
        PreconditionedOperator(DenseOperator(H), diag[:-1])


@pytest.mark.parametrize("name", MODELS)
def test_ggn_matches_dense(dense_ref, name):
    model, batches, loss, H, _, _ = dense_ref(name)
    ref = batch_stat_copy(model)
    params = {n: p.detach() for n, p in ref.named_parameters()}
    names = list(params)
    sizes = [params[n].numel() for n in names]
    flat0 = torch.cat([params[n].reshape(-1) for n in names])
    n_ex = sum(x.shape[0] for x, _ in batches)
    G = torch.zeros_like(H)
    for x, y in batches:
        def out(flat):
            p = {n: t.reshape(params[n].shape) for n, t in zip(names, torch.split(flat, sizes))}
            return torch.func.functional_call(ref, p, (x,)).reshape(-1)

        J = torch.func.jacrev(out)(flat0)
        z0 = out(flat0).detach()
        Hz = torch.func.hessian(lambda z: loss(z.reshape(x.shape[0], -1), y).sum() / n_ex)(z0)
        G += J.T @ Hz @ J
    op = GGNOperator.from_model(model, batches, loss)
    V = torch.randn(G.shape[0], 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert_close(op @ V, G @ V, 1e-10, "GGN")
    assert float(torch.linalg.eigvalsh(G).min()) > -1e-10
