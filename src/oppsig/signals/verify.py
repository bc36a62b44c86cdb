"""Verify: gradient evidence that two groups are opposing signals.

For opposing signals the two groups' mean-loss gradients point in nearly
opposite directions (negative cosine), both align with the top Hessian
eigenvector (the direction GD oscillates along), and the groups carry a
disproportionate share of each total-loss spike.

The functions are pure: they differentiate detached copies of the model's
parameters and buffers through :func:`torch.func.functional_call`, so the
model's ``.grad`` fields, parameters, buffers (e.g. batch-norm statistics) and
train/eval mode are left as they were. The model is evaluated in whatever mode
it is in.

Example:
    A linear model ``f(x) = w . x`` at ``w = 0`` under the loss ``(f(x) - y)^2 / 2`` has the
    per-example gradient ``-y x``. Group A (two copies of ``x = (1, 0)``, ``y = 1``) pulls
    along ``(-1, 0)``, group B (``x = (1, 1)``, ``y = -1``) along ``(1, 1)``: their cosine is
    ``-1/sqrt(2)``; against the direction ``(1, 0)`` the sign-free cosines are 1 and ``1/sqrt(2)``.

    >>> import torch
    >>> from oppsig.data import ArrayDataset
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> _ = torch.nn.init.zeros_(model.weight)
    >>> ds = ArrayDataset(x=torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), y=torch.tensor([1.0, 1.0, -1.0]),
    ...                   index=torch.arange(3), classes=("y",))
    >>> half_squared = lambda out, y: 0.5 * (out[:, 0] - y) ** 2
    >>> v = verify_pair(model, ds, half_squared, ([0, 1], [2]), eigvec=torch.tensor([1.0, 0.0]))
    >>> [round(c, 4) for c in (v.grad_cosine, v.eig_cosine_a, v.eig_cosine_b)], round(-(0.5**0.5), 4)
    ([-0.7071, 1.0, 0.7071], -0.7071)
    >>> round(v.grad_norm_a, 4), round(v.grad_norm_b, 4)  # |(-1, 0)|, |(1, 1)|
    (1.0, 1.4142)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.func import functional_call

from .matrix import LossMatrix
from .result import Group, SignalsError, SignalsResult, Spike, Verification
from .spikes import rise_shares


def _rows(g: Any, n: int) -> np.ndarray:
    rows = np.asarray(g.members if isinstance(g, Group) else g, dtype=np.int64).ravel()
    if len(rows) == 0:
        raise SignalsError("a group is empty; expected at least one example row")
    if rows.min() < 0 or rows.max() >= n:
        raise SignalsError(f"group rows must lie in 0..{n - 1}, got {rows.min()}..{rows.max()}")
    return rows


def group_gradient(
    model: torch.nn.Module,
    dataset,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rows: Any,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Flattened gradient of the group's mean loss with respect to the model's parameters.

    Args:
        model: the network (left untouched; see the module docstring).
        dataset: :class:`~oppsig.data.ArrayDataset` (``x``, ``y``).
        loss_fn: per-example loss, ``(outputs, targets) -> (B,)``.
        rows: (m,) rows of the group in ``dataset``, or a :class:`Group`.
        batch_size: rows per forward pass (gradients are accumulated).

    Returns:
        (P,) float tensor, P the number of parameters, in ``named_parameters`` order.

    Raises:
        SignalsError: for an empty group or rows outside the data set.
    """
    rows = _rows(rows, len(dataset))
    named = [(k, p) for k, p in model.named_parameters()]
    if not named:
        raise SignalsError("the model has no parameters to differentiate")
    dev = named[0][1].device
    params = {k: p.detach().clone().requires_grad_(True) for k, p in named}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    total = [torch.zeros_like(p) for p in params.values()]
    idx = torch.as_tensor(rows)
    for s in range(0, len(rows), batch_size):
        sel = idx[s : s + batch_size]
        x = dataset.x[sel].to(dev, dtype=named[0][1].dtype if dataset.x.is_floating_point() else None)
        y = dataset.y[sel].to(dev)
        out = functional_call(model, {**params, **buffers}, (x,))
        loss = loss_fn(out, y).sum() / len(rows)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for t, g in zip(total, grads):
            if g is not None:
                t += g
    return torch.cat([t.reshape(-1) for t in total]).detach()


