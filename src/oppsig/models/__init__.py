"""Model registry: ``build_model(name, ...)`` for every network oppsig trains.

Every model maps a batch ``(B, *input_shape)`` to logits ``(B, num_classes)``
(the GPT: token ids ``(B, T)`` to ``(B, T, vocab)``).

Example:
    >>> m = build_model("mlp", input_shape=(3, 32, 32), num_classes=10, widths=(200, 200), activation="tanh")
    >>> sum(p.numel() for p in m.parameters())
    656810
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .cnn import CNN
from .gpt import GPT
from .mlp import MLP
from .resnet import resnet18
from .vgg import vgg11
from .vit import ViT

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda input_shape, num_classes, widths=(200, 200), activation="tanh", bias=True, **_: MLP(
        input_shape, num_classes, widths, activation, bias
    ),
    "cnn": lambda input_shape, num_classes, channels=(32, 64), activation="relu", batchnorm=False, width=64, **_: CNN(
        input_shape, num_classes, channels, activation, batchnorm, width
    ),
    "vgg11": lambda input_shape, num_classes, batchnorm=False, activation="relu", width=64, **_: vgg11(
        input_shape, num_classes, batchnorm, activation, width
    ),
    "resnet18": lambda input_shape, num_classes, batchnorm=True, width=64, activation="relu", **_: resnet18(
        input_shape, num_classes, batchnorm, width, activation
    ),
    "vit": lambda input_shape, num_classes, width=64, n_layer=2, n_head=4, bias=True, **_: ViT(
        input_shape, num_classes, width, n_layer, n_head, bias=bias
    ),
    "gpt": lambda input_shape, num_classes, n_layer=2, n_head=4, n_embd=128, bias=True, **_: GPT(
        vocab_size=num_classes, block_size=input_shape[0], n_layer=n_layer, n_head=n_head, n_embd=n_embd, bias=bias
    ),
}


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs,
) -> nn.Module:
    """Build the model ``name`` on ``device`` in ``dtype``.

    Args:
        name: one of :data:`MODELS` (``mlp``, ``cnn``, ``vgg11``, ``resnet18``, ``vit``, ``gpt``).
        input_shape: shape of one example, e.g. ``(3, 32, 32)`` (GPT: ``(block_size,)``).
        num_classes: number of outputs (GPT: vocabulary size).
        **kwargs: the model's own options (widths, activation, batchnorm, ...). ``width`` scales every image
            network: ``cnn`` (its ``channels`` times ``width / 64``), ``vgg11`` and ``resnet18`` (the first
            convolution's channels, 64 in the paper), ``vit`` (the embedding dimension).

    Raises:
        ConfigError: for an unknown name (the message lists the valid ones) or bad options.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    model = MODELS[name](tuple(input_shape), int(num_classes), **kwargs)
    return model.to(device=device, dtype=dtype)


def activation(name: str) -> nn.Module:
    """The activation module called ``name``."""
    acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU}
    if name not in acts:
        raise ConfigError(f"unknown activation {name!r}; valid: {', '.join(acts)}")
    return acts[name]()


def build_from_config(cfg, input_shape, num_classes, device="cpu", dtype=torch.float32) -> nn.Module:
    """Build the model of a :class:`~oppsig.config.ModelConfig`."""
    kw = dict(
        widths=cfg.widths, activation=cfg.activation, batchnorm=cfg.batchnorm, channels=cfg.channels,
        width=cfg.width, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, bias=cfg.bias,
    )
    return build_model(cfg.name, input_shape, num_classes, device=device, dtype=dtype, **kw)


__all__ = ["MODELS", "build_model", "build_from_config", "MLP", "CNN", "GPT", "ViT", "vgg11", "resnet18"]
