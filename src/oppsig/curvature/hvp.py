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
  ``rev_rev`` with a warning and records why (:attr:`HVP.switched`), while an
  explicit ``fwd_rev`` raises.

The products themselves are pure functions of a scalar function of a parameter
dict: :func:`hvp_fwd_rev` (``torch.func.jvp`` of ``torch.func.grad``),
:func:`hvp_rev_rev` (double backprop) and :func:`ggn_vp` (Gauss-Newton);
:class:`HVP` is the wrapper that sums them over physical batches, caches the
graph and restricts or subsamples the problem.

Graph cache. With ``rev_rev`` the forward pass and the first backward pass
(``grad L`` with its graph) depend only on theta, not on ``v``. With
``cache_graph=True`` they are built at the first product and kept, so every
further product at this point is one backward pass through that graph:
1.25 gradients instead of 2.4 in the benchmark above. The graph holds every
physical batch's activations at once, so ``auto`` (the default) caches only
when the data is one physical batch (where a product builds the same graph
anyway, so peak memory does not grow); pass ``True`` for several batches when
memory allows, and :meth:`HVP.release` (or dropping the object) frees it.

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
    >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
    >>> x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    >>> hvp = make_hvp(m, [(x[:6], y[:6]), (x[6:], y[6:])], get_loss("mse"))
    >>> hvp.matvec(torch.ones(hvp.layout.dim, dtype=torch.float64)).shape
    torch.Size([43])
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import warnings
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError, OppsigError
from .operators import ParamLayout

__all__ = [
    "hvp_fwd_rev",
    "hvp_rev_rev",
    "ggn_vp",
    "HVP",
    "make_hvp",
    "make_batches",
    "resolve_method",
    "loss_and_gradient",
    "gradient",
    "full_loss",
    "check_deterministic",
    "METHODS",
]

METHODS = ("auto", "rev_rev", "fwd_rev")
CACHE_MODES = ("auto", True, False)
BATCHNORM_MODES = ("batch", "model")

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def make_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None,
                 n: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive ``(x, y)`` slices (views) of the first ``n`` rows, ``batch_size`` rows each.

    Args:
        x: inputs ``(N, ...)``; y: targets ``(N,)`` (or ``(N, T)``).
        batch_size: rows per physical batch (None or <= 0: one batch).
        n: use only the first ``n`` rows (None: all).

    Raises:
        OppsigError: when ``x`` and ``y`` have different numbers of rows or ``n`` exceeds them.

    Example:
        >>> [b[0].shape[0] for b in make_batches(torch.zeros(10, 2), torch.zeros(10), 4)]
        [4, 4, 2]
    """
    if x.shape[0] != y.shape[0]:
        raise OppsigError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; pass matching inputs and targets")
    total = x.shape[0] if n is None else int(n)
    if total > x.shape[0] or total <= 0:
        raise OppsigError(f"asked for n={n} examples but the data has {x.shape[0]}; pass 0 < n <= {x.shape[0]}")
    bs = total if batch_size is None or batch_size <= 0 else int(batch_size)
    return [(x[s : min(s + bs, total)], y[s : min(s + bs, total)]) for s in range(0, total, bs)]


def _normalise_batches(batches, device: torch.device, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for b in batches:
        if not isinstance(b, (tuple, list)) or len(b) not in (2, 3):
            raise OppsigError("each batch must be an (x, y) or (index, x, y) tuple; pass a list of them, e.g. [(x, y)] or make_batches(x, y, batch_size)")
        x, y = (b[1], b[2]) if len(b) == 3 else (b[0], b[1])
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
        out.append((x, y.to(device)))
    if not out:
        raise OppsigError("no batches given; pass at least one (x, y) pair")
    return out


def _caches(cache_graph, num_batches: int) -> bool:
    """Whether a ``cache_graph`` setting keeps the graph for data in ``num_batches`` physical batches."""
    return num_batches == 1 if cache_graph == "auto" else bool(cache_graph)


def _second_order_kernels():
    """Run attention on the math backend of scaled_dot_product_attention.

    The fused CPU/GPU attention kernels have neither double backward nor
    forward-mode AD; the math backend is made of differentiable operations.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


