"""The Hessian problem of a model on data: :func:`make_hvp`, and the loss and gradient it defines.

:func:`make_hvp` checks and casts a model's parameters and the physical
batches and returns an :class:`~oppsig.curvature.engine.HVP` for
``L(theta) = (1/N) sum_i loss_fn(model(x_i), y_i)``; :func:`loss_and_gradient`,
:func:`gradient` and :func:`full_loss` are the first-order quantities of the
same problem; :func:`check_deterministic` checks that its products are.

Example:
    >>> import torch
    >>> from oppsig.models import build_model
    >>> from oppsig.losses import get_loss
    >>> m = build_model("mlp", (4,), 2, widths=(3,))
    >>> float(full_loss(m, [(torch.randn(5, 4), torch.randint(0, 2, (5,)))], get_loss("ce"))) > 0
    True
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError, OppsigError
from .batches import normalise_batches
from .engine import HVP, check_names
from .hvp import BATCHNORM_MODES, TRISTATE, Batches, LossFn, caches_graph, resolve_method

__all__ = ["make_hvp", "loss_and_gradient", "gradient", "full_loss", "check_deterministic"]


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def make_hvp(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor] | Sequence[str] | None = None,
    method: str = "auto",
    num_examples: int | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batchnorm: str = "batch",
    cache_graph: bool | str = "auto",
    batched: bool | str = "auto",
) -> HVP:
    """Hessian-vector products of ``L(theta) = (1/N) sum_i loss_fn(model(x_i), y_i)``.

    Args:
        model: the network; called through :func:`torch.func.functional_call`,
            never modified (no ``.grad``, mode, or buffer changes).
        batches: a sequence of ``(x, y)`` (or ``(index, x, y)``) physical batches,
            ``x`` (B, ...), ``y`` (B,); the data is the union of them.
        loss_fn: per-example loss ``(B, C), (B,) -> (B,)``.
        params: the point theta and which parameters vary. A dict ``name -> tensor``
            (the values are used as theta), or a list of names (values taken from
            the model). Default: every trainable parameter of the model. A subset
            gives the Hessian block of those parameters, the rest held at the
            model's values.
        method: ``auto``, ``rev_rev`` or ``fwd_rev`` (see the module docstring).
        num_examples: N (default: the number of rows over all batches).
        dtype: computation dtype (default: the model's); parameters, buffers and
            inputs are cast copies, e.g. ``torch.float64`` for references.
        device: computation device (default: the model's).
        batchnorm: ``batch`` (batch statistics of each physical batch, as in
            training; default) or ``model`` (follow the model's mode).
        cache_graph: keep the gradient's graph between ``rev_rev`` products:
            ``auto`` (when the data is one physical batch), True or False (see
            the module docstring).
        batched: a block's products in one batched call: ``auto`` (off the CPU), True or False (see
            :mod:`oppsig.curvature.hvp`).

    Returns:
        an :class:`~oppsig.curvature.engine.HVP`; ``hvp.matvec(v)`` maps ``(d,)`` to ``(d,)``.

    Raises:
        ConfigError: for an unknown ``method``, ``batchnorm``, ``cache_graph`` or ``batched``.
        OppsigError: for unknown parameter names, a model without trainable
            parameters, or malformed batches.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 2, widths=(3,))
        >>> hvp = make_hvp(m, [(torch.randn(5, 4), torch.randint(0, 2, (5,)))], get_loss("ce"),
        ...                params=["net.3.weight", "net.3.bias"])
        >>> hvp.layout.dim
        8
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ConfigError(f"unknown batchnorm mode {batchnorm!r}; "
                          "pass 'batch' (batch statistics) or 'model' (follow the model's mode)")
    for name, value in (("cache_graph", cache_graph), ("batched", batched)):
        if not any(value is c or value == c for c in TRISTATE):
            raise ConfigError(f"unknown {name} {value!r}; pass 'auto', True or False")
    trainable = _trainable(model)
    if not trainable:
        raise OppsigError("the model has no trainable parameters; set requires_grad=True on the ones to analyse")
    first = next(iter(trainable.values()))
    dtype = dtype or first.dtype
    device = torch.device(device) if device is not None else first.device
    fallback = method == "auto"
    bl = normalise_batches(batches, device, dtype)
    method = resolve_method(method, device, cached=caches_graph(cache_graph, len(bl)))
    if params is None:
        chosen = {n: p for n, p in trainable.items()}
    elif isinstance(params, Mapping):
        check_names(params, trainable)
        chosen = {n: params[n] for n in trainable if n in params}  # model order
    else:
        names = [params] if isinstance(params, str) else list(params)
        check_names(names, trainable)
        chosen = {n: trainable[n] for n in trainable if n in set(names)}
    if not chosen:
        raise OppsigError("params selects no parameter; pass a non-empty dict or list of parameter names")
    for n, t in chosen.items():
        if t.shape != trainable[n].shape:
            raise OppsigError(f"params[{n!r}] has shape {tuple(t.shape)}, expected {tuple(trainable[n].shape)}")

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=device, dtype=dtype).clone()

    var = {n: cast(t) for n, t in chosen.items()}
    frozen = {n: cast(t) for n, t in trainable.items() if n not in var}
    # parameters with requires_grad=False are constants too
    frozen.update({n: cast(p) for n, p in model.named_parameters() if n not in trainable})
    n_rows = sum(int(x.shape[0]) for x, _ in bl)
    n_ex = n_rows if num_examples is None else int(num_examples)
    if n_ex <= 0:
        raise OppsigError(f"num_examples must be > 0 (got {num_examples})")
    return HVP(model, bl, loss_fn, var, frozen, method, n_ex, dtype, device, batchnorm, fallback, cache_graph,
               batched=batched)


