"""ResNet-18, CIFAR variant (3x3 stem, no max-pool), with or without BatchNorm."""

from __future__ import annotations

import torch
from torch import nn


def _norm(c: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if batchnorm else nn.Identity()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, batchnorm: bool, act):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not batchnorm)
        self.bn1 = _norm(cout, batchnorm)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not batchnorm)
        self.bn2 = _norm(cout, batchnorm)
        self.act = act()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=not batchnorm), _norm(cout, batchnorm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """Shapes: (B, C, H, W) -> (B, num_classes)."""

    def __init__(self, blocks, input_shape, num_classes: int, batchnorm: bool = True, width: int = 64,
                 activation: str = "relu"):
        super().__init__()
        from . import activation as make_act

        act = lambda: make_act(activation)  # noqa: E731
        c = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, 1, 1, bias=not batchnorm), _norm(width, batchnorm), act())
        layers = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            for j in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1, batchnorm, act))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.head(out.mean(dim=(2, 3)))


def resnet18(input_shape, num_classes: int, batchnorm: bool = True, width: int = 64,
             activation: str = "relu") -> ResNet:
    return ResNet((2, 2, 2, 2), input_shape, num_classes, batchnorm, width, activation)
