"""Batch sharpness and the mean top batch-Hessian eigenvalue against dense float64 references."""

import math

import pytest
import torch

from oppsig.config import load_config
from oppsig.curvature.batch_sharpness import (
    BatchSharpnessHook,
    batch_curvature,
    batch_sharpness,
    batch_top_eigenvalue,
    sample_batches,
)
from oppsig.data import ArrayDataset
from oppsig.errors import ConfigError, OppsigError
from oppsig.losses import get_loss
from oppsig.training.hooks import TrainState

from ._reference import F64, batch_stat_copy, mean_loss_fn, tiny_cnn, tiny_data, tiny_mlp


def dense_batch(model, batch, loss_fn):
    """(H, g) of one batch's mean loss, by torch.autograd.functional.hessian (BatchNorm on batch statistics)."""
    L, flat0, _ = mean_loss_fn(batch_stat_copy(model), [batch], loss_fn)
    H = torch.autograd.functional.hessian(L, flat0)
    g = torch.autograd.functional.jacobian(L, flat0)
    return H, g


def reference(model, batches, loss_fn):
    """Per batch: (g^T H g / |g|^2, lambda_max(H)), exact in float64."""
    ratios, tops = [], []
    for b in batches:
        H, g = dense_batch(model, b, loss_fn)
        ratios.append(float(g @ H @ g / (g @ g)))
        tops.append(float(torch.linalg.eigvalsh(H)[-1]))
    return torch.tensor(ratios, dtype=F64), torch.tensor(tops, dtype=F64)


def stderr(v):
    return float(v.std() / math.sqrt(v.numel()))


