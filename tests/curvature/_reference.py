"""Dense float64 references for the curvature tests (independent of oppsig.curvature)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from oppsig.losses import get_loss
from oppsig.models import build_model

F64 = torch.float64


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", (6,), 3, widths=(5, 4), activation="tanh", dtype=F64)


def tiny_cnn(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", (2, 6, 6), 3, channels=(3,), activation="tanh", batchnorm=True, dtype=F64)


def tiny_data(input_shape, n: int = 12, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *input_shape, generator=g, dtype=F64)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def split(x, y, sizes=(5, 5, 2)):
    out, s = [], 0
    for b in sizes:
        out.append((x[s : s + b], y[s : s + b]))
        s += b
    assert s == x.shape[0]
    return out


def problem(name: str):
    """(model, batches, loss_fn) of a tiny problem with three physical batches."""
    if name == "mlp":
        model, (x, y), loss = tiny_mlp(), tiny_data((6,)), get_loss("mse")
    else:
        model, (x, y), loss = tiny_cnn(), tiny_data((2, 6, 6), seed=1), get_loss("ce")
    model.train()
    return model, split(x, y), loss


def batch_stat_copy(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorm layers always use batch statistics (no running stats)."""
    ref = copy.deepcopy(model).train()
    for m in ref.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
    return ref


def mean_loss_fn(model: nn.Module, batches, loss_fn, names=None, base=None):
    """(L(flat), flat0, names): the mean loss as a function of the flat parameters ``names``."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    if base is not None:
        params.update({n: t.detach().clone() for n, t in base.items()})
    names = list(params) if names is None else list(names)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat0 = torch.cat([params[n].reshape(-1) for n in names])
    n_ex = sum(x.shape[0] for x, _ in batches)
    bufs = dict(model.named_buffers())

    def L(flat):
        p = dict(params)
        for n, s, piece in zip(names, shapes, torch.split(flat, sizes)):
            p[n] = piece.reshape(s)
        total = 0.0
        for x, y in batches:
            total = total + loss_fn(functional_call(model, (p, bufs), (x,)), y).sum()
        return total / n_ex

    return L, flat0, names


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def hessian(L, flat0: torch.Tensor, reverse_only: bool) -> torch.Tensor:
    """torch.func.hessian, or torch.autograd.functional.hessian (row by row) when ``reverse_only``.

    Use ``reverse_only`` for BatchNorm and for models without forward-mode AD
    (PyTorch's fused CPU attention).

    In torch 2.13 the vmapped transforms (torch.func.hessian and also
    jacrev(jacrev)) return a non-symmetric, wrong matrix for BatchNorm on batch
    statistics (rows of the BatchNorm weight), while the unbatched
    torch.autograd.functional.hessian, single jvp-of-grad products and finite
    differences of the gradient agree with each other.
    """
    H = torch.autograd.functional.hessian(L, flat0) if reverse_only else torch.func.hessian(L)(flat0)
    assert float((H - H.T).abs().max()) <= 1e-12 * max(1.0, float(H.abs().max())), "reference Hessian not symmetric"
    return H


def dense(model: nn.Module, batches, loss_fn, names=None, base=None):
    """(H, grad, loss) of the mean loss (see :func:`hessian`), BatchNorm on batch statistics."""
    ref = batch_stat_copy(model)
    L, flat0, _ = mean_loss_fn(ref, batches, loss_fn, names, base)
    H = hessian(L, flat0, reverse_only=has_batchnorm(model))
    g = torch.func.grad(L)(flat0)
    return H, g, L(flat0).detach()


def index_of(model: nn.Module, names):
    """Positions of the parameters ``names`` in the flat vector of all trainable parameters."""
    idx, s = [], 0
    for n, p in model.named_parameters():
        if n in names:
            idx.extend(range(s, s + p.numel()))
        s += p.numel()
    return torch.tensor(idx)


def assert_close(a, b, tol, what=""):
    """max |a - b| <= tol * max(1, max |b|)."""
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    err = float((a - b).abs().max()) if a.numel() else 0.0
    scale = max(1.0, float(b.abs().max()) if b.numel() else 1.0)
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:.1e} * {scale:.3g}"
