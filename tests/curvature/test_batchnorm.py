"""BatchNorm in train mode with physical-batch statistics, and in eval mode, against a dense float64 reference.

With BatchNorm in train mode each example's loss depends on the other examples of its physical batch (through
the batch mean and variance), so the recorded per-example losses and the Hessian of their mean are those of the
training's physical batches: equal to a one-batch computation when the physical batch is the whole set, different
when the set is split. With running statistics (``batchnorm="model"`` on a model in eval mode) each example's loss
is its own and nothing depends on the physical batch size.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from oppsig.curvature import make_hvp
from oppsig.curvature.batches import make_batches
from oppsig.losses import get_loss
from oppsig.models import build_model
from oppsig.training.step import full_batch_backward

F64 = torch.float64
N = 8
EPS = 1e-5  # nn.BatchNorm2d's default


def _setup():
    torch.manual_seed(0)
    model = build_model("cnn", (2, 4, 4), 3, channels=(3,), batchnorm=True, activation="tanh", dtype=F64)
    with torch.no_grad():  # non-trivial affine and running statistics
        bn = model.features[1]
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(N, 2, 4, 4, dtype=F64) * torch.linspace(0.5, 2.0, N, dtype=F64).view(N, 1, 1, 1)
    y = torch.randint(0, 3, (N,))
    return model, x, y


def _shapes(model):
    return [(n, p.shape) for n, p in model.named_parameters()]


def _reference_logits(theta, shapes, x, stats=None):
    """conv -> BatchNorm (by hand: the batch's biased statistics, or ``stats``) -> tanh -> pool -> linear."""
    p, o = {}, 0
    for name, shape in shapes:
        k = shape.numel()
        p[name] = theta[o:o + k].view(shape)
        o += k
    h = F.conv2d(x, p["features.0.weight"], padding=1)  # (B, 3, 4, 4)
    if stats is None:
        mu, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
    else:
        mu, var = stats
    h = (h - mu.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + EPS)
    h = h * p["features.1.weight"].view(1, -1, 1, 1) + p["features.1.bias"].view(1, -1, 1, 1)
    h = F.max_pool2d(torch.tanh(h), 2)  # (B, 3, 2, 2)
    return F.linear(h.flatten(1), p["head.weight"], p["head.bias"])  # (B, 3)


def _reference_losses(theta, shapes, x, y, bs, stats=None):
    """Per-example losses (N,), each physical batch of ``bs`` rows normalised by its own statistics."""
    ce = get_loss("ce")
    return torch.cat([ce(_reference_logits(theta, shapes, x[s:s + bs], stats), y[s:s + bs])
                      for s in range(0, len(x), bs)])


def _theta(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _recorded_losses(model, x, y, bs, train=True):
    m = copy.deepcopy(model).train(train)
    losses, _, _ = full_batch_backward(m, x, y, get_loss("ce"), bs)
    return losses


def _dense_hessian(model, x, y, bs, stats=None):
    shapes = _shapes(model)
    return torch.func.hessian(lambda t: _reference_losses(t, shapes, x, y, bs, stats).mean())(_theta(model))


def _hvp_matrix(model, x, y, bs, method, mode="batch"):
    hvp = make_hvp(model, make_batches(x, y, bs), get_loss("ce"), method=method, batchnorm=mode)
    assert list(hvp.layout.names) == [n for n, _ in _shapes(model)]
    return hvp.matmat(torch.eye(hvp.layout.dim, dtype=F64))


@pytest.mark.parametrize("bs", [N, N // 2, 3])
def test_recorded_losses_are_those_of_each_physical_batch(bs):
    model, x, y = _setup()
    ref = _reference_losses(_theta(model), _shapes(model), x, y, bs)
    assert torch.allclose(_recorded_losses(model, x, y, bs), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["rev_rev", "fwd_rev"])
@pytest.mark.parametrize("bs", [N, N // 2])
def test_hvp_equals_dense_hessian_of_the_same_loss(bs, method):
    model, x, y = _setup()
    H = _dense_hessian(model, x, y, bs)
    assert torch.allclose(H, H.T, atol=1e-10) and H.abs().max() > 1e-3
    assert torch.allclose(_hvp_matrix(model, x, y, bs, method), H, rtol=1e-8, atol=1e-10)


def test_train_mode_depends_on_the_physical_batch_size():
    """The statistics are those of each physical batch: one batch of N rows and two of N/2 give other losses and
    another Hessian; a split of the set into the same physical batches gives the same ones."""
    model, x, y = _setup()
    whole, halves = _recorded_losses(model, x, y, N), _recorded_losses(model, x, y, N // 2)
    assert (whole - halves).abs().max() > 1e-3
    assert torch.equal(whole, _recorded_losses(model, x, y, N + 5))  # a physical batch larger than the set: one batch
    Hw, Hh = _hvp_matrix(model, x, y, N, "rev_rev"), _hvp_matrix(model, x, y, N // 2, "rev_rev")
    assert (Hw - Hh).abs().max() > 1e-3 * Hw.abs().max()
    assert torch.allclose(Hw, _hvp_matrix(model, x, y, N + 5, "rev_rev"), rtol=1e-12, atol=1e-13)


def test_running_statistics_agree_across_physical_batch_sizes():
    model, x, y = _setup()
    model.eval()
    bn = model.features[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone())
    shapes = _shapes(model)
    ref = _reference_losses(_theta(model), shapes, x, y, N, stats)
    for bs in (N, N // 2, 3):
        assert torch.allclose(_recorded_losses(model, x, y, bs, train=False), ref, rtol=1e-12, atol=1e-12)
    H = _dense_hessian(model, x, y, N, stats)
    for bs in (N, N // 2, 3):
        assert torch.allclose(_hvp_matrix(model, x, y, bs, "rev_rev", mode="model"), H, rtol=1e-8, atol=1e-10)
    assert torch.equal(bn.running_mean, stats[0]) and not model.training  # the products left the model alone
