"""Parameter dicts ``name -> tensor`` and flat vectors ``(d,)``: :class:`ParamLayout`.

A :class:`ParamLayout` holds the names of the parameters in a fixed order and
their shapes; the Hessian-vector products and the operators over flat vectors
go through it.

Example:
    >>> import torch
    >>> lay = ParamLayout.from_dict({"w": torch.zeros(2, 3), "b": torch.zeros(2)})
    >>> lay.unflatten(torch.arange(8.0))["b"].tolist()
    [6.0, 7.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..errors import OppsigError

__all__ = ["ParamLayout", "flatten_params", "unflatten_params"]


@dataclass(frozen=True)
class ParamLayout:
    """The order and shapes of a parameter dict, to go to and from flat vectors.

    Attributes:
        names: parameter names in flat order.
        shapes: the shape of each parameter.

    Example:
        >>> lay = ParamLayout.from_dict({"w": torch.zeros(2, 3), "b": torch.zeros(2)})
        >>> lay.dim, lay.slice("b")
        (8, slice(6, 8, None))
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def from_dict(cls, params: Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> "ParamLayout":
        """The layout of ``params`` (in dict order, or in the order of ``names``).

        Raises:
            OppsigError: when a name is not in ``params``.
        """
        names = tuple(params) if names is None else tuple(names)
        missing = [n for n in names if n not in params]
        if missing:
            raise OppsigError(f"parameter {missing[0]!r} is not in the dict; valid names: {', '.join(params)}")
        return cls(names, tuple(torch.Size(params[n].shape) for n in names))

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        """Total number of scalars ``d``."""
        return sum(self.numels)

    def slice(self, name: str) -> slice:
        """Where parameter ``name`` lies in a flat vector.

        Raises:
            OppsigError: for a name not in the layout.
        """
        start = 0
        for n, k in zip(self.names, self.numels):
            if n == name:
                return slice(start, start + k)
            start += k
        raise OppsigError(f"parameter {name!r} is not in this layout; valid names: {', '.join(self.names)}")

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``params[name]`` in layout order into a flat ``(d,)`` tensor.

        Raises:
            OppsigError: when a name is missing or a shape differs.
        """
        parts = []
        for n, s in zip(self.names, self.shapes):
            if n not in params:
                raise OppsigError(f"parameter {n!r} is missing from the dict; pass all of: {', '.join(self.names)}")
            t = params[n]
            if t.shape != s:
                raise OppsigError(f"parameter {n!r} has shape {tuple(t.shape)}, expected {tuple(s)}")
            parts.append(t.reshape(-1))
        return torch.cat(parts) if parts else torch.zeros(0)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat ``(d,)`` tensor into a dict of views ``name -> (shape)``.

        Raises:
            OppsigError: when ``flat`` is not of shape ``(d,)``.
        """
        if flat.dim() != 1 or flat.shape[0] != self.dim:
            raise OppsigError(f"expected a flat vector of shape ({self.dim},), got {tuple(flat.shape)}")
        out, start = {}, 0
        for n, s, k in zip(self.names, self.shapes, self.numels):
            out[n] = flat[start : start + k].view(s)
            start += k
        return out


def flatten_params(params: Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
    """Flatten a parameter dict into ``(d,)`` (dict order, or the order of ``names``).

    Example:
        >>> flatten_params({"a": torch.ones(2, 2), "b": torch.zeros(1)}).shape
        torch.Size([5])
    """
    return ParamLayout.from_dict(params, names).flatten(params)


def unflatten_params(flat: torch.Tensor, layout: ParamLayout) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_params` for the given layout (views into ``flat``)."""
    return layout.unflatten(flat)
