"""Top Hessian eigenvalues of a network's training loss: sharpness, per layer and Adam-preconditioned.

- :func:`sharpness`: top-k Hessian eigenvalues of the mean loss;
  :func:`top_hessian_eigs` the same for an existing :class:`~oppsig.curvature.engine.HVP`.
  A cold solve (no previous eigenvectors) is first run on a random
  ``presample`` fraction of the data (products ~10x cheaper) and the full
  solve starts from its block of Ritz vectors: on fc-tanh / 5k CIFAR-10 this
  takes about 8 full products instead of 21 for a random block
  (``benchmarks/bench_sharpness.py``).
- :func:`layerwise_sharpness`: the same for each layer's diagonal Hessian block.
- :func:`preconditioned_sharpness`: top eigenvalues of ``P^{-1/2} H P^{-1/2}``
  with Adam's preconditioner ``P = sqrt(v_hat) + eps``.

The optimisers' stability thresholds to compare them with are in
:mod:`oppsig.curvature.thresholds`.

Example:
    >>> import torch
    >>> from oppsig.losses import get_loss
    >>> lin = torch.nn.Linear(3, 2).double()
    >>> x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))
    >>> r = sharpness(lin, [(x, y)], get_loss("ce"), k=2, tol=1e-8)
    >>> r.eigenvalues.shape, r.converged
    (torch.Size([2]), True)
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import OppsigError
from .engine import HVP
from .hvp import LossFn
from .lanczos import lanczos
from .model_operators import HessianOperator, PreconditionedOperator
from .operators import LinearOperator
from .problem import make_hvp
from .results import EigResult, warm_start

__all__ = [
    "sharpness",
    "top_hessian_eigs",
    "presample_rows",
    "presample_hvp",
    "layer_eigs",
    "layerwise_sharpness",
    "parameter_groups",
    "adam_preconditioner",
    "preconditioned_sharpness",
]


MIN_PRESAMPLE_ROWS = 64  # below this a presample is too noisy to help


def presample_rows(n: int, fraction: float, seed: int) -> torch.Tensor | None:
    """Rows (sorted indices into ``range(n)``) of a cold-start presample, or None when it would be too small.

    The same ``(n, fraction, seed)`` gives the same rows on every process, so
    ranks of a distributed run can each take the rows of their own shard.

    Example:
        >>> presample_rows(1000, 0.1, seed=0).shape
        torch.Size([100])
        >>> presample_rows(100, 0.1, seed=0) is None
        True
    """
    m = round(float(fraction) * int(n))
    if fraction <= 0 or m < MIN_PRESAMPLE_ROWS or m >= n:
        return None
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(int(n), generator=g)[:m].sort().values


def presample_hvp(hvp: HVP, fraction: float, seed: int, shards: Sequence[tuple[int, int]] | None = None,
                  rank: int = 0) -> HVP | None:
    """``hvp`` restricted to a cold-start presample, or None when the presample would be too small.

    The rows are drawn over all the rows of ``shards`` (every process's range
    ``[lo, hi)`` of the global rows; default: this ``hvp``'s rows alone, one
    shard), so the processes of a distributed run take the same ones; ``hvp``
    holds the rows of ``shards[rank]``. None also when some shard would hold none
    of them, alike on every process. ``num_examples`` is scaled by the share of
    the rows drawn.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> from oppsig.curvature import make_hvp
        >>> m = build_model("mlp", (4,), 2, widths=(3,))
        >>> h = make_hvp(m, [(torch.randn(1000, 4), torch.randint(0, 2, (1000,)))], get_loss("ce"))
        >>> presample_hvp(h, 0.1, seed=0).num_rows, presample_hvp(h, 0.01, seed=0)
        (100, None)
    """
    shards = list(shards) if shards is not None else [(0, hvp.num_rows)]
    n = shards[-1][1]
    rows = presample_rows(n, fraction, seed)
    if rows is None or not all(bool(((rows >= a) & (rows < b)).any()) for a, b in shards):
        return None
    lo, hi = shards[rank]
    return hvp.rows(rows[(rows >= lo) & (rows < hi)] - lo, max(1, round(hvp.num_examples * rows.numel() / n)))


def top_hessian_eigs(
    hvp: HVP,
    *,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: torch.Tensor | None = None,
    seed: int = 0,
    criterion: str = "eigenvalue",
    presample: float = 0.1,
    shards: Sequence[tuple[int, int]] | None = None,
    rank: int = 0,
    wrap: Callable[[LinearOperator], LinearOperator] | None = None,
) -> EigResult:
    """Top-``k`` Hessian eigenpairs for ``hvp``: warm from ``v0``, else started from a presample's.

    Without ``v0`` (a cold solve), Lanczos first runs on a random ``presample``
    fraction of the rows (:func:`presample_hvp`; skipped when that is fewer than
    64 rows) to the same tolerance; the full solve starts from its eigenvectors
    (a loose presample solve saves little: its products are cheap, and a poorer
    start costs full products). The presample is another matrix: only its
    block of Ritz vectors is used (:func:`~oppsig.curvature.results.warm_start`,
    the full solve's first block), never its eigenvalues or gap, so every bound
    of the result comes from the full operator's own Ritz values; a full solve
    that certifies after its first block trusts that block to hold the top
    eigenvectors (see :mod:`oppsig.curvature.lanczos`). The result's
    ``extra_work`` counts the presample's products in units of full products
    (rows / all rows).

    Args:
        hvp: the full problem (:func:`~oppsig.curvature.problem.make_hvp`).
        k, tol, max_iter, v0, seed, criterion: as in
            :func:`~oppsig.curvature.lanczos.lanczos`.
        presample: fraction of the rows for a cold start (0: random start).
        shards, rank: where this process's rows lie among all (see :func:`presample_hvp`).
        wrap: applied to every operator (e.g. summing products over processes).

    Returns:
        an :class:`~oppsig.curvature.results.EigResult`.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> from oppsig.curvature import make_hvp
        >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
        >>> x, y = torch.randn(1000, 4, dtype=torch.float64), torch.randint(0, 3, (1000,))
        >>> r = top_hessian_eigs(make_hvp(m, [(x, y)], get_loss("mse")), tol=1e-8)
        >>> 0 < r.extra_work < r.num_matvecs
        True
    """
    wrap = wrap or (lambda op: op)
    extra = 0.0
    coarse = presample_hvp(hvp, presample, seed, shards, rank) if v0 is None and presample > 0 else None
    if coarse is not None:
        c = lanczos(wrap(HessianOperator(coarse)), k=k, tol=tol, max_iter=max_iter, seed=seed,
                    criterion=criterion)
        extra = c.num_matvecs * coarse.num_rows / hvp.num_rows
        v0 = warm_start(c)  # a start only: the presample's gap is not this matrix's
    r = lanczos(wrap(HessianOperator(hvp)), k=k, tol=tol, max_iter=max_iter, v0=v0, seed=seed,
                criterion=criterion)
    r.extra_work = extra
    return r


def sharpness(
    model: nn.Module,
    batches,
    loss_fn: LossFn,
    *,
    method: str = "auto",
    params=None,
    num_examples: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batchnorm: str = "batch",
    **solve,
) -> EigResult:
    """The top-``k`` eigenpairs of the Hessian of the mean loss over ``batches``.

    Args:
        model, batches, loss_fn, params, method, num_examples, dtype, device,
            batchnorm: as in :func:`~oppsig.curvature.problem.make_hvp`.
        solve: ``k``, ``tol``, ``max_iter``, ``v0``, ``seed``,
            ``criterion``, ``presample`` of :func:`top_hessian_eigs` (by default
            ``tol=1e-3`` bounds each eigenvalue's relative error; pass
            ``criterion="residual"`` for accurate eigenvectors too).

    Returns:
        an :class:`~oppsig.curvature.results.EigResult`; ``eigenvectors`` are flat
        over the varying parameters in model order.

    Raises:
        OppsigError / ConfigError: as :func:`make_hvp` and :func:`lanczos`.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
        >>> b = [(torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,)))]
        >>> r = sharpness(m, b, get_loss("mse"), k=2, tol=1e-8)
        >>> r.eigenvalues.shape
        torch.Size([2])
    """
    hvp = make_hvp(model, batches, loss_fn, params, method, num_examples, dtype=dtype, device=device,
                   batchnorm=batchnorm)
    return top_hessian_eigs(hvp, **solve)


def parameter_groups(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Trainable parameters grouped by their module, e.g. ``{"net.1": ["net.1.weight", "net.1.bias"]}``.

    Args:
        names: restrict to these parameter names (default: every trainable parameter).

    Example:
        >>> from oppsig.models import build_model
        >>> list(parameter_groups(build_model("mlp", (4,), 2, widths=(3,))))
        ['net.1', 'net.3']
    """
    groups: dict[str, list[str]] = {}
    keep = None if names is None else set(names)
    for n, p in model.named_parameters():
        if not p.requires_grad or (keep is not None and n not in keep):
            continue
        prefix = n.rpartition(".")[0] or n
        groups.setdefault(prefix, []).append(n)
    return groups


