import io

import numpy as np
import pytest
import torch

from oppsig.optim.signsgd import SignSGD


def test_sign_sgd_hand_example():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64))
    opt = SignSGD([w], lr=0.25)
    w.grad = torch.tensor([1e-6, -40.0, 0.0, 2.0], dtype=torch.float64)
    opt.step()
    np.testing.assert_array_equal(w.detach().numpy(), [0.75, -1.75, 0.5, 2.75])


def test_signum_hand_example_with_weight_decay():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    opt = SignSGD([w], lr=0.1, momentum=0.5, weight_decay=0.5)
    w.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opt.step()
    # g + 0.5 w = [1.5, 0.5]; m = 0.5 * [1.5, 0.5]; step -0.1 * sign(m)
    np.testing.assert_allclose(w.detach().numpy(), [0.9, -1.1])
    w.grad = torch.tensor([-3.0, -1.0], dtype=torch.float64)
    opt.step()
    # g + 0.5 w = [-2.55, -1.55]; m = 0.5 * [0.75, 0.25] + 0.5 * [-2.55, -1.55] = [-0.9, -0.65]
    np.testing.assert_allclose(w.detach().numpy(), [1.0, -1.0])
    np.testing.assert_allclose(opt.state[w]["momentum_buffer"].numpy(), [-0.9, -0.65])
    w.grad = torch.tensor([2.0, 1.0], dtype=torch.float64)
    opt.step()
    # g + 0.5 w = [2.5, 0.5]; m = 0.5 * [-0.9, -0.65] + 0.5 * [2.5, 0.5] = [0.8, -0.075]: the signs differ
    np.testing.assert_allclose(w.detach().numpy(), [0.9, -0.9])


def test_state_dict_round_trip_and_validation():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = SignSGD([w], lr=0.1, momentum=0.9)
    w.grad = torch.tensor([1.0, -1.0])
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2 = SignSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(opt2.state[opt2.param_groups[0]["params"][0]]["momentum_buffer"],
                       opt.state[w]["momentum_buffer"])
    for kw, name in [(dict(lr=-1.0), "lr"), (dict(momentum=1.0), "momentum"),
                     (dict(weight_decay=-1.0), "weight_decay")]:
        with pytest.raises(ValueError, match=f"SignSGD: {name} "):
            SignSGD([w], **kw)
