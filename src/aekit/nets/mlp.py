"""Fully connected encoder and decoder bodies."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from aekit.errors import AekitError
from aekit.nets.base import NETS, Body, LayerOptions, check_layer


def activation(name: str) -> nn.Module:
    if name == "gdn":
        raise AekitError(
            "gdn normalises the channels of feature maps: it applies to the grid body's conv "
            "stages, not to dense layers (use --body grid, or another --activation)"
        )
    return {
        "relu": nn.ReLU,
        "silu": nn.SiLU,
        "gelu": nn.GELU,
        "elu": nn.ELU,
        "leaky_relu": nn.LeakyReLU,
        "tanh": nn.Tanh,
    }[name]()


def mlp(widths: list[int], act: str, role: str = "a dense layer") -> nn.Sequential:
    """Linear layers between consecutive widths, with no activation after the last; sizes
    are checked (`check_layer`) before any is allocated, `role` naming the network."""
    for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
        check_layer(w_in, w_out, f"layer {i + 1} of {role}")
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(w_in, w_out))
        if i < len(widths) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x (flattened), with a conditioning vector appended when there is one, -> features."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        hidden: tuple[int, ...],
        out_features: int,
        act: str,
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        widths = [math.prod(input_shape) + condition_dim, *hidden, out_features]
        self.net = mlp(widths, act, "the encoder")

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)
        return self.net(x if condition is None else torch.cat([x, condition], 1))


class MLPDecoder(nn.Module):
    def __init__(
        self, latent_dim: int, hidden: tuple[int, ...], output_shape: tuple[int, ...], act: str
    ) -> None:
        super().__init__()
        self.output_shape = tuple(output_shape)
        widths = [latent_dim, *reversed(hidden), math.prod(output_shape)]
        self.net = mlp(widths, act, "the decoder")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.output_shape)


DEFAULT_HIDDEN = (512, 256)


@NETS.register("mlp")
class MLP(Body):
    """Fully connected layers over the flattened input (any shape)."""

    Options = LayerOptions

    @classmethod
    def build(cls, options, dims, in_features, condition_dim):
        hidden = DEFAULT_HIDDEN if options.hidden is None else options.hidden
        encoder = MLPEncoder(
            dims.input_shape, hidden, in_features, options.activation, condition_dim
        )
        decoder = MLPDecoder(
            dims.latent_dim + condition_dim, hidden, dims.target_shape, options.activation
        )
        return encoder, decoder