def layerwise_sharpness(
    model: nn.Module,
    batches,
    loss_fn: LossFn,
    *,
    method: str = "auto",
    num_examples: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batchnorm: str = "batch",
    **solve,
) -> dict[str, EigResult]:
    """Top eigenpairs of each parameter group's diagonal Hessian block (the rest held fixed).

    Args:
        model, batches, loss_fn, method, num_examples, dtype, device, batchnorm:
            as in :func:`~oppsig.curvature.problem.make_hvp`.
        solve: ``groups`` (default: :func:`parameter_groups`), ``v0`` (warm
            starts ``{group: (d_g,) or (d_g, j)}``), ``k``, ``tol``, ``max_iter``,
            ``seed``, ``criterion`` of :func:`layer_eigs`.

    Returns:
        ``{group: EigResult}`` with eigenvectors flat over that group's parameters.

    Raises:
        OppsigError: for an unknown parameter name in ``groups``.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 3, widths=(5,), dtype=torch.float64)
        >>> b = [(torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,)))]
        >>> sorted(layerwise_sharpness(m, b, get_loss("mse")))
        ['net.1', 'net.3']
    """
    full = make_hvp(model, batches, loss_fn, None, method, num_examples, dtype=dtype, device=device,
                    batchnorm=batchnorm)
    return layer_eigs(full, **solve)


