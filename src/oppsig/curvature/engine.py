"""The :class:`HVP`: Hessian-vector products of the mean loss over physical batches.

An :class:`HVP` holds a fixed point theta of the varying parameters, the
physical batches and the loss, and sums the pure products of
:mod:`oppsig.curvature.hvp` over the batches (``rev_rev`` with an optional
cached graph, or ``fwd_rev`` with a switch to ``rev_rev`` where forward-mode AD
is missing). It also gives the loss and gradient at theta and the same problem
restricted to some parameters, moved to another point or on a subset of rows.
See :mod:`oppsig.curvature.hvp` for the methods, the graph cache and BatchNorm;
build one with :func:`~oppsig.curvature.problem.make_hvp`.

Example:
    >>> import torch
    >>> from oppsig.curvature import make_hvp
    >>> from oppsig.losses import get_loss
    >>> h = make_hvp(torch.nn.Linear(3, 2), [(torch.randn(5, 3), torch.randint(0, 2, (5,)))], get_loss("ce"))
    >>> h.restrict(["weight"]).layout.dim, h.num_rows
    (6, 5)
"""

from __future__ import annotations

import contextlib
import difflib
import warnings
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..errors import OppsigError
from .hvp import (LossFn, accumulate_vjp, accumulate_vjp_block, batches_blocks, caches_graph, ggn_vp, hvp_fwd_rev,
                  hvp_fwd_rev_block)
from .layout import ParamLayout

__all__ = ["HVP", "check_names"]


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


class HVP:
    """Products with the Hessian of the mean loss at a fixed point theta.

    Build it with :func:`~oppsig.curvature.problem.make_hvp`. Vectors are flat over :attr:`layout` (the
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
        batched: ``auto``, True or False: a block's products in one batched call (see
            :mod:`oppsig.curvature.hvp`).
        unbatched: None, or why batched blocks fell back to a loop over their columns.
        num_hvps: products computed so far (columns of a matmat count one each).
    """

    def __init__(self, model: nn.Module, batches: list, loss_fn: LossFn, params: dict[str, torch.Tensor],
                 frozen: dict[str, torch.Tensor], method: str, num_examples: int, dtype: torch.dtype,
                 device: torch.device, batchnorm: str, fallback: bool = False, cache_graph="auto", batched="auto"):
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
        self.batched = batched
        self.switched: str | None = None
        self.unbatched: str | None = None
        self.num_hvps = 0
        self._buffers = self._buffer_dict()
        self._graph: tuple[list[torch.Tensor], list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]] | None = None

    @property
    def caches(self) -> bool:
        """Whether ``rev_rev`` products keep the gradient's graph between calls."""
        return caches_graph(self.cache_graph, len(self.batches))

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
                self._accumulate(p, g, cols, acc, retain=False)
        return acc

    def _blocks(self, cols) -> bool:
        return len(cols) > 1 and self.unbatched is None and batches_blocks(self.batched, self.device)

    def _unbatch(self, e: RuntimeError) -> None:
        if isinstance(e, NotImplementedError):  # forward-mode AD missing: the method's own fallback decides
            raise e
        self.unbatched = str(e).splitlines()[0][:120]
        warnings.warn(f"Hessian-vector products of a block fell back to one call per column: {self.unbatched}",
                      RuntimeWarning, stacklevel=4)

    def _accumulate(self, p, g, cols, acc, retain: bool) -> None:
        """``acc[j] += H_batch cols[j]`` through the gradient graph ``g``: one batched call, or one per column."""
        if self._blocks(cols):
            try:
                accumulate_vjp_block(p, g, cols, acc)
                return
            except RuntimeError as e:  # an operation without a batching rule: the loop below
                self._unbatch(e)
        for j, vs in enumerate(cols):
            accumulate_vjp(p, g, vs, acc[j], retain=retain or j < len(cols) - 1)

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
                self._accumulate(p, g, cols, acc, retain=True)
        return acc

    def _fwd_rev(self, cols: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        names = self.layout.names
        pd = {n: t.detach() for n, t in self.params.items()}
        acc = [self._zeros() for _ in cols]
        for x, y in self.batches:
            def f(q, x=x, y=y):
                return self._batch_loss(q, x, y)
            hvs = None
            if self._blocks(cols):
                try:
                    hvs = hvp_fwd_rev_block(f, pd, [dict(zip(names, vs)) for vs in cols])
                except RuntimeError as e:  # an operation without a batching rule: one call per column
                    self._unbatch(e)
            for j, vs in enumerate(cols):
                hv = hvs[j] if hvs is not None else hvp_fwd_rev(f, pd, dict(zip(names, vs)))
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
        """Generalised Gauss-Newton product ``G v`` (see :class:`~oppsig.curvature.model_operators.GGNOperator`)."""
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

    def _like(self, **changes) -> "HVP":
        """A new problem with this one's settings, ``changes`` (``params``, ``frozen``, ``batches``,
        ``num_examples``) applied."""
        kw = dict(params=self.params, frozen=self.frozen, batches=self.batches, num_examples=self.num_examples)
        kw.update(changes)
        return HVP(self.model, kw["batches"], self.loss_fn, kw["params"], kw["frozen"], self.method,
                   kw["num_examples"], self.dtype, self.device, self.batchnorm, self.fallback, self.cache_graph,
                   batched=self.batched)

    def restrict(self, names: Sequence[str]) -> "HVP":
        """The same problem with only ``names`` varying (the Hessian's diagonal block).

        Raises:
            OppsigError: for a name that is not a varying parameter here.
        """
        check_names(names, self.params)
        keep = {n: self.params[n] for n in names}
        frozen = {**self.frozen, **{n: t for n, t in self.params.items() if n not in keep}}
        return self._like(params=keep, frozen=frozen)

    def at(self, params: Mapping[str, torch.Tensor]) -> "HVP":
        """The same problem at another point (new values of the varying parameters)."""
        check_names(list(params), self.params)
        new = {n: params[n].detach().to(device=self.device, dtype=self.dtype) if n in params else t
               for n, t in self.params.items()}
        return self._like(params=new)

    def subsample(self, fraction: float, seed: int = 0) -> "HVP":
        """The same problem on a random ``fraction`` of the rows: a cheap approximation of ``H``.

        The rows are drawn without replacement (seeded, on the CPU). The mean
        over them estimates the mean over all rows, so ``num_examples`` is scaled
        by the same fraction. A product costs about ``fraction`` of a full one;
        its top eigenvectors are a good start for the full problem (see
        :func:`~oppsig.curvature.spectrum.top_hessian_eigs`).

        Raises:
            OppsigError: unless ``0 < fraction <= 1``.

        Example:
            >>> from oppsig.models import build_model
            >>> from oppsig.losses import get_loss
            >>> from oppsig.curvature import make_batches, make_hvp
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
            >>> from oppsig.curvature import make_batches, make_hvp
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
        return self._like(batches=batches, num_examples=n_ex)


def check_names(names: Iterable[str], valid: Mapping[str, torch.Tensor]) -> None:
    """Raise unless every name is in ``valid``.

    Raises:
        OppsigError: naming the closest valid name, or all of them.
    """
    for n in names:
        if n not in valid:
            close = difflib.get_close_matches(n, list(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid names: {', '.join(valid)}"
            raise OppsigError(f"{n!r} is not a trainable parameter of the model{hint}")
