"""Gradient checks on a tiny model with planted opposing features, and spike shares."""

import numpy as np
import pytest
import torch

from oppsig.data import PlantedPair, opposing_signals
from oppsig.losses import get_loss
from oppsig.models import build_model
from oppsig.signals import SignalsError, Spike, group_gradient, spike_shares, verify_pair


@pytest.fixture(scope="module")
def setup():
    # two classes; a large bright sky on 30 % of each: the same feature, opposite labels
    ds = opposing_signals(n=200, num_classes=2, pairs=(PlantedPair("bright_top", 0, 1),), frequency=0.3,
                          magnitude=4.0, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", (3, 32, 32), 2, widths=(16,), activation="tanh")
    return ds, model


def test_opposing_groups_have_negative_gradient_cosine(setup):
    ds, model = setup
    a, b = np.flatnonzero(ds.groups == 0), np.flatnonzero(ds.groups == 1)
    v = verify_pair(model, ds, get_loss("ce"), (a, b), step=7, ids=(3, 4))
    assert v.grad_cosine < -0.5, v
    assert (v.a, v.b, v.step) == (3, 4, 7) and v.grad_norm_a > 0 and v.grad_norm_b > 0
    # control: two halves of the same group (same feature, same label) pull the same way
    assert verify_pair(model, ds, get_loss("ce"), (a[::2], a[1::2])).grad_cosine > 0.5


def test_eigvec_alignment(setup):
    ds, model = setup
    a, b = np.flatnonzero(ds.groups == 0), np.flatnonzero(ds.groups == 1)
    ga = group_gradient(model, ds, get_loss("ce"), a)
    v = verify_pair(model, ds, get_loss("ce"), (a, b), eigvec=-ga)  # sign-free
    assert v.eig_cosine_a == pytest.approx(1.0, abs=1e-5)
    per_param = [t.reshape(p.shape) for t, p in zip(torch.split(ga, [p.numel() for p in model.parameters()]),
                                                      model.parameters())]
    assert verify_pair(model, ds, get_loss("ce"), (a, b), eigvec=per_param).eig_cosine_a == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SignalsError, match="eigvec has 3 entries"):
        verify_pair(model, ds, get_loss("ce"), (a, b), eigvec=torch.ones(3))


def test_gradient_matches_autograd_and_batches(setup):
    ds, model = setup
    rows = np.arange(0, 50, 3)
    g1 = group_gradient(model, ds, get_loss("ce"), rows, batch_size=4)
    x, y = ds.x[torch.as_tensor(rows)], ds.y[torch.as_tensor(rows)]
    ref = torch.autograd.grad(get_loss("ce")(model(x), y).mean(), list(model.parameters()))
    torch.testing.assert_close(g1, torch.cat([r.reshape(-1) for r in ref]), rtol=1e-4, atol=1e-6)


def test_model_left_untouched(setup):
    ds, model = setup
    model.eval()
    before = [p.detach().clone() for p in model.parameters()]
    verify_pair(model, ds, get_loss("mse"), (np.arange(10), np.arange(10, 20)))
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.train()
    verify_pair(model, ds, get_loss("ce"), (np.arange(10), np.arange(10, 20)))
    assert model.training


def test_batchnorm_buffers_untouched():
    ds = opposing_signals(n=40, seed=0)
    model = build_model("cnn", (3, 32, 32), 10, channels=(4,), batchnorm=True).train()
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    verify_pair(model, ds, get_loss("ce"), (np.arange(10), np.arange(10, 20)))
    assert all(torch.equal(buffers[k], b) for k, b in model.named_buffers())


def test_bad_groups(setup):
    ds, model = setup
    with pytest.raises(SignalsError, match="exactly 2 groups, got 1"):
        verify_pair(model, ds, get_loss("ce"), (np.arange(3),))
    with pytest.raises(SignalsError, match="empty"):
        verify_pair(model, ds, get_loss("ce"), (np.arange(3), []))
    with pytest.raises(SignalsError, match=r"rows must lie in 0\.\.199"):
        verify_pair(model, ds, get_loss("ce"), (np.arange(3), [500]))


def test_spike_shares():
    losses = np.ones((10, 4), dtype=np.float32)
    losses[5] = [3.0, 1.0, 2.0, 2.0]  # total rises by (2 + 0 + 1 + 1) / 4 = 1
    spike = Spike(row=5, step=5, onset_row=4, onset_step=4, loss=2.0, trend=1.0, height=1.0, z=9.0)
    assert spike_shares(losses, [spike], [0]) == [pytest.approx(0.5)]
    assert spike_shares(losses, [spike], [2, 3]) == [pytest.approx(0.5)]
    flat = Spike(row=2, step=2, onset_row=1, onset_step=1, loss=1.0, trend=1.0, height=0.0, z=0.0)
    assert np.isnan(spike_shares(losses, [flat], [0])[0])
