"""Update projections, loss slices and Hutchinson trace estimates."""

import copy

import pytest
import torch

from oppsig.curvature import full_loss, hutchinson_trace, loss_slice, update_projection
from oppsig.errors import OppsigError

from ._reference import F64, assert_close


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
