import copy
import warnings

import pytest
import torch
from torch import nn

from oppsig.curvature import check_deterministic, full_loss, gradient, loss_and_gradient, make_batches, make_hvp
from oppsig.curvature.hvp import resolve_method
from oppsig.errors import ConfigError, OppsigError

from ._reference import F64, assert_close, dense, index_of, problem, tiny_data

MODELS = ["mlp", "cnn"]
METHODS = ["rev_rev", "fwd_rev"]


def rand(d, k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g, dtype=F64) if k is None else torch.randn(d, k, generator=g, dtype=F64)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_hvp_matches_dense_hessian(dense_ref, name, method):
    model, batches, loss, H, _, _ = dense_ref(name)
    hvp = make_hvp(model, batches, loss, method=method)
    assert hvp.method == method and hvp.layout.dim == H.shape[0]
    V = rand(H.shape[0], 2)
    for j in range(2):
        assert_close(hvp.matvec(V[:, j]), H @ V[:, j], 1e-10, f"{name}/{method} matvec")
    assert_close(hvp.matmat(V), H @ V, 1e-10, f"{name}/{method} matmat")
    hv = hvp(hvp.layout.unflatten(V[:, 0]))
    assert_close(hvp.layout.flatten(hv), H @ V[:, 0], 1e-10, "dict call")
    assert hvp.num_hvps == 5


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_hvp_matches_finite_differences(name, method):
    """Central differences of the analytic gradient, independent of second-order autodiff."""
    from ._reference import batch_stat_copy, mean_loss_fn

    model, batches, loss = problem(name)
    L, flat0, _ = mean_loss_fn(batch_stat_copy(model), batches, loss)
    v = rand(flat0.numel(), seed=5)
    v = v / v.norm()
    eps = 1e-5
    fd = (torch.func.grad(L)(flat0 + eps * v) - torch.func.grad(L)(flat0 - eps * v)) / (2 * eps)
    assert_close(make_hvp(model, batches, loss, method=method).matvec(v), fd, 1e-8, "finite differences")


@pytest.mark.parametrize("name", MODELS)
def test_loss_and_gradient_match_dense(dense_ref, name):
    model, batches, loss, _, g, L = dense_ref(name)
    val, grads = loss_and_gradient(model, batches, loss)
    flat = torch.cat([grads[n].reshape(-1) for n, _ in model.named_parameters()])
    assert_close(flat, g, 1e-12, "gradient")
    assert_close(val, L, 1e-12, "loss")
    assert_close(full_loss(model, batches, loss), L, 1e-12, "full_loss")
    assert set(gradient(model, batches, loss)) == {n for n, _ in model.named_parameters()}


def test_batch_statistics_match_train_mode_autograd():
    """'batch' semantics equal a plain train-mode forward/backward, batch by batch."""
    model, batches, loss = problem("cnn")
    ref = copy.deepcopy(model).train()
    n = sum(x.shape[0] for x, _ in batches)
    for x, y in batches:
        (loss(ref(x), y).sum() / n).backward()
    _, grads = loss_and_gradient(model, batches, loss)
    for name, p in ref.named_parameters():
        assert_close(grads[name], p.grad, 1e-12, name)
    # the copy's running statistics moved, the model's did not
    assert not torch.equal(ref.features[1].running_mean, model.features[1].running_mean)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("train", [True, False])