def _flat_eig(eigvec: Any, p: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(eigvec, (list, tuple)):
        v = torch.cat([torch.as_tensor(e).reshape(-1) for e in eigvec])
    else:
        v = torch.as_tensor(eigvec).reshape(-1)
    if v.numel() != p:
        raise SignalsError(f"eigvec has {v.numel()} entries, expected {p} (one per model parameter)")
    return v.to(device=like.device, dtype=like.dtype)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if float(na) == 0 or float(nb) == 0:
        return float("nan")
    return float((a @ b) / (na * nb))


def verify_pair(
    model: torch.nn.Module,
    dataset,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    groups: Sequence[Any],
    eigvec: Any = None,
    step: int | None = None,
    ids: tuple[int, int] = (0, 1),
    batch_size: int = 1024,
) -> Verification:
    """Gradient cosine of two groups, and their alignment with the top Hessian eigenvector.

    Args:
        model: the network at the step to check (left untouched).
        dataset: the training data set.
        loss_fn: per-example loss.
        groups: two groups: :class:`Group` objects or arrays of rows.
        eigvec: optional top Hessian eigenvector, flat (P,) or one tensor per parameter.
        step: the training step of ``model`` (recorded in the result).
        ids: group ids recorded in the result (taken from the groups when they are :class:`Group`).

    Returns:
        :class:`Verification`. The eigenvector cosines are sign-free (absolute values):
        an eigenvector's sign is arbitrary.

    Raises:
        SignalsError: unless exactly two non-empty groups are given, or when
            ``eigvec`` has the wrong size.
    """
    if len(groups) != 2:
        raise SignalsError(f"verify_pair needs exactly 2 groups, got {len(groups)}")
    ga, gb = groups
    if isinstance(ga, Group) and isinstance(gb, Group):
        ids = (ga.id, gb.id)
    a = group_gradient(model, dataset, loss_fn, ga, batch_size)
    b = group_gradient(model, dataset, loss_fn, gb, batch_size)
    ea = eb = None
    if eigvec is not None:
        v = _flat_eig(eigvec, a.numel(), a)
        ea, eb = abs(_cos(a, v)), abs(_cos(b, v))
    return Verification(
        a=int(ids[0]), b=int(ids[1]), grad_cosine=_cos(a, b),
        grad_norm_a=float(torch.linalg.vector_norm(a)), grad_norm_b=float(torch.linalg.vector_norm(b)),
        eig_cosine_a=ea, eig_cosine_b=eb, step=step,
    )


def with_verifications(result: SignalsResult, verifications: Sequence[Verification]) -> SignalsResult:
    """``result`` with ``verifications`` added, and every reported pair whose check ran and found a
    non-negative gradient cosine moved to the rejected pairs (``failed`` ends with ``"gradient"``).

    Opposing signals pull the parameters apart: their groups' gradients point in
    opposite directions. A pair whose gradients do not, measured on the model, is
    not reported; a check that could not run (NaN cosine) changes nothing, and its
    cause stays in the verification.

    Example:
        >>> from oppsig.signals.result import Pair
        >>> p = Pair(0, 1, corr=-0.9, strength=0.9, swing=1.0, spike_share=1.0, significant=True)
        >>> v = Verification(a=0, b=1, grad_cosine=0.2, grad_norm_a=1.0, grad_norm_b=1.0)
        >>> r = with_verifications(SignalsResult(n_rows=10, n_examples=4, pairs=(p,)), [v])
        >>> len(r.pairs), r.rejected_pairs[0].failed
        (0, ('gradient',))
    """
    bad = {frozenset((v.a, v.b)) for v in verifications if np.isfinite(v.grad_cosine) and v.grad_cosine >= 0}
    keep = tuple(p for p in result.pairs if frozenset((p.a, p.b)) not in bad)
    moved = tuple(dataclasses.replace(p, significant=False, failed=p.failed + ("gradient",))
                  for p in result.pairs if frozenset((p.a, p.b)) in bad)
    return dataclasses.replace(result, pairs=keep, rejected_pairs=moved + tuple(result.rejected_pairs),
                               verifications=tuple(result.verifications) + tuple(verifications))


def spike_shares(
    losses: Any,
    spikes: Sequence[Spike],
    rows: Any,
    total_loss: Any = None,
) -> list[float]:
    """Share of each spike's net total-loss rise (onset to peak) carried by the examples ``rows``.

    Args:
        losses: (R, N) per-example losses (array-like, read in row blocks).
        spikes: spikes of the run (:func:`~oppsig.signals.spikes.detect_spikes`).
        rows: (m,) example columns, or a :class:`Group`.
        total_loss: (R,) total loss (default: the row means of ``losses``).

    Returns:
        One share per spike: ``sum_i (L[peak, i] - L[onset, i]) / N`` over the
        group, divided by ``total[peak] - total[onset]`` (NaN when the total did not rise).

    Raises:
        SignalsError: for a bad loss matrix or rows out of range.
    """
    lm = LossMatrix(losses)
    r, n = lm.shape
    cols = _rows(rows, n)
    lc = lm.columns(cols)
    if total_loss is None:
        total = np.empty(r)
        for s, blk in lm.row_blocks():
            total[s : s + len(blk)] = blk.mean(axis=1, dtype=np.float64)
    else:
        total = np.asarray(total_loss, dtype=np.float64)
    return rise_shares(np.diff(lc.astype(np.float64), axis=0), total, spikes, n)
