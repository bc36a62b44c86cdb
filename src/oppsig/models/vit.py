"""A small Vision Transformer for 32x32 images (Dosovitskiy et al., *An Image is Worth 16x16 Words*, 2021).

Patches of ``patch x patch`` pixels (4: 64 tokens on CIFAR-10) are embedded by one linear map, a learned class
token and learned position embeddings are added, then ``n_layer`` pre-norm blocks (the GPT's
:class:`~oppsig.models.gpt.Block` without the causal mask), a final LayerNorm and a linear read-out of the class
token. ``width`` is the embedding dimension; no dropout, so the forward is deterministic.

Example:
    >>> import torch
    >>> m = ViT((3, 32, 32), 10, width=32, n_layer=1, n_head=2)
    >>> m(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .gpt import Block, init_weights


class ViT(nn.Module):
    """Shapes: (B, C, H, W) -> (B, num_classes).

    Args:
        input_shape: ``(C, H, W)``; ``H`` and ``W`` must be multiples of ``patch``.
        width: embedding dimension (a multiple of ``n_head``).
        n_layer, n_head: transformer blocks and attention heads.
        patch: side of a square patch in pixels.

    Raises:
        ConfigError: when the image does not split into patches or ``width`` into heads.
    """

    def __init__(self, input_shape, num_classes: int, width: int = 64, n_layer: int = 2, n_head: int = 4,
                 patch: int = 4, bias: bool = True):
        super().__init__()
        c, h, w = input_shape
        if h % patch or w % patch:
            raise ConfigError(f"vit: image {h}x{w} does not split into {patch}x{patch} patches; "
                              "pass an image size that is a multiple of the patch")
        if width % n_head:
            raise ConfigError(f"vit: model.width={width} must be divisible by model.n_head={n_head}")
        self.patch = patch
        n_tok = (h // patch) * (w // patch)
        self.embed = nn.Linear(c * patch * patch, width, bias=bias)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.zeros(1, n_tok + 1, width))
        self.blocks = nn.Sequential(*[Block(width, n_head, bias, causal=False) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(width, bias=bias)
        self.head = nn.Linear(width, num_classes)
        self.apply(init_weights)
        nn.init.normal_(self.cls, 0.0, 0.02)
        nn.init.normal_(self.pos, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.patch
        x = x.reshape(B, C, H // p, p, W // p, p)  # (B, C, h, p, w, p)
        x = x.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)  # (B, T, C*p*p)
        x = self.embed(x)  # (B, T, D)
        x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1) + self.pos  # (B, T+1, D)
        x = self.ln_f(self.blocks(x))  # (B, T+1, D)
        return self.head(x[:, 0])  # (B, num_classes)