def test_model_state_untouched(dense_ref, method, train):
    """Also: batchnorm='batch' uses batch statistics in either mode."""
    model, batches, loss = problem("cnn")
    model.train(train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hvp = make_hvp(model, batches, loss, method=method)
    v = rand(hvp.layout.dim)
    assert_close(hvp.matvec(v), dense_ref("cnn")[3] @ v, 1e-10, "batch statistics")
    loss_and_gradient(model, batches, loss)
    assert all(p.grad is None for p in model.parameters())
    assert model.training is train and all(m.training is train for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("method", METHODS)
def test_model_mode_follows_eval_running_stats(method):
    """batchnorm='model' on an eval-mode model: the Hessian of the eval-mode function."""
    model, batches, loss = problem("cnn")
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    from ._reference import hessian, mean_loss_fn

    L, flat0, _ = mean_loss_fn(model, batches, loss)
    H = hessian(L, flat0, reverse_only=True)
    hvp = make_hvp(model, batches, loss, method=method, batchnorm="model")
    v = rand(H.shape[0])
    assert_close(hvp.matvec(v), H @ v, 1e-10, "eval-mode Hessian")
    # and it differs from the batch-statistics Hessian
    assert (make_hvp(model, batches, loss, method=method).matvec(v) - H @ v).abs().max() > 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_parameter_subset_is_diagonal_block(dense_ref, method):
    model, batches, loss, H, _, _ = dense_ref("mlp")
    names = ["net.3.weight", "net.3.bias"]
    idx = index_of(model, names)
    hvp = make_hvp(model, batches, loss, params=names, method=method)
    assert hvp.layout.names == tuple(names) and hvp.layout.dim == len(idx)
    v = rand(len(idx))
    assert_close(hvp.matvec(v), H[idx][:, idx] @ v, 1e-10, "block")
    assert_close(hvp.restrict(["net.3.bias"]).matvec(v[-4:]), H[idx[-4:]][:, idx[-4:]] @ v[-4:], 1e-10, "restrict")


def test_params_dict_sets_the_point():
    model, batches, loss = problem("mlp")
    point = {n: p.detach() + 0.1 for n, p in model.named_parameters()}
    H, _, _ = dense(model, batches, loss, base=point)
    hvp = make_hvp(model, batches, loss, params=point)
    v = rand(H.shape[0])
    assert_close(hvp.matvec(v), H @ v, 1e-10, "moved point")
    assert_close(make_hvp(model, batches, loss).at(point).matvec(v), H @ v, 1e-10, "at()")


def test_float32_copy(dense_ref):
    model, batches, loss, H, _, _ = dense_ref("mlp")
    hvp = make_hvp(model, batches, loss, dtype=torch.float32)
    v = rand(H.shape[0])
    hv = hvp.matvec(v)
    assert hv.dtype == torch.float32 and next(model.parameters()).dtype == F64
    assert_close(hv, H @ v, 1e-4, "float32")


def test_num_examples_scales_the_mean(dense_ref):
    model, batches, loss, H, _, _ = dense_ref("mlp")
    v = rand(H.shape[0])
    assert_close(make_hvp(model, batches, loss, num_examples=24).matvec(v), 0.5 * (H @ v), 1e-10, "N")


def test_deterministic_check():
    model, batches, loss = problem("mlp")
    assert check_deterministic(make_hvp(model, batches, loss)) <= 1e-12
    torch.manual_seed(0)
    drop = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).double().train()
    with pytest.raises(OppsigError, match="dropout"):
        check_deterministic(make_hvp(drop, batches, loss))
    drop.eval()
    check_deterministic(make_hvp(drop, batches, loss))
    assert drop.training is False


def test_errors():
    model, batches, loss = problem("mlp")
    with pytest.raises(ConfigError, match="rev_rev"):
        make_hvp(model, batches, loss, method="forward")
    with pytest.raises(ConfigError, match="batch"):
        make_hvp(model, batches, loss, batchnorm="frozen")
    with pytest.raises(OppsigError, match="did you mean 'net.1.weight'"):
        make_hvp(model, batches, loss, params=["net.1.wieght"])
    with pytest.raises(OppsigError, match=r"\[\(x, y\)\]"):
        make_hvp(model, batches[0], loss)
    with pytest.raises(OppsigError, match="at least one"):
        make_hvp(model, [], loss)
    hvp = make_hvp(model, batches, loss)
    with pytest.raises(OppsigError, match="shape"):
        hvp.matvec(torch.zeros(3, dtype=F64))
    frozen = copy.deepcopy(model).requires_grad_(False)
    with pytest.raises(OppsigError, match="no trainable"):
        make_hvp(frozen, batches, loss)


def test_resolve_method_and_batches():
    assert resolve_method("auto", "cpu") == "rev_rev"
    assert resolve_method("auto", "cuda") == "fwd_rev"
    assert resolve_method("auto", "cuda", cached=True) == "rev_rev"
    assert resolve_method("fwd_rev", "cpu") == "fwd_rev"
    x, y = tiny_data((6,), n=11)
    bs = make_batches(x, y, 4)
    assert [b[0].shape[0] for b in bs] == [4, 4, 3]
    assert [b[0].shape[0] for b in make_batches(x, y, 4, n=9)] == [4, 4, 1]
    with pytest.raises(OppsigError):
        make_batches(x, y, 4, n=20)
    # (index, x, y) triples are accepted
    model, _, loss = problem("mlp")
    trip = [(torch.arange(b[0].shape[0]), b[0], b[1]) for b in bs]
    v = rand(sum(p.numel() for p in model.parameters()))
    assert_close(make_hvp(model, trip, loss).matvec(v), make_hvp(model, bs, loss).matvec(v), 1e-14, "triples")


def test_sequence_model_uses_token_mean_per_example():
    """Language models: an example's loss is the mean over its tokens, as in training."""
    from oppsig.losses import get_loss
    from oppsig.models import build_model

    from ._reference import hessian

    torch.manual_seed(0)
    model = build_model("gpt", (4,), 5, n_layer=1, n_head=1, n_embd=4, dtype=F64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 5, (6, 4), generator=g), torch.randint(0, 5, (6, 4), generator=g)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    loss = get_loss("ce")
    with torch.no_grad():
        expected = loss(model(x), y).mean()
    assert_close(full_loss(model, batches, loss), expected, 1e-12, "token mean")
    params = {n: p.detach() for n, p in model.named_parameters()}
    names, sizes = list(params), [p.numel() for p in params.values()]
    flat0 = torch.cat([p.reshape(-1) for p in params.values()])

    def L(flat):
        p = {n: t.reshape(params[n].shape) for n, t in zip(names, torch.split(flat, sizes))}
        return loss(torch.func.functional_call(model, p, (x,)), y).mean()

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the fused kernel has no second derivatives
        H = hessian(L, flat0, reverse_only=True)
    v = rand(flat0.numel())
    for method in METHODS:
        assert_close(make_hvp(model, batches, loss, method=method).matvec(v), H @ v, 1e-10, f"gpt {method}")


class _SquareNoJvp(torch.autograd.Function):
    """x * x with a backward but no forward-mode rule."""

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _NoJvpNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x):
        return _SquareNoJvp.apply(self.lin(x))


