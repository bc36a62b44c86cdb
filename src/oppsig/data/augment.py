"""Data augmentation of training mini-batches: random crop and horizontal flip, seeded by ``(seed, step)``.

``data.augment=crop_flip`` pads each image of a step's mini-batch with 4 pixels of zeros on every side
(zeros of the standardised inputs: each channel's mean), crops a random 32x32 window (for HxW images: an
HxW window) and flips it left-right with probability 1/2, as CIFAR-10 is usually trained. The draws are a
pure function of the run's seed and the step (:func:`draws`), made on the CPU, so a resumed run, a replay
(:func:`oppsig.training.model_at`) and a run on another device see the same augmented batch.

What each record measures under augmentation:

- the **probe** (the dense record of a mini-batch run) measures the *clean* inputs at the parameters of
  its step: the loss surface that the opposing-signals analysis reads;
- the **batch record** holds the training forward's losses, i.e. each example's loss on its *augmented*
  image in its own mini-batch (the values the gradient was taken of);
- a full-batch run has no probe: its dense record is the training forward's, on augmented inputs.

Example:
    >>> import torch
    >>> x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    >>> crop_flip(x, seed=0, step=3, pad=1).shape
    torch.Size([2, 1, 4, 4])
    >>> torch.equal(crop_flip(x, seed=0, step=3), crop_flip(x, seed=0, step=3))   # a pure function of (seed, step)
    True
    >>> flipped = crop_flip_with(x, dy=torch.tensor([1, 1]), dx=torch.tensor([1, 1]),
    ...                          flip=torch.tensor([True, False]), pad=1)
    >>> torch.equal(flipped[0], x[0].flip(-1)), torch.equal(flipped[1], x[1])
    (True, True)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

AUGMENTS = ("none", "crop_flip")
"""The valid values of ``data.augment``."""

PAD = 4
"""Pixels of zero padding on each side before the random crop."""

_STREAM = 0xA06
"""Keeps the augmentation's draws apart from the data order's (``batch_rows``) and the probe's streams."""


class Draws(NamedTuple):
    """The random choices of one step for ``n`` images: crop offsets ``dy``, ``dx`` in ``[0, 2 * pad]`` (int64
    (n,); ``pad`` is the unshifted window) and ``flip`` (bool (n,))."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor


def draws(n: int, seed: int, step: int, pad: int = PAD) -> Draws:
    """The crop offsets and flips of step ``step`` of the run seeded ``seed``, for a batch of ``n`` images."""
    state = np.random.SeedSequence([int(seed), int(step), _STREAM]).generate_state(1, np.uint64)[0]
    g = torch.Generator().manual_seed(int(state) & (2**63 - 1))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    return Draws(dy, dx, torch.rand(n, generator=g) < 0.5)


def crop_flip_with(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
                   pad: int = PAD) -> torch.Tensor:
    """``x`` (N, C, H, W) zero-padded by ``pad``, each image cropped to HxW at offset ``(dy, dx)`` of the padded
    image (``(pad, pad)``: no shift) and, where ``flip``, mirrored left-right. One gather, on ``x``'s device.

    Returns:
        (N, C, H, W), a new tensor of ``x``'s dtype.
    """
    n, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    rows = (dy[:, None] + ar_h).to(dev)  # (N, H)
    cols = (dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)).to(dev)  # (N, W)
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def crop_flip(x: torch.Tensor, seed: int, step: int, pad: int = PAD) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of each image of ``x`` (N, C, H, W), drawn from
    ``(seed, step)`` (:func:`draws`).

    Raises:
        ConfigError: ``x`` is not a batch of images (N, C, H, W).
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise ConfigError(f"data.augment=crop_flip needs image inputs (N, C, H, W) but this data set's are "
                          f"{x.dtype} of shape {tuple(x.shape)}; set data.augment=none")
    return crop_flip_with(x, *draws(x.shape[0], seed, step, pad), pad=pad)


def augment(name: str, x: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """``x`` augmented as ``data.augment`` = ``name`` says (``none``: ``x`` itself).

    Raises:
        ConfigError: an unknown name, or image augmentation of inputs that are not images.
    """
    if name == "none":
        return x
    if name == "crop_flip":
        return crop_flip(x, seed, step)
    raise ConfigError(f"unknown data.augment {name!r}; valid: {', '.join(AUGMENTS)}")
