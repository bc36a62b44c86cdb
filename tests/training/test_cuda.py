"""Training on a CUDA device: the same gradients and the same record as on the CPU (skipped without one)."""

import numpy as np
import pytest
import torch

from oppsig.losses import get_loss
from oppsig.models import build_model
from oppsig.store import open_run
from oppsig.training import full_batch_backward, train

pytestmark = pytest.mark.cuda
DEVICE = "cuda"


@pytest.fixture(autouse=True)
def _full_float32():
    """Plain float32 products on the device (no TF32), so CPU and device agree to float32 rounding."""
    if not torch.cuda.is_available():
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_full_batch_step_on_cuda_equals_cpu():
    torch.manual_seed(0)
    x, y = torch.randn(203, 3, 8, 8), torch.randint(0, 10, (203,))
    cpu = build_model("mlp", (3, 8, 8), 10, widths=(32, 32))
    dev = build_model("mlp", (3, 8, 8), 10, widths=(32, 32)).to(DEVICE)
    dev.load_state_dict(cpu.state_dict())
    for loss in ("ce", "mse"):
        fn = get_loss(loss)
        for m in (cpu, dev):
            m.zero_grad(set_to_none=True)
        lc, cc, _ = full_batch_backward(cpu, x, y, fn, physical_batch_size=64)
        ld, cd, _ = full_batch_backward(dev, x.to(DEVICE), y.to(DEVICE), fn, physical_batch_size=64)
        assert torch.allclose(ld.cpu(), lc, rtol=1e-5, atol=1e-6) and torch.equal(cd.cpu(), cc)
        for (n, pc), pd in zip(cpu.named_parameters(), dev.parameters()):
            assert pd.grad.device.type == torch.device(DEVICE).type
            assert torch.allclose(pd.grad.cpu(), pc.grad, rtol=1e-4, atol=1e-6), (loss, n)


def test_a_run_on_cuda_records_what_the_cpu_run_records(tiny_cfg):
    """Full-batch GD with sharpness tracking: per-example losses and sharpness as on the CPU."""
    cpu = train(tiny_cfg("name=cpu", "curvature.every=4", steps=8), progress=False)
    dev = train(tiny_cfg("name=dev", "curvature.every=4", f"device={DEVICE}", steps=8), progress=False)
    a, b = open_run(cpu.run_dir), open_run(dev.run_dir)
    assert b.config.device == DEVICE and a.steps.tolist() == b.steps.tolist()
    assert np.allclose(np.asarray(b.losses), np.asarray(a.losses), rtol=1e-3, atol=1e-5)
    sa, sb = (np.asarray(r.metrics["sharpness"], float) for r in (a, b))
    ok = np.isfinite(sa)
    assert ok.sum() == 2 and np.array_equal(ok, np.isfinite(sb))
    assert np.allclose(sb[ok], sa[ok], rtol=1e-2)  # each solve to tol 1e-3
