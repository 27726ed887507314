"""Convolutional bodies: stride-2 convs down, transposed (or upsample + conv) up.

Every stage halves the spatial size with a 4x4 kernel, stride 2, padding 1 (n -> floor(n/2)
for any n). The decoder records those sizes and undoes them exactly, so 1x8x8, 1x28x28,
3x32x32 and odd sizes all round-trip without cropping.

Two bodies share the stages. `conv` ends in dense layers and a flat latent. `grid` is fully
convolutional (as in VQ-VAE): the latent is a grid of vectors, one per position of the last
feature map, flattened position-major, so (B, h * w * width) holds position p's vector at
columns p*width..(p+1)*width-1. Quantizers then code each position separately.
"""

from __future__ import annotations

import torch
from torch import nn

from aekit.errors import AekitError
from aekit.nets.base import NETS, Body, LayerOptions, check_layer
from aekit.nets.gdn import GDN
from aekit.nets.mlp import activation, mlp


def stage_activation(act: str, channels: int, decoder: bool = False) -> nn.Module:
    """The nonlinearity after a conv stage: `act`, or with `gdn` GDN in the encoder and IGDN
    in the decoder (Ballé et al. 2018's transforms)."""
    return GDN(channels, inverse=decoder) if act == "gdn" else activation(act)


