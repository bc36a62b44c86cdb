"""The hot path: one gradient evaluation, full-batch or mini-batch, with per-example losses for free.

``full_batch_backward`` accumulates the gradient of the mean loss over the whole
data set in physical batches: each batch contributes ``sum(loss_i) / N`` to
``.grad``, so the result equals one big batch (up to float rounding) whatever
the physical batch size. The per-example losses come from the same forward.

Around it, what one training step needs: the rows of a step (:func:`batch_rows`,
:func:`step_batch`, with their images augmented when ``data.augment`` asks: :mod:`oppsig.data.augment`),
the gradient of those rows over all ranks (:func:`gradient`, in bfloat16 autocast when
``train.autocast=bf16``: :func:`precision`) and the optimiser step (:func:`optimizer_step`: SAM
evaluates a second gradient at its ascent point).
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from ..data.augment import augment
from ..losses import LossFn
from ..optim import SAM


_NULL = nullcontext()


def full_batch_backward(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    physical_batch_size: int,
    rows: torch.Tensor | None = None,
    want_logits: bool = False,
    denominator: int | None = None,
    sync=None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Backward of the mean loss over ``x[rows]`` (all rows by default), in physical batches.

    Gradients are accumulated into the parameters' ``.grad`` (call
    ``optimizer.zero_grad()`` first). Each physical batch adds
    ``sum(loss_i) / denominator`` (default: the number of rows), so a rank of a
    distributed run passes ``global_rows / world`` to get the global mean after
    DDP's averaging. ``sync(is_last)`` returns a context manager for each
    physical batch (e.g. DDP's ``no_sync`` for all but the last one).
    ``weights`` (rows of ``x``) scale each example's contribution to the
    gradient (interventions); the returned losses stay unweighted.

    Returns:
        per-example losses (B,) detached, per-example accuracy float (B,) (the fraction
        of its targets predicted right: 0 or 1 for a classification, the share of
        tokens for a sequence), and the logits (B, C) when ``want_logits``.
    """
    n = x.shape[0] if rows is None else rows.shape[0]
    bs = physical_batch_size if physical_batch_size and physical_batch_size > 0 else n
    losses = torch.empty(n, device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    accuracy = torch.empty(n, device=x.device, dtype=torch.float32)
    logits = [] if want_logits else None
    denom = n if denominator is None else denominator
    starts = list(range(0, n, bs))
    for s in starts:
        if rows is None:
            xb, yb = x[s : s + bs], y[s : s + bs]
            wb = None if weights is None else weights[s : s + bs]
        else:
            r = rows[s : s + bs]
            xb, yb = x[r], y[r]
            wb = None if weights is None else weights[r]
        with sync(s == starts[-1]) if sync is not None else _NULL:
            out = model(xb)
            if out.is_floating_point() and out.dtype != losses.dtype:  # autocast: the loss in the record's dtype
                out = out.to(losses.dtype)
            lb = loss_fn(out, yb)
            # one value per example (for sequences: the mean over its tokens)
            per = lb if lb.dim() == 1 else lb.flatten(1).mean(1)
            ((per if wb is None else per * wb).sum() / denom).backward()
        with torch.no_grad():
            losses[s : s + bs] = per.detach()
            hit = (out.argmax(-1) == yb).float()
            accuracy[s : s + bs] = hit if hit.dim() == 1 else hit.flatten(1).mean(1)
            if want_logits:
                logits.append(out.detach())
    return losses, accuracy, (torch.cat(logits) if want_logits else None)


def batch_rows(step: int, n: int, batch_size: int, seed: int, device, drop_last: bool = False) -> torch.Tensor:
    """Rows of the mini-batch of ``step``: epoch ``e`` is a permutation drawn from ``(seed, e)`` alone.

    The data order is therefore a pure function of the seed: resumed and branched
    runs see exactly the same batches. With ``drop_last`` an epoch leaves out its last batch when that is short
    (``n % batch_size`` examples, different ones each epoch), as ``DataLoader(drop_last=True)`` does.

    Example:
        >>> [len(batch_rows(s, n=10, batch_size=4, seed=0, device="cpu")) for s in range(4)]  # 3 steps an epoch
        [4, 4, 2, 4]
        >>> [len(batch_rows(s, n=10, batch_size=4, seed=0, device="cpu", drop_last=True)) for s in range(4)]
        [4, 4, 4, 4]
    """
    per_epoch = steps_per_epoch(n, batch_size, drop_last)
    epoch, pos = divmod(step, per_epoch)
    perm = _epoch_permutation(n, seed, epoch)
    return perm[pos * batch_size : (pos + 1) * batch_size].to(device, copy=True)


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch ``epoch`` (kept for the epoch's steps: the loop, the record and live attribution each
    ask for every step's rows, and a permutation of every example costs more than the rest of their work). Two
    are kept, the epoch's and one more (``16 n`` bytes)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Mini-batches in an epoch of ``n`` examples: ``ceil(n / batch_size)``, or with ``drop_last`` only the full ones
    (at least one)."""
    return max(1, n // batch_size) if drop_last else math.ceil(n / batch_size)


class Batch(NamedTuple):
    """The rows of one step's gradient: ``rows`` of ``x``/``y``/``w`` (None: all of them), ``size`` over all ranks."""

    rows: torch.Tensor | None
    size: int
    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor | None
    all_rows: torch.Tensor | None = None  # the whole mini-batch's rows, before the split over ranks


def step_batch(parts: Any, step: int) -> Batch:
    """The rows of step ``step`` of a run (:class:`~oppsig.training.build.RunParts`): every example (full
    batch) or the seeded mini-batch, this rank's share.

    With ``data.augment`` the batch holds the step's augmented images (drawn from ``(seed, step)`` over the
    whole mini-batch before the split over ranks, so every world size sees the same images) and ``rows`` index
    them; ``all_rows`` stays the mini-batch's rows of the data set.
    """
    cfg = parts.cfg
    aug = cfg.data.augment
    if parts.full_batch:
        if aug == "none":
            return Batch(None, len(parts.train_set), *parts.local)
        x, y, w = parts.full
        all_rows = None
    else:
        all_rows = batch_rows(step, len(parts.train_set), cfg.train.batch_size, cfg.seed, parts.device,
                              cfg.train.drop_last)
        if aug == "none":
            rows = all_rows[slice(*parts.dist.shard(len(all_rows)))] if parts.dist.enabled else all_rows
            return Batch(rows, len(all_rows), *parts.full, all_rows=all_rows)
        x, y, w = (a if a is None else a[all_rows] for a in parts.full)
    size = x.shape[0]
    rows = torch.arange(*parts.dist.shard(size), device=x.device) if parts.dist.enabled else None
    return Batch(rows, size, augment(aug, x, cfg.seed, step), y, w, all_rows=all_rows)


def batch_backward(parts: Any, batch: Batch, want_logits: bool = False):
    """:func:`full_batch_backward` of ``batch`` on this rank, in the run's :func:`precision`: its share of the
    global mean-loss gradient."""
    with precision(parts.cfg, parts.device):
        return full_batch_backward(parts.forward_model, batch.x, batch.y, parts.loss_fn,
                                   parts.cfg.train.physical_batch_size, rows=batch.rows, want_logits=want_logits,
                                   denominator=batch.size / parts.dist.world, sync=parts.sync, weights=batch.w)


def precision(cfg: Any, device: torch.device):
    """The context of a run's training forward: bfloat16 autocast on ``device`` (CPU or CUDA) when
    ``train.autocast=bf16`` (or ``bf16`` on CUDA), else none. The model's parameters stay in their dtype; the
    losses are computed from logits cast back to it (:func:`full_batch_backward`), so the record holds float32
    losses of bf16 forwards.
    Curvature measurements run outside it (float32 Hessian-vector products).

    Example:
        >>> from oppsig.config import load_config
        >>> with precision(load_config(None, ["train.autocast=bf16"]), torch.device("cpu")):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    if cfg.train.autocast == "bf16" or (cfg.bf16 and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def gradient(parts: Any, batch: Batch, want_logits: bool = False):
    """Accumulate the mean-loss gradient of ``batch`` (in the run's :func:`precision`).

    Returns:
        per-example losses (B,), accuracy (B,) and logits (B, C) or None, gathered over all ranks.
    """
    D = parts.dist
    losses, accuracy, logits = batch_backward(parts, batch, want_logits)
    if D.enabled:
        losses = D.gather_rows(losses, batch.size)
        accuracy = D.gather_rows(accuracy, batch.size)
        if logits is not None:
            logits = D.gather_rows(logits, batch.size)
    return losses, accuracy, logits


def optimizer_step(optimizer: torch.optim.Optimizer, backward: Callable[[], Any]) -> None:
    """``optimizer.step()`` on the gradient in ``.grad``.

    SAM takes its ascent step, then ``backward()`` accumulates the gradient at the ascent point
    (on the same rows), and the descent step updates the original parameters.
    """
    if isinstance(optimizer, SAM):
        optimizer.first_step(zero_grad=True)
        backward()
        optimizer.second_step()
    else:
        optimizer.step()
