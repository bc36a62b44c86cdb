"""The hot path: one gradient evaluation, full-batch or mini-batch, with per-example losses for free.

``full_batch_backward`` accumulates the gradient of the mean loss over the whole
data set in physical batches: each batch contributes ``sum(loss_i) / N`` to
``.grad``, so the result equals one big batch (up to float rounding) whatever
the physical batch size. The per-example losses come from the same forward.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ..losses import LossFn


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