def stage_sizes(size: tuple[int, int], stages: int) -> list[tuple[int, int]]:
    """Spatial size before each stage, then after the last one."""
    sizes = [size]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append(((h - 2) // 2 + 1, (w - 2) // 2 + 1))
    return sizes


def down_stages(c_in: int, channels: tuple[int, ...], act: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, c_out in enumerate(channels):
        check_layer(c_in, c_out, f"conv stage {i + 1} of the encoder", per_weight=16)
        conv = nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
        layers += [conv, stage_activation(act, c_out)]
        c_in = c_out
    return nn.Sequential(*layers)


def up_stages(
    channels: tuple[int, ...],
    sizes: list[tuple[int, int]],
    c_out: int,
    act: str,
    upsample: str,
) -> nn.Sequential:
    """The mirror of `down_stages`: from channels[-1] at sizes[-1] back to c_out at sizes[0]."""
    targets = list(reversed(sizes[:-1]))
    widths = [*reversed(channels), c_out]
    layers: list[nn.Module] = []
    for i, target in enumerate(targets):
        c_a, c_b = widths[i], widths[i + 1]
        check_layer(c_a, c_b, f"conv stage {i + 1} of the decoder", per_weight=16)
        if upsample == "transpose":
            h_in, w_in = sizes[len(sizes) - 1 - i]
            pad = (target[0] - 2 * h_in, target[1] - 2 * w_in)
            layers.append(nn.ConvTranspose2d(c_a, c_b, 4, 2, 1, output_padding=pad))
        else:
            layers += [nn.Upsample(size=target, mode="nearest"), nn.Conv2d(c_a, c_b, 3, 1, 1)]
        if i < len(targets) - 1:
            layers.append(stage_activation(act, c_b, decoder=True))
    return nn.Sequential(*layers)


def grid_positions(input_shape: tuple[int, ...], stages: int) -> int:
    """Number of latent positions of the `grid` body: the size of the last feature map."""
    h, w = stage_sizes((input_shape[1], input_shape[2]), stages)[-1]
    return h * w


class ConvEncoder(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        hidden: tuple[int, ...],
        out_features: int,
        act: str,
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        c_in, h, w = input_shape
        self.convs = down_stages(c_in, channels, act)
        h_last, w_last = stage_sizes((h, w), len(channels))[-1]
        # A conditioning vector joins the flattened conv features, before the dense layers.
        self.head = mlp(
            [channels[-1] * h_last * w_last + condition_dim, *hidden, out_features],
            act,
            "the encoder's dense head",
        )

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        h = self.convs(x).flatten(1)
        return self.head(h if condition is None else torch.cat([h, condition], 1))


class ConvDecoder(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        channels: tuple[int, ...],
        hidden: tuple[int, ...],
        output_shape: tuple[int, int, int],
        act: str,
        upsample: str,
    ) -> None:
        super().__init__()
        c_out, h, w = output_shape
        sizes = stage_sizes((h, w), len(channels))
        self.start = (channels[-1], *sizes[-1])
        self.head = nn.Sequential(
            mlp(
                [latent_dim, *reversed(hidden), channels[-1] * sizes[-1][0] * sizes[-1][1]],
                act,
                "the decoder's dense head",
            ),
            activation(act),
        )
        self.ups = up_stages(channels, sizes, c_out, act, upsample)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.ups(self.head(z).view(z.shape[0], *self.start))


class GridEncoder(nn.Module):
    """Stride-2 stages, then a 1x1 conv to `width` features at every position of the last
    map; the output is flattened position-major, (B, h * w * width)."""

    def __init__(
        self, input_shape: tuple[int, int, int], channels: tuple[int, ...], width: int, act: str
    ) -> None:
        super().__init__()
        self.convs = down_stages(input_shape[0], channels, act)
        self.project = nn.Conv2d(channels[-1], width, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.convs(x)).permute(0, 2, 3, 1).flatten(1)


class GridDecoder(nn.Module):
    """The mirror of GridEncoder: a 3x3 conv from `width` features per position, then
    transposed stages back to the image."""

    def __init__(
        self,
        width: int,
        channels: tuple[int, ...],
        output_shape: tuple[int, int, int],
        act: str,
        upsample: str,
    ) -> None:
        super().__init__()
        c_out, h, w = output_shape
        sizes = stage_sizes((h, w), len(channels))
        self.grid = (*sizes[-1], width)
        self.expand = nn.Sequential(
            nn.Conv2d(width, channels[-1], 3, 1, 1),
            stage_activation(act, channels[-1], decoder=True),
        )
        self.ups = up_stages(channels, sizes, c_out, act, upsample)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = z.view(z.shape[0], *self.grid).permute(0, 3, 1, 2)
        return self.ups(self.expand(grid))


DEFAULT_HIDDEN = (256,)


def check_image(kind: str, options: LayerOptions, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise AekitError(
            f"the {kind} body needs images of shape (C, H, W); the data has shape {input_shape}"
        )
    if min(input_shape[1:]) < 2 ** len(options.channels):
        raise AekitError(
            f"{len(options.channels)} conv stages halve {input_shape[1:]} below 1 pixel; "
            "pass fewer --channels"
        )


class ImageBody(Body):
    """The bodies of stride-2 convolutions: images only, and not below a pixel."""

    Options = LayerOptions

    @classmethod
    def check(cls, options, input_shape):
        check_image(cls.kind, options, input_shape)


@NETS.register("conv")
class Conv(ImageBody):
    """Stride-2 convolutions, then dense layers to a flat latent; the mirror back."""

    @classmethod
    def build(cls, options, dims, in_features, condition_dim):
        cls.check(options, dims.input_shape)
        hidden = DEFAULT_HIDDEN if options.hidden is None else options.hidden
        encoder = ConvEncoder(
            dims.input_shape, options.channels, hidden, in_features, options.activation,
            condition_dim,
        )  # fmt: skip
        decoder = ConvDecoder(
            dims.latent_dim + condition_dim, options.channels, hidden, dims.target_shape,
            options.activation, options.upsample,
        )  # fmt: skip
        return encoder, decoder


@NETS.register("grid")
class Grid(ImageBody):
    """Fully convolutional: one latent vector per position of the last feature map (the
    layout quantizers code position by position)."""

    @classmethod
    def latent_grid(cls, options, input_shape):
        return stage_sizes((input_shape[1], input_shape[2]), len(options.channels))[-1]

    @classmethod
    def build(cls, options, dims, in_features, condition_dim):
        cls.check(options, dims.input_shape)
        positions = grid_positions(dims.input_shape, len(options.channels))
        if condition_dim:
            raise AekitError("the grid body takes no condition; use the conv or mlp body")
        if in_features % positions or dims.latent_dim % positions:
            raise AekitError(
                f"the grid body has {positions} positions: latent_dim ({dims.latent_dim}) must "
                f"be a multiple of {positions}"
            )
        encoder = GridEncoder(
            dims.input_shape, options.channels, in_features // positions, options.activation
        )
        decoder = GridDecoder(
            dims.latent_dim // positions, options.channels, dims.target_shape,
            options.activation, options.upsample,
        )  # fmt: skip
        return encoder, decoder


@NETS.register("auto")
class Auto(Body):
    """conv for images (C, H, W) of at least 16x16, else mlp; quantizer recipes record grid
    instead on images (a code vector per position)."""

    Options = LayerOptions

    @classmethod
    def resolve(cls, options, input_shape):
        # Below 16x16 two stride-2 stages leave a few pixels: an MLP is as good and twice as fast.
        is_image = len(input_shape) == 3 and min(input_shape[1:]) >= 16
        return "conv" if is_image else "mlp"

    @classmethod
    def latent_grid(cls, options, input_shape):
        return NETS[cls.resolve(options, input_shape)].latent_grid(options, input_shape)

    @classmethod
    def build(cls, options, dims, in_features, condition_dim):
        body = NETS[cls.resolve(options, dims.input_shape)]
        return body.build(options, dims, in_features, condition_dim)