def loss_and_gradient(model: nn.Module, batches: Batches, loss_fn: LossFn, params=None,
                      num_examples: int | None = None, *, dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None,
                      batchnorm: str = "batch") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean loss and its full-batch gradient, accumulated over physical batches.

    Same arguments as :func:`make_hvp`. Returns ``(loss 0-d tensor, {name: grad})``.

    Raises:
        OppsigError: as :func:`make_hvp`.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 2, widths=(3,))
        >>> loss, g = loss_and_gradient(m, [(torch.randn(5, 4), torch.randint(0, 2, (5,)))], get_loss("ce"))
        >>> sorted(g)[0], loss.dim()
        ('net.1.bias', 0)
    """
    hvp = make_hvp(model, batches, loss_fn, params, "rev_rev", num_examples, dtype=dtype, device=device,
                   batchnorm=batchnorm)
    return hvp.loss_and_gradient()


def gradient(model: nn.Module, batches: Batches, loss_fn: LossFn, params=None, num_examples: int | None = None,
             **kw) -> dict[str, torch.Tensor]:
    """The full-batch gradient of the mean loss, ``{name: tensor}`` (see :func:`loss_and_gradient`)."""
    return loss_and_gradient(model, batches, loss_fn, params, num_examples, **kw)[1]


def full_loss(model: nn.Module, batches: Batches, loss_fn: LossFn, params=None, num_examples: int | None = None,
              **kw) -> torch.Tensor:
    """The mean loss over all batches, a 0-d tensor (see :func:`make_hvp` for the arguments)."""
    return make_hvp(model, batches, loss_fn, params, "rev_rev", num_examples, **kw).loss()


def check_deterministic(hvp: HVP, v: torch.Tensor | None = None, seed: int = 0, rtol: float | None = None) -> float:
    """Check that two products with the same vector agree; return their relative difference.

    Curvature estimates assume ``H`` is a fixed matrix. Dropout in train mode,
    random data augmentation inside the model or loss, or other randomness make
    every product different and the eigensolver meaningless.

    Args:
        hvp: an :class:`~oppsig.curvature.engine.HVP` (or a :class:`~oppsig.curvature.model_operators.HessianOperator`).
        v: the vector ``(d,)`` (default: seeded Gaussian).
        rtol: allowed ``||Hv - Hv'|| / ||Hv||`` (default 1e-4 in float32, 1e-10 in float64).

    Raises:
        OppsigError: when the products differ by more than ``rtol``; the message
            names dropout layers in train mode and data augmentation as causes.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 2, widths=(3,))
        >>> h = make_hvp(m, [(torch.randn(5, 4), torch.randint(0, 2, (5,)))], get_loss("ce"))
        >>> check_deterministic(h) < 1e-4
        True
    """
    hvp = copy.copy(getattr(hvp, "hvp", hvp))
    hvp.cache_graph = False  # a cached forward pass would hide the randomness
    hvp.release()
    d = hvp.layout.dim
    if v is None:
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(d, generator=g, dtype=torch.float64)
    a = hvp.matvec(v)
    b = hvp.matvec(v)
    diff = float((a - b).norm() / a.norm().clamp_min(torch.finfo(a.dtype).tiny))
    tol = rtol if rtol is not None else (1e-10 if hvp.dtype == torch.float64 else 1e-4)
    if not diff <= tol:
        drop = [n or "<root>" for n, m in hvp.model.named_modules()
                if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0]
        where = f" (dropout layers in train mode: {', '.join(drop)})" if drop else ""
        raise OppsigError(
            f"Hessian-vector products are not deterministic (relative difference {diff:.2e} > {tol:.0e}){where}; "
            "put dropout layers in eval mode (or set p=0) and turn off random data augmentation "
            "before measuring curvature"
        )
    return diff