def test_fwd_rev_without_forward_ad():
    torch.manual_seed(0)
    model = _NoJvpNet().double()
    _, batches, loss = problem("mlp")
    v = rand(21)
    ref = make_hvp(model, batches, loss, method="rev_rev").matvec(v)
    with pytest.raises(OppsigError, match="method='rev_rev'"):
        make_hvp(model, batches, loss, method="fwd_rev").matvec(v)
    hvp = make_hvp(model, batches, loss, method="fwd_rev")
    hvp.fallback = True  # what method="auto" sets
    with pytest.warns(RuntimeWarning, match="switched from fwd_rev to rev_rev"):
        assert_close(hvp.matvec(v), ref, 1e-14, "fallback")
    assert hvp.method == "rev_rev" and hvp.switched.startswith("fwd_rev -> rev_rev")


def test_pure_product_functions_match_the_dense_hessian(dense_ref):
    from torch.func import functional_call

    from oppsig.curvature import ggn_vp, hvp_fwd_rev, hvp_rev_rev

    model, batches, loss, H, _, _ = dense_ref("mlp")
    params = {n: p.detach() for n, p in model.named_parameters()}
    n = sum(int(x.shape[0]) for x, _ in batches)

    def f(p):
        return sum(loss(functional_call(model, p, (x,)), y).sum() for x, y in batches) / n

    v = rand(H.shape[0])
    vd = dict(zip(params, torch.split(v, [t.numel() for t in params.values()])))
    vd = {k: t.view_as(params[k]) for k, t in vd.items()}
    for fn in (hvp_fwd_rev, hvp_rev_rev):
        hv = torch.cat([t.reshape(-1) for t in fn(f, params, vd).values()])
        assert_close(hv, H @ v, 1e-10, fn.__name__)
    x, y = batches[0]
    g = ggn_vp(lambda p: functional_call(model, p, (x,)), lambda z: loss(z, y).sum(), params, vd)
    assert set(g) == set(params)


@pytest.mark.parametrize("name", MODELS)
def test_cached_graph_matches_dense_and_is_reused(dense_ref, name):
    model, batches, loss, H, g, L = dense_ref(name)
    V = rand(H.shape[0], 3, seed=4)
    one = [(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))]
    auto_one = make_hvp(model, one, loss, method="rev_rev")
    auto_many = make_hvp(model, batches, loss, method="rev_rev")
    forced = make_hvp(model, batches, loss, method="rev_rev", cache_graph=True)
    assert auto_one.caches and not auto_many.caches and forced.caches
    assert_close(forced.matvec(V[:, 0]), H @ V[:, 0], 1e-10, "cached matvec")
    graph = forced._graph
    assert graph is not None
    assert_close(forced.matmat(V), H @ V, 1e-10, "cached matmat")
    assert forced._graph is graph  # built once for the point
    loss_c, grad_c = forced.loss_and_gradient()
    assert_close(torch.cat([t.reshape(-1) for t in grad_c.values()]), g, 1e-10, "gradient from the cache")
    assert abs(float(loss_c) - float(L)) <= 1e-12
    forced.release()
    assert forced._graph is None
    assert_close(forced.matvec(V[:, 1]), H @ V[:, 1], 1e-10, "rebuilt")
    if name == "mlp":  # one physical batch has the same batch statistics only without BatchNorm
        assert_close(auto_one.matvec(V[:, 2]), H @ V[:, 2], 1e-10, "auto, one batch")
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError, match="cache_graph"):
        make_hvp(model, batches, loss, cache_graph="sometimes")


