"""A small convolutional network: ``[conv3x3 -> (BN) -> act -> maxpool2] * len(channels)``, then linear.

``channels`` are the channel counts at ``width`` 64 (the default); each is scaled by ``width / 64``
(``channels=(32, 64), width=16``: 8 and 16 channels), so ``model.width`` shrinks it like every image network.
"""

from __future__ import annotations

import torch
from torch import nn


class CNN(nn.Module):
    """Shapes: (B, C, H, W) -> (B, num_classes)."""

    def __init__(self, input_shape, num_classes: int, channels=(32, 64), activation: str = "relu",
                 batchnorm: bool = False, width: int = 64):
        super().__init__()
        from . import activation as make_act

        c, h, w = input_shape
        layers: list[nn.Module] = []
        for out in channels:
            out = max(1, out * width // 64)
            layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers += [make_act(activation), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