Params = Mapping[str, torch.Tensor]


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
        HVP._accumulate_vjp(p, g, [v[n] for n in names], acc, retain=False)
    return dict(zip(names, acc))


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


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class HVP:
    """Products with the Hessian of the mean loss at a fixed point theta.

    Build it with :func:`make_hvp`. Vectors are flat over :attr:`layout` (the
    varying parameters) or dicts ``name -> tensor``.

    Attributes:
        model: the network (only called functionally).
        layout: names and shapes of the varying parameters (``d = layout.dim``).
        params: the point theta of the varying parameters (detached copies).
        frozen: the other parameters, held fixed.
        batches: the physical batches ``(x, y)`` on ``device`` in ``dtype``.
        num_examples: N, the divisor of the summed loss.
        method: ``rev_rev`` or ``fwd_rev``.
        fallback: switch from ``fwd_rev`` to ``rev_rev`` when forward-mode AD is
            not implemented for an operation of the model (set for ``auto``);
            the switch warns once and is recorded in ``switched``.
        switched: None, or why the method was switched (``"fwd_rev -> rev_rev: ..."``).
        cache_graph: ``auto``, True or False (see the module docstring).
        num_hvps: products computed so far (columns of a matmat count one each).
    """

    def __init__(self, model: nn.Module, batches: list, loss_fn: LossFn, params: dict[str, torch.Tensor],
                 frozen: dict[str, torch.Tensor], method: str, num_examples: int, dtype: torch.dtype,
                 device: torch.device, batchnorm: str, fallback: bool = False, cache_graph="auto"):
        self.model = model
        self.batches = batches
        self.loss_fn = loss_fn
        self.params = params
        self.frozen = frozen
        self.layout = ParamLayout.from_dict(params)
        self.method = method
        self.num_examples = int(num_examples)
        self.dtype = dtype
        self.device = device
        self.batchnorm = batchnorm
        self.fallback = fallback
        self.cache_graph = cache_graph
        self.switched: str | None = None
        self.num_hvps = 0
        self._buffers = self._buffer_dict()
        self._graph: tuple[list[torch.Tensor], list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]] | None = None

    @property
    def caches(self) -> bool:
        """Whether ``rev_rev`` products keep the gradient's graph between calls."""
        return _caches(self.cache_graph, len(self.batches))

    @property
    def num_rows(self) -> int:
        """Rows over all physical batches."""
        return sum(int(x.shape[0]) for x, _ in self.batches)

    def release(self) -> None:
        """Free the cached graph (the next product rebuilds it)."""
        self._graph = None

    # ---------------------------------------------------------------- forward
    def _buffer_dict(self) -> dict[str, torch.Tensor | None]:
        bufs: dict[str, torch.Tensor | None] = {}
        bn_prefixes = set()
        if self.batchnorm == "batch":
            bn_prefixes = {name for name, mod in self.model.named_modules()
                           if isinstance(mod, nn.modules.batchnorm._BatchNorm)}
        for name, b in self.model.named_buffers():
            prefix, _, leaf = name.rpartition(".")
            if prefix in bn_prefixes and leaf in ("running_mean", "running_var"):
                bufs[name] = None  # batch statistics, nothing to update
                continue
            bufs[name] = b.detach().to(device=self.device, dtype=self.dtype) if b.is_floating_point() \
                else b.detach().to(self.device)
        return bufs

    def _forward(self, p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        # clone buffers inside the call: in-place updates (BatchNorm in train mode) hit the clones
        bufs = {k: (None if v is None else v.clone()) for k, v in self._buffers.items()}
        return functional_call(self.model, ({**self.frozen, **p}, bufs), (x,))

    def _summed_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``sum_i loss_i / N`` over the batch; a sequence's loss is the mean over its tokens (as in training)."""
        per = self.loss_fn(out, y)
        if per.dim() > 1:
            per = per.flatten(1).mean(1)
        return per.sum() / self.num_examples

    def _batch_loss(self, p: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._summed_loss(self._forward(p, x), y)

    # ---------------------------------------------------------------- products
    def _as_list(self, v) -> list[torch.Tensor]:
        if isinstance(v, Mapping):
            v = self.layout.flatten(v)
        v = torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
        return list(self.layout.unflatten(v).values())

    def _zeros(self) -> list[torch.Tensor]:
        return [torch.zeros_like(p) for p in self.params.values()]

    def _rev_rev(self, cols: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        if self.caches:
            return self._rev_rev_cached(cols)
        names = self.layout.names
        acc = [self._zeros() for _ in cols]
        with torch.enable_grad():
            p = [t.detach().requires_grad_(True) for t in self.params.values()]
            pd = dict(zip(names, p))
            for x, y in self.batches:
                loss = self._batch_loss(pd, x, y)
                g = torch.autograd.grad(loss, p, create_graph=True, allow_unused=True, materialize_grads=True)
                for j, vs in enumerate(cols):
                    self._accumulate_vjp(p, g, vs, acc[j], retain=j < len(cols) - 1)
        return acc

    @staticmethod
    def _accumulate_vjp(p, g, vs, acc, retain: bool) -> None:
        """``acc += d<g, v>/dp`` through the graph of ``g`` (nothing when ``g`` is constant in ``p``)."""
        pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi.requires_grad]
        if not pairs:  # the loss is affine in these parameters
            return
        hv = torch.autograd.grad([gi for gi, _ in pairs], p, grad_outputs=[vi for _, vi in pairs],
                                 retain_graph=retain, allow_unused=True, materialize_grads=True)
        for a, h in zip(acc, hv):
            a.add_(h)

    def _build_graph(self):
        if self._graph is None:
            with torch.enable_grad():
                p = [t.detach().requires_grad_(True) for t in self.params.values()]
                pd = dict(zip(self.layout.names, p))
                per_batch = []
                for x, y in self.batches:
                    loss = self._batch_loss(pd, x, y)
                    g = torch.autograd.grad(loss, p, create_graph=True, allow_unused=True, materialize_grads=True)
                    per_batch.append((loss.detach(), g))
            self._graph = (p, per_batch)
        return self._graph

    def _rev_rev_cached(self, cols: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        p, per_batch = self._build_graph()
        acc = [self._zeros() for _ in cols]
        with torch.enable_grad():
            for _, g in per_batch:
                for j, vs in enumerate(cols):
                    self._accumulate_vjp(p, g, vs, acc[j], retain=True)
        return acc

    def _fwd_rev(self, cols: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        names = self.layout.names
        pd = {n: t.detach() for n, t in self.params.items()}
        acc = [self._zeros() for _ in cols]
        for x, y in self.batches:
            for j, vs in enumerate(cols):
                hv = hvp_fwd_rev(lambda q: self._batch_loss(q, x, y), pd, dict(zip(names, vs)))
                for a, n in zip(acc[j], names):
                    a.add_(hv[n])
        return acc

    def _products(self, cols: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        self.num_hvps += len(cols)
        with _second_order_kernels():
            if self.method == "fwd_rev":
                try:
                    return self._fwd_rev(cols)
                except NotImplementedError as e:
                    reason = str(e).splitlines()[0][:120]
                    if not self.fallback:
                        raise OppsigError(f"forward-mode AD is not implemented for an operation of this model "
                                          f"({reason}); pass method='rev_rev'") from None
                    self.method = "rev_rev"
                    self.switched = f"fwd_rev -> rev_rev: forward-mode AD not implemented ({reason})"
                    warnings.warn(f"Hessian-vector products switched from fwd_rev to rev_rev for this problem: "
                                  f"forward-mode AD is not implemented for an operation of the model ({reason}); "
                                  "pass method='rev_rev' to choose it", RuntimeWarning, stacklevel=3)
            return self._rev_rev(cols)

    def __call__(self, v: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``H v`` for a dict ``v`` over the varying parameters -> dict of the same shapes."""
        (hv,) = self._products([self._as_list(v)])
        return dict(zip(self.layout.names, hv))

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat ``v`` of shape ``(d,)`` -> ``(d,)``.

        Raises:
            OppsigError: when ``v`` does not have shape ``(d,)``.
        """
        (hv,) = self._products([self._as_list(v)])
        return torch.cat([h.reshape(-1) for h in hv])

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for ``V`` of shape ``(d, k)`` -> ``(d, k)``.

        With ``rev_rev`` the forward pass and first backward pass of each
        physical batch are shared by the ``k`` columns.

        Raises:
            OppsigError: when ``V`` does not have shape ``(d, k)``.
        """
        if V.dim() != 2 or V.shape[0] != self.layout.dim:
            raise OppsigError(f"expected a ({self.layout.dim}, k) matrix, got shape {tuple(V.shape)}")
        out = self._products([self._as_list(V[:, j]) for j in range(V.shape[1])])
        return torch.stack([torch.cat([h.reshape(-1) for h in hv]) for hv in out], dim=1)

    def ggn_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Generalised Gauss-Newton product ``G v`` (see :class:`~oppsig.curvature.operators.GGNOperator`)."""
        names = self.layout.names
        vs = dict(zip(names, self._as_list(v)))
        pd = {n: t.detach() for n, t in self.params.items()}
        acc = self._zeros()
        self.num_hvps += 1
        with _second_order_kernels():
            self._ggn_accumulate(pd, vs, acc)
        return torch.cat([a.reshape(-1) for a in acc])

    def _ggn_accumulate(self, pd, vs, acc) -> None:
        names = self.layout.names
        for x, y in self.batches:
            try:
                gv = ggn_vp(lambda q: self._forward(q, x), lambda z: self._summed_loss(z, y), pd, vs)
            except NotImplementedError as e:
                raise OppsigError(f"Gauss-Newton products need forward-mode AD, not implemented for an operation of "
                                  f"this model ({str(e).splitlines()[0][:120]}); use the Hessian instead") from None
            for a, n in zip(acc, names):
                a.add_(gv[n])

    # ---------------------------------------------------------------- first order
    def loss(self) -> torch.Tensor:
        """The mean loss L(theta), a 0-d tensor."""
        with torch.no_grad():
            return sum(self._batch_loss(self.params, x, y) for x, y in self.batches)

    def loss_and_gradient(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(L(theta), grad L(theta))``; the gradient is over the varying parameters."""
        if self._graph is not None:  # already computed with the cached graph
            _, per_batch = self._graph
            total = sum(loss for loss, _ in per_batch)
            grads = [sum(g[i].detach() for _, g in per_batch) for i in range(len(self.layout.names))]
            return total, dict(zip(self.layout.names, grads))
        total = torch.zeros((), device=self.device, dtype=self.dtype)
        acc = self._zeros()
        with torch.enable_grad():
            p = [t.detach().requires_grad_(True) for t in self.params.values()]
            pd = dict(zip(self.layout.names, p))
            for x, y in self.batches:
                loss = self._batch_loss(pd, x, y)
                g = torch.autograd.grad(loss, p, allow_unused=True, materialize_grads=True)
                total += loss.detach()
                for a, gi in zip(acc, g):
                    a.add_(gi)
        return total, dict(zip(self.layout.names, acc))

    def restrict(self, names: Sequence[str]) -> "HVP":
        """The same problem with only ``names`` varying (the Hessian's diagonal block).

        Raises:
            OppsigError: for a name that is not a varying parameter here.
        """
        _check_names(names, self.params)
        keep = {n: self.params[n] for n in names}
        frozen = {**self.frozen, **{n: t for n, t in self.params.items() if n not in keep}}
        return HVP(self.model, self.batches, self.loss_fn, keep, frozen, self.method, self.num_examples,
                   self.dtype, self.device, self.batchnorm, self.fallback, self.cache_graph)

    def at(self, params: Mapping[str, torch.Tensor]) -> "HVP":
        """The same problem at another point (new values of the varying parameters)."""
        _check_names(list(params), self.params)
        new = {n: params[n].detach().to(device=self.device, dtype=self.dtype) if n in params else t
               for n, t in self.params.items()}
        return HVP(self.model, self.batches, self.loss_fn, new, self.frozen, self.method, self.num_examples,
                   self.dtype, self.device, self.batchnorm, self.fallback, self.cache_graph)

    def subsample(self, fraction: float, seed: int = 0) -> "HVP":
        """The same problem on a random ``fraction`` of the rows: a cheap approximation of ``H``.

        The rows are drawn without replacement (seeded, on the CPU). The mean
        over them estimates the mean over all rows, so ``num_examples`` is scaled
        by the same fraction. A product costs about ``fraction`` of a full one;
        its top eigenvectors are a good start for the full problem (see
        :func:`~oppsig.curvature.quantities.top_hessian_eigs`).

        Raises:
            OppsigError: unless ``0 < fraction <= 1``.

        Example:
            >>> from oppsig.models import build_model
            >>> from oppsig.losses import get_loss
            >>> m = build_model("mlp", (4,), 2, widths=(3,))
            >>> h = make_hvp(m, make_batches(torch.randn(100, 4), torch.randint(0, 2, (100,)), 30), get_loss("ce"))
            >>> s = h.subsample(0.2, seed=0)
            >>> [x.shape[0] for x, _ in s.batches], s.num_examples
            ([20], 20)
        """
        if not 0.0 < float(fraction) <= 1.0:
            raise OppsigError(f"subsample fraction {fraction} must lie in (0, 1]")
        n_rows = self.num_rows
        m = max(1, round(float(fraction) * n_rows))
        g = torch.Generator().manual_seed(int(seed))
        rows = torch.randperm(n_rows, generator=g)[:m]
        return self.rows(rows, max(1, round(self.num_examples * m / n_rows)))

    def rows(self, rows: torch.Tensor, num_examples: int | None = None) -> "HVP":
        """The same problem on the given rows (indices into the concatenated batches).

        The rows are re-split into physical batches of the first batch's size;
        ``num_examples`` is the new divisor N (default: the number of rows).

        Raises:
            OppsigError: for an index out of range or no rows.

        Example:
            >>> from oppsig.models import build_model
            >>> from oppsig.losses import get_loss
            >>> m = build_model("mlp", (4,), 2, widths=(3,))
            >>> h = make_hvp(m, make_batches(torch.randn(10, 4), torch.randint(0, 2, (10,)), 4), get_loss("ce"))
            >>> r = h.rows(torch.tensor([9, 0, 5]), num_examples=10)  # e.g. this process's rows of a global mean
            >>> [x.shape[0] for x, _ in r.batches], r.num_examples
            ([3], 10)
        """
        sizes = [int(x.shape[0]) for x, _ in self.batches]
        n_rows = sum(sizes)
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1).sort().values
        if rows.numel() == 0 or int(rows[0]) < 0 or int(rows[-1]) >= n_rows:
            raise OppsigError(f"row indices must be a non-empty selection of 0..{n_rows - 1}")
        bs = sizes[0]
        starts = torch.tensor([0] + sizes[:-1]).cumsum(0)
        which = torch.searchsorted(starts, rows, right=True) - 1
        xs, ys = [], []
        for b, (x, y) in enumerate(self.batches):
            local = rows[which == b] - starts[b]
            if local.numel():
                xs.append(x.index_select(0, local.to(x.device)))
                ys.append(y.index_select(0, local.to(y.device)))
        x, y = torch.cat(xs), torch.cat(ys)
        m = int(x.shape[0])
        batches = [(x[s : s + bs], y[s : s + bs]) for s in range(0, m, bs)]
        n_ex = m if num_examples is None else int(num_examples)
        return HVP(self.model, batches, self.loss_fn, self.params, self.frozen, self.method, n_ex,
                   self.dtype, self.device, self.batchnorm, self.fallback, self.cache_graph)


def _check_names(names: Iterable[str], valid: Mapping[str, torch.Tensor]) -> None:
    for n in names:
        if n not in valid:
            close = difflib.get_close_matches(n, list(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid names: {', '.join(valid)}"
            raise OppsigError(f"{n!r} is not a trainable parameter of the model{hint}")


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

    Returns:
        an :class:`HVP`; ``hvp.matvec(v)`` maps ``(d,)`` to ``(d,)``.

    Raises:
        ConfigError: for an unknown ``method``, ``batchnorm`` or ``cache_graph``.
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
        raise ConfigError(f"unknown batchnorm mode {batchnorm!r}; pass 'batch' (batch statistics) or 'model' (follow the model's mode)")
    if not any(cache_graph is c or cache_graph == c for c in CACHE_MODES):
        raise ConfigError(f"unknown cache_graph {cache_graph!r}; pass 'auto', True or False")
    trainable = _trainable(model)
    if not trainable:
        raise OppsigError("the model has no trainable parameters; set requires_grad=True on the ones to analyse")
    first = next(iter(trainable.values()))
    dtype = dtype or first.dtype
    device = torch.device(device) if device is not None else first.device
    fallback = method == "auto"
    bl = _normalise_batches(batches, device, dtype)
    method = resolve_method(method, device, cached=_caches(cache_graph, len(bl)))
    if params is None:
        chosen = {n: p for n, p in trainable.items()}
    elif isinstance(params, Mapping):
        _check_names(params, trainable)
        chosen = {n: params[n] for n in trainable if n in params}  # model order
    else:
        names = [params] if isinstance(params, str) else list(params)
        _check_names(names, trainable)
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
    return HVP(model, bl, loss_fn, var, frozen, method, n_ex, dtype, device, batchnorm, fallback, cache_graph)


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
        hvp: an :class:`HVP` (or a :class:`~oppsig.curvature.operators.HessianOperator`).
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
    hvp.cache_graph, hvp._graph = False, None  # a cached forward pass would hide the randomness
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
            "put dropout layers in eval mode (or set p=0) and turn off random data augmentation before measuring curvature"
        )
    return diff