def layer_eigs(
    hvp: HVP,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    criterion: str = "residual",
    wrap: Callable[[LinearOperator], LinearOperator] | None = None,
) -> dict[str, EigResult]:
    """Top eigenpairs of each parameter group's diagonal block of ``hvp``'s Hessian.

    A group's start ``v0[g]`` is used when it has the block's size and is
    finite; otherwise that group starts from a random vector.

    Args:
        groups: ``{group: [parameter names]}`` (default: :func:`parameter_groups` of ``hvp``'s parameters).
        k, tol, max_iter, seed, criterion: as in :func:`~oppsig.curvature.lanczos.lanczos`.
        v0: warm starts by group (e.g. the previous results' eigenvectors).
        wrap: applied to every operator (e.g. summing products over processes).

    Returns:
        ``{group: EigResult}`` with eigenvectors flat over that group's parameters.

    Raises:
        OppsigError: for an unknown parameter name in ``groups``.
    """
    wrap = wrap or (lambda op: op)
    groups = parameter_groups(hvp.model, hvp.layout.names) if groups is None else groups
    out = {}
    for g, names in groups.items():  # v0[g]: a group's eigenvectors, or warm_start() of its result
        op = wrap(HessianOperator(hvp.restrict(list(names))))
        start = None if v0 is None else v0.get(g)
        warm = start is not None and start.shape[0] == op.dim and bool(torch.isfinite(start).all())
        out[g] = lanczos(op, k=min(k, op.dim), tol=tol, max_iter=max_iter, v0=start if warm else None, seed=seed,
                         criterion=criterion)
    return out


