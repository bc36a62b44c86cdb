"""VGG-11 for 32x32 inputs (CIFAR variant: one linear classifier after the last pool).

``width`` is the channel count of the first convolution (64 in the paper); every layer scales with it
(64-128-256-512 at width 64, 16-32-64-128 at width 16).
"""

from __future__ import annotations

import torch
from torch import nn

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """Shapes: (B, 3, 32, 32) -> (B, num_classes)."""

    def __init__(self, plan, input_shape, num_classes: int, batchnorm: bool = False, activation: str = "relu",
                 width: int = 64):
        super().__init__()
        from . import activation as make_act

        c, h, w = input_shape
        layers: list[nn.Module] = []
        for v in plan:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            else:
                v = max(1, v * width // 64)
                layers.append(nn.Conv2d(c, v, 3, padding=1, bias=not batchnorm))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(v))
                layers.append(make_act(activation))
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def vgg11(input_shape, num_classes: int, batchnorm: bool = False, activation: str = "relu", width: int = 64) -> VGG:
    return VGG(VGG11, input_shape, num_classes, batchnorm, activation, width)
