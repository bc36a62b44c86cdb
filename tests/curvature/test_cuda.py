"""The curvature code on a CUDA device against the float64 dense references (skipped without one)."""

import copy

import pytest
import torch

from oppsig.curvature import make_hvp, sharpness

from ._reference import F64, assert_close

pytestmark = pytest.mark.cuda
DEVICE = "cuda"


def on_device(model, batches):
    return copy.deepcopy(model).to(DEVICE), [(x.to(DEVICE), y.to(DEVICE)) for x, y in batches]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["rev_rev", "fwd_rev"])
def test_hvp_on_cuda_matches_dense_hessian(dense_ref, name, method):
    model, batches, loss, H, _, _ = dense_ref(name)  # float64, on the CPU
    V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    m, b = on_device(model, batches)  # model and data on the device
    hvp = make_hvp(m, b, loss, method=method)
    out = hvp.matmat(V.to(DEVICE))
    assert out.device.type == torch.device(DEVICE).type
    assert_close(out.cpu(), H @ V, 1e-10, f"{name}/{method} on {DEVICE}")
    assert hvp.unbatched is None  # the block went through one batched call (batched="auto" on a device)
    # the CPU model, products computed on the device (device argument)
    hvp = make_hvp(model, batches, loss, method=method, device=DEVICE)
    assert_close(hvp.matvec(V[:, 0].to(DEVICE)).cpu(), H @ V[:, 0], 1e-10, f"{name}/{method} device=")
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model stayed where it was


def test_top_eigenvalues_on_cuda_match_dense(dense_ref):
    model, batches, loss, H, _, _ = dense_ref("mlp")
    m, b = on_device(model, batches)
    r = sharpness(m, b, loss, k=2, tol=1e-10, max_iter=200)
    top = torch.linalg.eigvalsh(H).flip(0)[:2]
    assert_close(r.eigenvalues.cpu(), top, 1e-8, "top-2 eigenvalues on the device")