def adam_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module, names: Sequence[str] | None = None,
                        *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Adam's diagonal preconditioner ``P = sqrt(v_hat) + eps`` as a flat ``(d,)`` tensor.

    ``v_hat = exp_avg_sq / (1 - beta2^t)`` (``max_exp_avg_sq`` with amsgrad), read
    from a :class:`torch.optim.Adam` / ``AdamW`` state after ``t`` steps, with the
    betas and eps of each parameter's group; the parameters are in model order
    (or the order of ``names``), matching the Hessian operator's layout.

    Raises:
        OppsigError: when a parameter is not in the optimiser or has no Adam state
            yet (measure after the first step).

    Example:
        >>> m = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.Adam(m.parameters(), lr=0.1)
        >>> m(torch.ones(1, 2)).sum().backward(); opt.step()
        >>> adam_preconditioner(opt, m).shape
        torch.Size([3])
    """
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = list(trainable) if names is None else list(names)
    group_of = {}
    for grp in optimizer.param_groups:
        for p in grp["params"]:
            group_of[id(p)] = grp
    parts = []
    for n in names:
        if n not in trainable:
            raise OppsigError(f"{n!r} is not a trainable parameter of the model; valid names: {', '.join(trainable)}")
        p = trainable[n]
        grp = group_of.get(id(p))
        if grp is None:
            raise OppsigError(f"parameter {n!r} is not optimised by this optimiser; "
                              "pass the optimiser built on model.parameters()")
        st = optimizer.state.get(p, {})
        if "exp_avg_sq" not in st or "step" not in st:
            raise OppsigError(f"the optimiser has no Adam state for {n!r} yet; measure after its first step")
        v = st["max_exp_avg_sq"] if grp.get("amsgrad") and "max_exp_avg_sq" in st else st["exp_avg_sq"]
        t = float(st["step"])
        beta2 = float(grp["betas"][1])
        eps = float(grp["eps"])
        v_hat = v.detach().to(torch.float64) / (1.0 - beta2 ** t)
        parts.append((v_hat.sqrt() + eps).reshape(-1))
    out = torch.cat(parts)
    first = trainable[names[0]]
    return out.to(device=first.device, dtype=dtype or first.dtype)


def preconditioned_sharpness(
    model: nn.Module,
    batches,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: torch.Tensor | None = None,
    seed: int = 0,
    criterion: str = "eigenvalue",
    method: str = "auto",
    num_examples: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batchnorm: str = "batch",
) -> EigResult:
    """Top eigenpairs of ``P^{-1/2} H P^{-1/2}`` with Adam's ``P`` (see :func:`adam_preconditioner`).

    Compare the top eigenvalue with :func:`~oppsig.curvature.thresholds.adam_threshold`. The optimiser state is
    the one after its last step (the preconditioner Adam used at that step).

    Raises:
        OppsigError: when the optimiser has no Adam state yet.

    Example:
        >>> from oppsig.models import build_model
        >>> from oppsig.losses import get_loss
        >>> m = build_model("mlp", (4,), 3, widths=(5,))
        >>> b = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
        >>> opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        >>> get_loss("mse")(m(b[0][0]), b[0][1]).mean().backward(); opt.step(); opt.zero_grad(set_to_none=True)
        >>> preconditioned_sharpness(m, b, get_loss("mse"), opt).eigenvalues.shape
        torch.Size([1])
    """
    hvp = make_hvp(model, batches, loss_fn, None, method, num_examples, dtype=dtype, device=device,
                   batchnorm=batchnorm)
    diag = adam_preconditioner(optimizer, model, hvp.layout.names, dtype=hvp.dtype).to(hvp.device)
    op = PreconditionedOperator(HessianOperator(hvp), diag)
    return lanczos(op, k=k, tol=tol, max_iter=max_iter, v0=v0, seed=seed, criterion=criterion)
