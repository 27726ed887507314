"""Encoder/decoder bodies, one registry (`NETS`): importing this package registers them all
(every module in it: a new body is one file with its `@NETS.register` line)."""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from aekit.components import Dims
from aekit.nets.base import NETS, Body, LayerOptions
from aekit.nets.conv import grid_positions

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "NETS", "Body", "LayerOptions", "build_networks", "grid_positions", "latent_grid",
    "resolve_body",
]  # fmt: skip


def latent_grid(kind: str, options, input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(h, w) of the latent grid of body `kind` on this data, or None for a flat latent."""
    return NETS[kind].latent_grid(options, input_shape)


def resolve_body(kind: str, options, input_shape: tuple[int, ...]) -> str:
    """The body kind that builds the networks for data of this shape (checked)."""
    return NETS[kind].resolve(options, input_shape)


def build_networks(
    kind: str, options, dims: Dims, in_features: int, condition_dim: int = 0
) -> tuple[nn.Module, nn.Module]:
    """An encoder (x[, condition]) -> (B, in_features) and a decoder [z, condition] ->
    (B, *dims.target_shape); the decoder's input is z with the condition concatenated."""
    return NETS[kind].build(options, dims, in_features, condition_dim)
