import io

import numpy as np
import pytest
import torch

from oppsig.optim.sam import SAM

A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
W0 = np.array([1.0, -2.0, 0.5])


def _quadratic(w):
    a = torch.tensor(A)
    return 0.5 * w @ a @ w


def _closure(opt, params, fn):
    def closure():
        opt.zero_grad()
        loss = fn(*params)
        loss.backward()
        return loss
    return closure


def _reference(w, steps, rho, lr, momentum, dampening, adaptive=False):
    buf = None
    for _ in range(steps):
        g = A @ w
        if adaptive:
            e = rho * w * w * g / np.linalg.norm(np.abs(w) * g)
        else:
            e = rho * g / np.linalg.norm(g)
        gp = A @ (w + e)
        buf = gp.copy() if buf is None else momentum * buf + (1 - dampening) * gp
        w = w - lr * buf
    return w


@pytest.mark.parametrize("momentum,dampening,adaptive", [(0.0, 0.0, False), (0.9, 0.3, False), (0.9, 0.0, True)])
def test_matches_hand_computed_steps_on_a_quadratic(momentum, dampening, adaptive):
    w = torch.nn.Parameter(torch.tensor(W0))
    opt = SAM([w], rho=0.2, adaptive=adaptive, lr=0.1, momentum=momentum, dampening=dampening)
    closure = _closure(opt, [w], _quadratic)
    losses = [opt.step(closure).item() for _ in range(3)]
    np.testing.assert_allclose(w.detach().numpy(), _reference(W0, 3, 0.2, 0.1, momentum, dampening, adaptive),
                               rtol=0, atol=1e-12)
    # the returned loss is the one at w, before the update
    assert losses[0] == pytest.approx(0.5 * W0 @ A @ W0, abs=1e-12)


def test_two_step_api_and_global_norm():
    x = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    y = torch.nn.Parameter(torch.tensor([[0.0, 4.0]], dtype=torch.float64))
    opt = SAM([{"params": [x]}, {"params": [y]}], rho=0.5, lr=0.1)

    def f(x, y):
        return 0.5 * (x**2).sum() + 0.5 * (y**2).sum()

    _closure(opt, [x, y], f)()
    opt.first_step(zero_grad=True)
    # moved by rho * g / ||g|| with ||g|| = 5 over both tensors
    np.testing.assert_allclose(x.detach().numpy(), [3.3], atol=1e-15)
    np.testing.assert_allclose(y.detach().numpy(), [[0.0, 4.4]], atol=1e-15)
    assert x.grad is None
    with pytest.raises(RuntimeError, match="twice"):
        opt.first_step()
    _closure(opt, [x, y], f)()
    opt.second_step()
    np.testing.assert_allclose(x.detach().numpy(), [3.0 - 0.1 * 3.3], atol=1e-15)
    np.testing.assert_allclose(y.detach().numpy(), [[0.0, 4.0 - 0.1 * 4.4]], atol=1e-15)


def test_second_step_restores_w_exactly():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50))
    w0 = w.detach().clone()
    opt = SAM([w], rho=0.37, lr=0.0)
    (w.sin().sum()).backward()
    opt.first_step()
    assert not torch.equal(w.detach(), w0)
    opt.second_step()  # lr = 0: only the restoration
    assert torch.equal(w.detach(), w0)


def test_rho_zero_is_the_base_optimizer():
    w = torch.nn.Parameter(torch.tensor(W0))
    v = torch.nn.Parameter(torch.tensor(W0))
    sam = SAM([w], rho=0.0, lr=0.1, momentum=0.9)
    sgd = torch.optim.SGD([v], lr=0.1, momentum=0.9)
    for _ in range(4):
        sam.step(_closure(sam, [w], _quadratic))
        sgd.zero_grad()
        _quadratic(v).backward()
        sgd.step()
    assert torch.equal(w.detach(), v.detach())


def test_zero_gradient_does_not_perturb():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = SAM([w], rho=1.0, lr=0.1)
    w.grad = torch.zeros(3)
    opt.first_step()
    assert torch.equal(w.detach(), torch.zeros(3))
    opt.second_step()


def test_errors():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="SAM: rho "):
        SAM([w], rho=-0.1, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        SAM([w], rho=0.1, lr=-0.1)
    with pytest.raises(TypeError, match="base_optimizer"):
        SAM([w], base_optimizer=object, rho=0.1)
    opt = SAM([w], rho=0.1, lr=0.1)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="first_step"):
        opt.second_step()


def test_failing_closure_leaves_w_unperturbed():
    w = torch.nn.Parameter(torch.tensor(W0))
    opt = SAM([w], rho=0.5, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("boom")
        opt.zero_grad()
        loss = _quadratic(w)
        loss.backward()
        return loss

    with pytest.raises(FloatingPointError):
        opt.step(closure)
    assert torch.equal(w.detach(), torch.tensor(W0))
    opt.step(_closure(opt, [w], _quadratic))  # usable again


def test_state_dict_round_trip_weights_only_keeps_momentum():
    w = torch.nn.Parameter(torch.tensor(W0))
    opt = SAM([w], rho=0.2, lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.step(_closure(opt, [w], _quadratic))
    sd = opt.state_dict()
    assert "momentum_buffer" in sd["state"][0]
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    v = torch.nn.Parameter(w.detach().clone())
    opt2 = SAM([v], rho=0.2, lr=0.1, momentum=0.9)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert opt2.base_optimizer.state is opt2.state and opt2.base_optimizer.param_groups is opt2.param_groups
    for _ in range(2):
        opt.step(_closure(opt, [w], _quadratic))
        opt2.step(_closure(opt2, [v], _quadratic))
    assert torch.equal(w.detach(), v.detach())


def test_lr_change_reaches_the_base_optimizer():
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = SAM([w], rho=0.0, lr=0.1)
    for g in opt.param_groups:  # what the training loop's warm-up does
        g["lr"] = 0.5
    opt.step(_closure(opt, [w], lambda w: 0.5 * (w**2).sum()))
    assert float(w.detach()) == pytest.approx(0.5)