CASES = {
    "mlp-mse": lambda: (tiny_mlp(), tiny_data((6,), n=30), get_loss("mse")),
    "mlp-ce": lambda: (tiny_mlp(seed=3), tiny_data((6,), n=30, seed=2), get_loss("ce")),
    "cnn-batchnorm-ce": lambda: (tiny_cnn(), tiny_data((2, 6, 6), n=20, seed=1), get_loss("ce")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_curvature_matches_dense_hessians(case):
    model, (x, y), loss = CASES[case]()
    model.train()
    batches = sample_batches(x, y, batch_size=6, num_batches=4, seed=1)
    ratios, tops = reference(model, batches, loss)
    assert float((ratios - tops).abs().min()) > 1e-3  # the two measures differ on these batches
    before = [p.detach().clone() for p in model.parameters()]

    c = batch_curvature(model, batches, loss, tol=1e-10, max_iter=200)

    s, e = c.sharpness, c.top_eigenvalue
    assert s.per_batch == pytest.approx(ratios.tolist(), rel=1e-9, abs=1e-12)
    assert s.value == pytest.approx(float(ratios.mean()), rel=1e-9)
    assert s.stderr == pytest.approx(stderr(ratios), rel=1e-7)
    assert s.bound == 0.0 and s.hvps == 4  # one product per batch
    assert e.per_batch == pytest.approx(tops.tolist(), rel=1e-8)
    assert e.value == pytest.approx(float(tops.mean()), rel=1e-8)
    assert e.stderr == pytest.approx(stderr(tops), rel=1e-6)
    assert e.converged and abs(e.value - float(tops.mean())) <= e.bound + 1e-12 and e.hvps >= 4
    assert all(r <= t + 1e-10 for r, t in zip(s.per_batch, e.per_batch))  # a Rayleigh quotient
    # the model is untouched: parameters, .grad, mode
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_single_measures_agree_with_the_combined_one():
    model, (x, y), loss = CASES["mlp-ce"]()
    batches = sample_batches(x, y, 5, 3, seed=4)
    c = batch_curvature(model, batches, loss, tol=1e-10, max_iter=200)
    assert batch_sharpness(model, batches, loss).per_batch == pytest.approx(c.sharpness.per_batch, rel=1e-10)
    top = batch_top_eigenvalue(model, batches, loss, tol=1e-10, max_iter=200)
    assert top.per_batch == pytest.approx(c.top_eigenvalue.per_batch, rel=1e-9)
    one = batch_sharpness(model, batches[:1], loss)
    assert math.isnan(one.stderr) and one.value == pytest.approx(c.sharpness.per_batch[0], rel=1e-10)


def test_sample_batches_is_seeded_and_without_replacement():
    x = torch.arange(50, dtype=F64)[:, None]
    y = torch.arange(50)
    a = sample_batches(x, y, 10, 5, seed=7)
    b = sample_batches(x, y, 10, 5, seed=7)
    c = sample_batches(x, y, 10, 5, seed=8)
    assert all(torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(torch.equal(p[1], q[1]) for p, q in zip(a, c))
    for xb, yb in a:
        assert yb.unique().numel() == 10 and torch.equal(xb[:, 0].long(), yb)
    assert len({tuple(yb.tolist()) for _, yb in a}) == 5  # independent draws


@pytest.mark.parametrize("bad, match", [
    ([], "no mini-batches"),
    ([(torch.zeros(0, 6, dtype=F64), torch.zeros(0, dtype=torch.long))], "has no rows"),
    ([torch.zeros(3, 6, dtype=F64)], "not an \\(x, y\\)"),
])
def test_bad_batches_raise(bad, match):
    with pytest.raises(ConfigError, match=match) as info:
        batch_curvature(tiny_mlp(), bad, get_loss("mse"))
    assert isinstance(info.value, OppsigError)


def test_bad_sampling_arguments_raise():
    x, y = tiny_data((6,), n=10)
    for bs, m, match in [(11, 2, "batch_size 11 must lie in 1..10"), (0, 2, "batch_size 0"),
                         (4, 0, "num_batches must be >= 1")]:
        with pytest.raises(ConfigError, match=match):
            sample_batches(x, y, bs, m)
    with pytest.raises(ConfigError, match="x has 10 rows but y has 9"):
        sample_batches(x, y[:9], 4, 2)
    with pytest.raises(ConfigError, match="num_batches >= 1"):
        BatchSharpnessHook(every=5, num_batches=0)


def test_zero_gradient_batch_raises():
    flat_loss = lambda out, y: (out * 0.0).sum(1)  # noqa: E731  (zero gradient and Hessian everywhere)
    x, y = tiny_data((6,), n=10)
    with pytest.raises(OppsigError, match="mini-batch 0 has a zero gradient"):
        batch_sharpness(tiny_mlp(), sample_batches(x, y, 4, 2), flat_loss)


def hook_state(model, step, n=24):
    cfg = load_config(None, ["optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", "train.batch_size=5",
                             "seed=3"])
    x, y = tiny_data((6,), n=n, seed=5)
    data = ArrayDataset(x=x, y=y, index=torch.arange(n), classes=("a", "b", "c"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return TrainState(step=step, model=model, optimizer=opt, config=cfg, train_data=data,
                      loss_fn=get_loss("ce"), device=torch.device("cpu"), lr=0.05)


def test_hook_measures_seeded_batches_of_the_run_batch_size():
    model = tiny_mlp(seed=2)
    hook = BatchSharpnessHook(every=4, num_batches=3, tol=1e-10, max_iter=200)
    state = hook_state(model, step=8)
    hook.on_step_start(state)
    assert state.metrics == {}  # added at the end of the step
    hook.on_step_end(state)
    m = state.metrics
    # the batches: 3 of train.batch_size = 5 rows, seeded by the run's seed (3) plus the step (8)
    batches = sample_batches(state.train_data.x, state.train_data.y, 5, 3, seed=3 + 8)
    ratios, tops = reference(model, batches, state.loss_fn)
    assert m["batch_sharpness"] == pytest.approx(float(ratios.mean()), rel=1e-9)
    assert m["se/batch_sharpness"] == pytest.approx(stderr(ratios), rel=1e-7)
    assert m["batch_eig"] == pytest.approx(float(tops.mean()), rel=1e-8)
    assert m["converged/batch_eig"] == 1.0 and 0 <= m["err/batch_eig"] <= 1e-6 * m["batch_eig"]
    assert m["batch_hvps"] >= 6 and m["batch_time"] > 0
    assert all(p.grad is None for p in model.parameters()) and model.training

    # a step that is not due adds nothing; a hook that is off never measures
    state.step, state.metrics = 9, {}
    hook.on_step_start(state)
    hook.on_step_end(state)
    assert state.metrics == {}
    off = BatchSharpnessHook(every=0)
    assert not off.is_due(0) and not off.is_due(8)
