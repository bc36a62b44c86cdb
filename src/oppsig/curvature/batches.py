"""Physical batches of the data for curvature computations: slicing and checking them.

A curvature computation sees the data as a sequence of physical batches
``(x, y)`` (or ``(index, x, y)`` as loaders yield them) whose union is the
data set; :func:`make_batches` slices tensors into them.

Example:
    >>> import torch
    >>> [b[0].shape[0] for b in make_batches(torch.zeros(7, 2), torch.zeros(7), 3)]
    [3, 3, 1]
"""

from __future__ import annotations

import torch

from ..errors import OppsigError

__all__ = ["make_batches", "normalise_batches"]


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


def normalise_batches(batches, device: torch.device, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches as ``(x, y)`` pairs on ``device``, floating-point inputs in ``dtype``.

    Raises:
        OppsigError: for a batch that is not an ``(x, y)`` or ``(index, x, y)`` tuple, or no batches.
    """
    out = []
    for b in batches:
        if not isinstance(b, (tuple, list)) or len(b) not in (2, 3):
            raise OppsigError("each batch must be an (x, y) or (index, x, y) tuple; pass a list of them, "
                              "e.g. [(x, y)] or make_batches(x, y, batch_size)")
        x, y = (b[1], b[2]) if len(b) == 3 else (b[0], b[1])
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
        out.append((x, y.to(device)))
    if not out:
        raise OppsigError("no batches given; pass at least one (x, y) pair")
    return out
