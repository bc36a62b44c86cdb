"""Fully connected network, e.g. the paper's ``fc-tanh`` 3072-200-200-10."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then ``Linear -> act`` per hidden width, then a linear read-out.

    Shapes: (B, *input_shape) -> (B, num_classes).
    """

    def __init__(self, input_shape, num_classes: int, widths=(200, 200), activation: str = "tanh", bias: bool = True):
        super().__init__()
        from . import activation as make_act

        d = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for w in widths:
            layers += [nn.Linear(d, w, bias=bias), make_act(activation)]
            d = w
        layers.append(nn.Linear(d, num_classes, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
