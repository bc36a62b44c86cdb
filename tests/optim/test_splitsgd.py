import copy
import io
import math

import numpy as np
import pytest
import torch

from oppsig.optim.splitsgd import SplitSGD


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()


def _data(steps):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
            for _ in range(steps)]


def _train(model, opt, data):
    snaps = []
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        snaps.append([p.detach().clone() for p in model.parameters()])
    return snaps


@pytest.mark.parametrize("momentum,dampening,wd", [(0.9, 0.9, 0.0), (0.9, 0.0, 1e-3), (0.5, 0.3, 0.0), (0.0, 0.0, 0.0)])
def test_infinite_threshold_is_sgd_bitwise(momentum, dampening, wd):
    a = _model()
    b = copy.deepcopy(a)
    data = _data(6)
    sgd = torch.optim.SGD(a.parameters(), lr=0.3, momentum=momentum, dampening=dampening, weight_decay=wd)
    split = SplitSGD(b.parameters(), lr=0.3, momentum=momentum, dampening=dampening, weight_decay=wd,
                     threshold=math.inf, split_lr=5.0)
    for sa, sb in zip(_train(a, sgd, data), _train(b, split, data)):
        for pa, pb in zip(sa, sb):
            assert torch.equal(pa, pb)
    assert split.last_split_fraction == 0.0
    assert split.last_split_counts == (0, sum(p.numel() for p in b.parameters()))


def _reference_normalised(params0, grads, lr, momentum, dampening, beta2, eps, wd):
    """The normalised rule on every coordinate, from the definition (numpy)."""
    ps = [p.copy() for p in params0]
    m = [None] * len(ps)
    v = [np.zeros_like(p) for p in ps]
    out = []
    for t, gs in enumerate(grads, start=1):
        for i, g in enumerate(gs):
            g = g + wd * ps[i]
            m[i] = g.copy() if m[i] is None else momentum * m[i] + (1 - dampening) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            r = np.sqrt(v[i] / (1 - beta2**t))
            ps[i] = ps[i] - lr * m[i] / (r + eps)
        out.append([p.copy() for p in ps])
    return out


def test_zero_threshold_is_the_normalised_rule():
    model = _model()
    params0 = [p.detach().numpy().copy() for p in model.parameters()]
    opt = SplitSGD(model.parameters(), lr=123.0, split_lr=0.01, momentum=0.8, dampening=0.6, beta2=0.95,
                   eps=1e-6, weight_decay=1e-2, threshold=0.0)
    grads, got = [], []
    for x, y in _data(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
        opt.step()
        got.append([p.detach().numpy().copy() for p in model.parameters()])
        assert opt.last_split_fraction == 1.0
    want = _reference_normalised(params0, grads, 0.01, 0.8, 0.6, 0.95, 1e-6, 1e-2)
    for gs, ws in zip(got, want):
        for g, w in zip(gs, ws):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)
    # and it is not the momentum rule (lr=123 would have thrown the parameters far)
    assert max(abs(a - b).max() for a, b in zip(got[-1], params0)) < 0.1


def test_planted_outsized_coordinates_rms_rule():
    w = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    lr, slr, beta2, eps = 0.1, 0.01, 0.9, 1e-8
    opt = SplitSGD([w, b], lr=lr, split_lr=slr, momentum=0.5, dampening=0.5, beta2=beta2, eps=eps, threshold=1.2)
    assert math.isnan(opt.last_split_fraction) and opt.last_split_counts == (0, 0)
    w.grad, b.grad = torch.ones(10, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    opt.step()  # t = 1: |g| / rms is exactly 1 < 1.2 everywhere
    assert opt.last_split_counts == (0, 15)
    np.testing.assert_array_equal(w.detach().numpy(), -lr * np.ones(10))
    w1 = w.detach().clone()
    gw = torch.ones(10, dtype=torch.float64)
    gw[[2, 5, 7]] = 100.0
    w.grad, b.grad = gw, torch.ones(5, dtype=torch.float64)
    opt.step()  # the spikes: |g| / rms = 100 / sqrt((0.09 + 1000) / 0.19) = 1.378 >= 1.2
    assert opt.last_split_counts == (3, 12)
    assert opt.last_split_fraction == pytest.approx(0.2, abs=0)
    assert float(opt.state[w]["split_fraction"]) == pytest.approx(0.3)
    assert float(opt.state[b]["split_fraction"]) == 0.0
    g = gw.numpy()
    m = 0.5 * 1.0 + 0.5 * g
    r = np.sqrt((beta2 * (1 - beta2) * 1.0 + (1 - beta2) * g**2) / (1 - beta2**2))
    spiked = np.isin(np.arange(10), [2, 5, 7])
    want = w1.numpy() - np.where(spiked, slr * m / (r + eps), lr * m)
    np.testing.assert_allclose(w.detach().numpy(), want, rtol=0, atol=1e-14)


def test_planted_outsized_coordinates_tensor_rule():
    w = torch.nn.Parameter(torch.zeros(10))
    opt = SplitSGD([w], lr=0.1, threshold=2.0, split="tensor")
    w.grad = torch.tensor([10.0, 10.0] + [1.0] * 8)  # rms = sqrt(208 / 10) = 4.56; 2 * 4.56 = 9.12
    opt.step()
    assert opt.last_split_counts == (2, 8)
    assert opt.last_split_fraction == pytest.approx(0.2)
    # the two outsized coordinates moved by about split_lr = lr (normalised), the rest by lr * g
    np.testing.assert_allclose(w.detach().numpy(), [-0.1, -0.1] + [-0.1] * 8, rtol=1e-6)
    w.grad = torch.tensor([100.0] + [1.0] * 9)
    before = w.detach().clone()
    opt.step()
    assert opt.last_split_counts == (1, 9)
    step = (before - w.detach()).numpy()
    assert step[0] < 1.0  # normalised, not lr * m ~ 0.1 * (0.9 * 10 + 0.1 * 100) = 1.9
    assert step[1] == pytest.approx(0.1 * (0.9 * 10 + 0.1 * 1))


def test_state_dict_round_trip_weights_only():
    a = _model()
    b = copy.deepcopy(a)
    data = _data(5)
    kw = dict(lr=0.1, split_lr=0.01, threshold=1.1, momentum=0.9, dampening=0.5)
    oa = SplitSGD(a.parameters(), **kw)
    _train(a, oa, data[:3])
    buf = io.BytesIO()
    torch.save(oa.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(a.state_dict())
    ob = SplitSGD(b.parameters(), **kw)
    ob.load_state_dict(torch.load(buf, weights_only=True))
    for sa, sb in zip(_train(a, oa, data[3:]), _train(b, ob, data[3:])):
        for pa, pb in zip(sa, sb):
            assert torch.equal(pa, pb)


@pytest.mark.parametrize("kw,name", [
    (dict(lr=-0.1), "lr"), (dict(threshold=-1.0), "threshold"), (dict(threshold=math.nan), "threshold"),
    (dict(split_lr=-1.0), "split_lr"), (dict(momentum=1.0), "momentum"), (dict(dampening=1.5), "dampening"),
    (dict(beta2=1.0), "beta2"), (dict(eps=0.0), "eps"), (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(split="max"), "split"),
])
def test_invalid_hyperparameters(kw, name):
    with pytest.raises(ValueError, match=rf"SplitSGD: {name} "):
        SplitSGD([torch.nn.Parameter(torch.zeros(2))], **kw)


def test_sparse_gradient_raises():
    emb = torch.nn.Embedding(4, 2, sparse=True)
    opt = SplitSGD(emb.parameters(), lr=0.1)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