def test_deterministic_check_sees_through_the_cache():
    model, batches, loss = problem("mlp")
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    torch.manual_seed(0)
    drop = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).double().train()
    hvp = make_hvp(drop, [(x, y)], loss, method="rev_rev")
    v = rand(hvp.layout.dim)
    assert hvp.caches and torch.equal(hvp.matvec(v), hvp.matvec(v))  # one cached dropout mask
    with pytest.raises(OppsigError, match="dropout"):
        check_deterministic(hvp)


def test_rows_and_subsample_are_the_problem_on_those_rows():
    model, batches, loss = problem("mlp")
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    hvp = make_hvp(model, batches, loss, method="rev_rev")
    rows = torch.tensor([11, 0, 6, 3, 7])
    sel = rows.sort().values
    sub = hvp.rows(rows)
    assert [b[0].shape[0] for b in sub.batches] == [5] and sub.num_examples == 5
    ref = make_hvp(model, [(x[sel], y[sel])], loss, method="rev_rev")
    v = rand(hvp.layout.dim, seed=2)
    assert_close(sub.matvec(v), ref.matvec(v), 1e-12, "rows")
    # two shards of the rows with the global count sum to the whole selection
    lo, hi = hvp.rows(sel[:2], num_examples=5), hvp.rows(sel[2:], num_examples=5)
    assert_close(lo.matvec(v) + hi.matvec(v), ref.matvec(v), 1e-12, "sharded rows")
    half = hvp.subsample(0.5, seed=3)
    assert sum(b[0].shape[0] for b in half.batches) == 6 and half.num_examples == 6
    assert torch.equal(half.batches[0][0], hvp.subsample(0.5, seed=3).batches[0][0])  # seeded
    with pytest.raises(OppsigError, match="fraction"):
        hvp.subsample(0.0)
    with pytest.raises(OppsigError, match="row indices"):
        hvp.rows(torch.tensor([12]))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cache", [True, False])
def test_batched_blocks_match_the_dense_hessian(dense_ref, name, method, cache):
    """A block's products in one batched call (is_grads_batched / vmap) equal the dense Hessian's columns."""
    model, batches, loss, H, _, _ = dense_ref(name)
    hvp = make_hvp(model, batches, loss, method=method, cache_graph=cache, batched=True)
    V = rand(H.shape[0], 3, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the loop
        assert_close(hvp.matmat(V), H @ V, 1e-10, f"{name}/{method}/cache={cache} batched")
    assert hvp.unbatched is None and hvp.num_hvps == 3
    assert hvp.restrict(hvp.layout.names[:1]).batched is True


def test_batched_blocks_are_off_on_the_cpu_by_default_and_validated():
    from oppsig.curvature.hvp import batches_blocks

    model, batches, loss = problem("mlp")
    assert make_hvp(model, batches, loss).batched == "auto" and not batches_blocks("auto", "cpu")
    with pytest.raises(ConfigError, match="batched"):
        make_hvp(model, batches, loss, batched="always")


class _NoBatchingRule(torch.autograd.Function):
    """tanh whose double backward has no batching rule under vmap (it reads a value with ``.item()``)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return _NoBatchingGrad.apply(g, y)


class _NoBatchingGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, y):
        ctx.save_for_backward(g, y)
        return g * (1 - y * y)

    @staticmethod
    def backward(ctx, gg):
        g, y = ctx.saved_tensors
        assert gg.abs().max().item() >= 0  # .item() has no batching rule
        return gg * (1 - y * y), gg * g * (-2 * y)


def test_batched_blocks_fall_back_to_the_loop_with_the_same_values():
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(6, 5).double(), nn.Linear(5, 3).double()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = lin1, lin2

        def forward(self, x):
            return self.b(_NoBatchingRule.apply(self.a(x)))

    _, batches, loss = problem("mlp")
    net = Net()
    V = rand(sum(p.numel() for p in net.parameters()), 2, seed=3)
    ref = make_hvp(net, batches, loss, method="rev_rev", batched=False).matmat(V)
    hvp = make_hvp(net, batches, loss, method="rev_rev", batched=True)
    with pytest.warns(RuntimeWarning, match="fell back to one call per column"):
        assert_close(hvp.matmat(V), ref, 1e-14, "fallback")
    assert hvp.unbatched
