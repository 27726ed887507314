"""Convolutional bodies: stride-2 convs down, transposed (or upsample + conv) up.

Every stage halves the spatial size with a 4x4 kernel, stride 2, padding 1 (n -> floor(n/2)
for any n). The decoder records those sizes and undoes them exactly, so 1x8x8, 1x28x28,
3x32x32 and odd sizes all round-trip without cropping.
"""

from __future__ import annotations

import torch
from torch import nn

from aekit.nets.mlp import activation, mlp


def stage_sizes(size: tuple[int, int], stages: int) -> list[tuple[int, int]]:
    """Spatial size before each stage, then after the last one."""
    sizes = [size]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append(((h - 2) // 2 + 1, (w - 2) // 2 + 1))
    return sizes


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
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), activation(act)]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        h_last, w_last = stage_sizes((h, w), len(channels))[-1]
        # A conditioning vector joins the flattened conv features, before the dense layers.
        self.head = mlp([c_in * h_last * w_last + condition_dim, *hidden, out_features], act)

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
            mlp([latent_dim, *reversed(hidden), channels[-1] * sizes[-1][0] * sizes[-1][1]], act),
            activation(act),
        )
        targets = list(reversed(sizes[:-1]))
        widths = [*reversed(channels), c_out]
        layers: list[nn.Module] = []
        for i, target in enumerate(targets):
            c_a, c_b = widths[i], widths[i + 1]
            if upsample == "transpose":
                h_in, w_in = sizes[len(sizes) - 1 - i]
                pad = (target[0] - 2 * h_in, target[1] - 2 * w_in)
                layers.append(nn.ConvTranspose2d(c_a, c_b, 4, 2, 1, output_padding=pad))
            else:
                layers += [nn.Upsample(size=target, mode="nearest"), nn.Conv2d(c_a, c_b, 3, 1, 1)]
            if i < len(targets) - 1:
                layers.append(activation(act))
        self.ups = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.ups(self.head(z).view(z.shape[0], *self.start))
