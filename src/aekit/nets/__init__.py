"""Encoder/decoder bodies, chosen from the data's shape."""

from __future__ import annotations

from torch import nn

from aekit.errors import AekitError
from aekit.nets.config import NetConfig
from aekit.nets.conv import ConvDecoder, ConvEncoder, GridDecoder, GridEncoder, grid_positions
from aekit.nets.mlp import MLPDecoder, MLPEncoder

__all__ = ["NetConfig", "build_networks", "grid_positions", "resolve_body"]

DEFAULT_HIDDEN = {"mlp": (512, 256), "conv": (256,)}


def resolve_body(net: NetConfig, input_shape: tuple[int, ...]) -> str:
    # Below 16x16 two stride-2 stages leave a few pixels: an MLP is as good and twice as fast.
    is_image = len(input_shape) == 3 and min(input_shape[1:]) >= 16
    if net.body == "auto":
        return "conv" if is_image else "mlp"
    if net.body in ("conv", "grid") and len(input_shape) != 3:
        raise AekitError(
            f"the {net.body} body needs images of shape (C, H, W); the data has shape {input_shape}"
        )
    if net.body in ("conv", "grid") and (min(input_shape[1:]) < 2 ** len(net.channels)):
        raise AekitError(
            f"{len(net.channels)} conv stages halve {input_shape[1:]} below 1 pixel; "
            "pass fewer --channels"
        )
    return net.body


def build_networks(
    net: NetConfig,
    input_shape: tuple[int, ...],
    in_features: int,
    latent_dim: int,
    condition_dim: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """An encoder (x[, condition]) -> (B, in_features) and a decoder [z, condition] ->
    (B, *input_shape); the decoder's input is z with the condition concatenated."""
    body = resolve_body(net, input_shape)
    if body == "grid":
        return grid_networks(net, input_shape, in_features, latent_dim, condition_dim)
    hidden = net.hidden if net.hidden is not None else DEFAULT_HIDDEN[body]
    z_width = latent_dim + condition_dim
    if body == "mlp":
        encoder = MLPEncoder(input_shape, hidden, in_features, net.activation, condition_dim)
        decoder = MLPDecoder(z_width, hidden, input_shape, net.activation)
    else:
        encoder = ConvEncoder(
            input_shape, net.channels, hidden, in_features, net.activation, condition_dim
        )
        decoder = ConvDecoder(
            z_width, net.channels, hidden, input_shape, net.activation, net.upsample
        )
    return encoder, decoder


def grid_networks(
    net: NetConfig,
    input_shape: tuple[int, ...],
    in_features: int,
    latent_dim: int,
    condition_dim: int,
) -> tuple[nn.Module, nn.Module]:
    positions = grid_positions(input_shape, len(net.channels))
    if condition_dim:
        raise AekitError("the grid body takes no condition; use the conv or mlp body")
    if in_features % positions or latent_dim % positions:
        raise AekitError(
            f"the grid body has {positions} positions: latent_dim ({latent_dim}) must be a "
            f"multiple of {positions}"
        )
    encoder = GridEncoder(input_shape, net.channels, in_features // positions, net.activation)
    decoder = GridDecoder(
        latent_dim // positions, net.channels, input_shape, net.activation, net.upsample
    )
    return encoder, decoder
