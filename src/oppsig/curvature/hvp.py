"""Hessian-vector products of the mean training loss, batch by batch.

The objective is the mean loss over all N examples,
``L(theta) = (1/N) sum_i loss(f(x_i; theta), y_i)`` (a sequence's loss is the
mean over its tokens, as in training), evaluated over a sequence
of physical batches ``(x, y)`` so that the whole data set never has to be in one
forward pass. Everything is a pure function of an explicit parameter dict via
:func:`torch.func.functional_call`: the model's own parameters, gradients
(``.grad``), train/eval mode and buffers are never changed.

Two ways to compute ``H v``:

- ``rev_rev`` (double backprop): ``grad(<grad L, v>)`` with
  :func:`torch.autograd.grad` and ``create_graph=True``. Measured on CPU for
  fc-tanh 3072-200-200-10 on 5k CIFAR-10 images at 2.4 gradient evaluations
  per product, 1.25 with the graph cached (below; ``benchmarks/bench_sharpness.py``).
- ``fwd_rev`` (forward-over-reverse): :func:`torch.func.jvp` of
  :func:`torch.func.grad`. About 3.7 gradients per product on the same CPU,
  but it stores no second-order graph, so it needs less memory.
- ``auto``: ``rev_rev`` on CPU (measured faster) and wherever the graph is
  cached (a cached product is a single backward pass, cheaper than any
  forward-over-reverse product); ``fwd_rev`` on CUDA and other accelerators
  when the data spans several physical batches (lower memory; run
  ``benchmarks/bench_sharpness.py --device cuda`` to compare there, and pass
  ``method=`` to choose). Forward-mode AD is missing for some operations (e.g.
  custom autograd Functions without ``jvp``); ``auto`` then switches to
  ``rev_rev`` with a warning and records why (:attr:`~oppsig.curvature.engine.HVP.switched`), while an
  explicit ``fwd_rev`` raises.

The products themselves are pure functions of a scalar function of a parameter
dict: :func:`hvp_fwd_rev` (``torch.func.jvp`` of ``torch.func.grad``),
:func:`hvp_rev_rev` (double backprop) and :func:`ggn_vp` (Gauss-Newton);
this module holds them and :func:`resolve_method`.
:class:`~oppsig.curvature.engine.HVP` is the wrapper that sums them over
physical batches, caches the graph and restricts or subsamples the problem;
:func:`~oppsig.curvature.problem.make_hvp` builds it from a model and data.

Graph cache. With ``rev_rev`` the forward pass and the first backward pass
(``grad L`` with its graph) depend only on theta, not on ``v``. With
``cache_graph=True`` they are built at the first product and kept, so every
further product at this point is one backward pass through that graph:
1.25 gradients instead of 2.4 in the benchmark above. The graph holds every
physical batch's activations at once, so ``auto`` (the default) caches only
when the data is one physical batch (where a product builds the same graph
anyway, so peak memory does not grow); pass ``True`` for several batches when
memory allows, and :meth:`~oppsig.curvature.engine.HVP.release` (or dropping the object) frees it.

Blocks in one call. A block of ``k`` products (``matmat``) goes through one batched call when ``batched`` is on:
``rev_rev`` as one backward pass with ``is_grads_batched`` (:func:`accumulate_vjp_block`), ``fwd_rev`` as
:func:`torch.func.vmap` over the tangents (:func:`hvp_fwd_rev_block`). ``auto`` (the default) batches off the
CPU only: there the columns of a batched call cost what a loop over them costs (``benchmarks/bench_sharpness.py``,
docs/findings.md). Where an operation has no batching rule, the products fall back to the loop with a warning
(the values are the same) and the reason is kept (:attr:`~oppsig.curvature.engine.HVP.unbatched`).

Attention runs on the math backend of ``scaled_dot_product_attention`` during
products (the fused kernels have no second derivatives).

BatchNorm. With ``batchnorm="batch"`` (default) every BatchNorm layer
normalises with the statistics of the current physical batch, as in training
(train-mode semantics), whatever the model's mode; running statistics are
neither used nor updated. The Hessian then depends on the physical batch size,
exactly as the training gradient does, so use the training's physical batch
size. With ``batchnorm="model"`` the layers follow the model's current mode
(eval: running statistics); any in-place update of running statistics goes to
clones made inside each call and is discarded.

Example:
    >>> import torch
    >>> from oppsig.models import build_model
    >>> from oppsig.losses import get_loss
    >>> from oppsig.curvature import make_hvp
    >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
    >>> x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    >>> hvp = make_hvp(m, [(x[:6], y[:6]), (x[6:], y[6:])], get_loss("mse"))
    >>> hvp.matvec(torch.ones(hvp.layout.dim, dtype=torch.float64)).shape
    torch.Size([43])
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..errors import ConfigError

__all__ = [
    "hvp_fwd_rev",
    "hvp_rev_rev",
    "accumulate_vjp",
    "accumulate_vjp_block",
    "hvp_fwd_rev_block",
    "batches_blocks",
    "ggn_vp",
    "resolve_method",
    "caches_graph",
    "METHODS",
]

METHODS = ("auto", "rev_rev", "fwd_rev")
TRISTATE = ("auto", True, False)  # the settings of cache_graph and batched
BATCHNORM_MODES = ("batch", "model")

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Params = Mapping[str, torch.Tensor]


def resolve_method(method: str, device: torch.device | str, cached: bool = False) -> str:
    """The concrete HVP method for ``method`` on ``device``.

    ``auto``: ``rev_rev`` on CPU or when the gradient's graph is ``cached``, else ``fwd_rev``.

    Raises:
        ConfigError: for an unknown method.

    Example:
        >>> resolve_method("auto", "cpu")
        'rev_rev'
    """
    if method not in METHODS:
        raise ConfigError(f"unknown HVP method {method!r}; pass one of {', '.join(METHODS)}")
    if method != "auto":
        return method
    return "rev_rev" if cached or torch.device(device).type == "cpu" else "fwd_rev"


def caches_graph(cache_graph, num_batches: int) -> bool:
    """Whether a ``cache_graph`` setting keeps the graph for data in ``num_batches`` physical batches."""
    return num_batches == 1 if cache_graph == "auto" else bool(cache_graph)


def batches_blocks(batched, device: torch.device | str) -> bool:
    """Whether a ``batched`` setting puts a block's products through one call on ``device`` (``auto``: off the CPU).

    Example:
        >>> batches_blocks("auto", "cpu"), batches_blocks("auto", "cuda"), batches_blocks(True, "cpu")
        (False, True, True)
    """
    return torch.device(device).type != "cpu" if batched == "auto" else bool(batched)


def hvp_fwd_rev(f: Callable[[Params], torch.Tensor], params: Params, v: Params) -> dict[str, torch.Tensor]:
    """``H v`` for the Hessian ``H`` of the scalar ``f`` at ``params``: forward-mode over reverse-mode.

    A pure :mod:`torch.func` function (``jvp`` of ``grad``); nothing is stored
    between calls.

    Args:
        f: a scalar function of a parameter dict, e.g. ``lambda p: loss(functional_call(model, p, x), y)``.
        params, v: dicts ``name -> tensor`` of the same shapes.

    Returns:
        ``{name: (H v)[name]}``.

    Raises:
        NotImplementedError: when forward-mode AD is missing for an operation of ``f``.

    Example:
        >>> f = lambda p: (p["w"] ** 3).sum()
        >>> hvp_fwd_rev(f, {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([1.0, 1.0])})["w"].tolist()
        [6.0, 12.0]
    """
    _, hv = torch.func.jvp(torch.func.grad(f), (dict(params),), (dict(v),))
    return hv


def hvp_fwd_rev_block(f: Callable[[Params], torch.Tensor], params: Params,
                      vs: Sequence[Params]) -> list[dict[str, torch.Tensor]]:
    """``[H v for v in vs]`` in one call: :func:`torch.func.vmap` of :func:`hvp_fwd_rev` over the tangents.

    Raises:
        NotImplementedError: when forward-mode AD is missing for an operation of ``f``.
        RuntimeError: when an operation has no batching rule.

    Example:
        >>> f = lambda p: (p["w"] ** 3).sum()
        >>> out = hvp_fwd_rev_block(f, {"w": torch.tensor([1.0, 2.0])}, [{"w": torch.ones(2)}, {"w": torch.ones(2)}])
        >>> [h["w"].tolist() for h in out]
        [[6.0, 12.0], [6.0, 12.0]]
    """
    stacked = {n: torch.stack([v[n] for v in vs]) for n in params}
    hv = torch.func.vmap(lambda t: hvp_fwd_rev(f, params, t))(stacked)
    return [{n: t[j] for n, t in hv.items()} for j in range(len(vs))]


def hvp_rev_rev(f: Callable[[Params], torch.Tensor], params: Params, v: Params) -> dict[str, torch.Tensor]:
    """``H v`` for the Hessian of the scalar ``f`` at ``params``: double backprop (``grad`` of ``<grad f, v>``).

    Same arguments and result as :func:`hvp_fwd_rev`; works for every
    differentiable operation (no forward-mode AD needed).

    Example:
        >>> f = lambda p: (p["w"] ** 3).sum()
        >>> hvp_rev_rev(f, {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([1.0, 1.0])})["w"].tolist()
        [6.0, 12.0]
    """
    names = list(params)
    with torch.enable_grad():
        p = [params[n].detach().requires_grad_(True) for n in names]
        g = torch.autograd.grad(f(dict(zip(names, p))), p, create_graph=True, allow_unused=True,
                                materialize_grads=True)
        acc = [torch.zeros_like(t) for t in p]
        accumulate_vjp(p, g, [v[n] for n in names], acc, retain=False)
    return dict(zip(names, acc))


def accumulate_vjp(p: Sequence[torch.Tensor], g: Sequence[torch.Tensor], vs: Sequence[torch.Tensor],
                   acc: Sequence[torch.Tensor], retain: bool) -> None:
    """``acc += d<g, v>/dp`` through the graph of ``g`` (nothing when ``g`` is constant in ``p``).

    Args:
        p: the leaf tensors the gradient ``g`` was taken in.
        g: that gradient, built with ``create_graph=True``, one tensor per ``p``.
        vs: the vector ``v``, one tensor per ``p``.
        acc: accumulators, one per ``p``, updated in place.
        retain: keep the graph of ``g`` for further products.
    """
    pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi.requires_grad]
    if not pairs:  # the loss is affine in these parameters
        return
    hv = torch.autograd.grad([gi for gi, _ in pairs], p, grad_outputs=[vi for _, vi in pairs],
                             retain_graph=retain, allow_unused=True, materialize_grads=True)
    for a, h in zip(acc, hv):
        a.add_(h)


def accumulate_vjp_block(p: Sequence[torch.Tensor], g: Sequence[torch.Tensor], cols: Sequence[Sequence[torch.Tensor]],
                         accs: Sequence[Sequence[torch.Tensor]]) -> None:
    """``accs[j] += d<g, cols[j]>/dp`` for every column ``j``, in one backward pass with ``is_grads_batched``.

    The graph of ``g`` is kept (a failed call leaves it whole for the loop of :func:`accumulate_vjp`); it is freed
    with ``g``.

    Raises:
        RuntimeError: when an operation of the graph has no batching rule.
    """
    keep = [i for i, gi in enumerate(g) if gi.requires_grad]
    if not keep:  # the loss is affine in these parameters
        return
    hv = torch.autograd.grad([g[i] for i in keep], p, grad_outputs=[torch.stack([c[i] for c in cols]) for i in keep],
                             retain_graph=True, allow_unused=True, is_grads_batched=True)
    for i, h in enumerate(hv):
        if h is not None:
            for j, acc in enumerate(accs):
                acc[i].add_(h[j])


def ggn_vp(forward: Callable[[Params], torch.Tensor], out_loss: Callable[[torch.Tensor], torch.Tensor],
           params: Params, v: Params) -> dict[str, torch.Tensor]:
    """Generalised Gauss-Newton product ``J^T H_out J v`` of ``out_loss(forward(params))``.

    ``J`` is the Jacobian of the network outputs ``forward(params)`` and
    ``H_out`` the Hessian of the scalar ``out_loss`` in those outputs; pure
    :mod:`torch.func` (``jvp``, then ``jvp`` of ``grad``, then ``vjp``).

    Raises:
        NotImplementedError: when forward-mode AD is missing for an operation of ``forward``.

    Example:
        >>> fwd = lambda p: p["w"] * 2.0
        >>> ggn_vp(fwd, lambda z: (z ** 2).sum() / 2, {"w": torch.ones(2)}, {"w": torch.ones(2)})["w"].tolist()
        [4.0, 4.0]
    """
    out, jv = torch.func.jvp(forward, (dict(params),), (dict(v),))
    _, hjv = torch.func.jvp(torch.func.grad(out_loss), (out.detach(),), (jv,))
    _, vjp_fn = torch.func.vjp(forward, dict(params))
    (gv,) = vjp_fn(hjv)
    return gv
