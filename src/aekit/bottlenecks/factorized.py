"""The factorized prior (Ballé et al. 2018, "Variational image compression with a scale
hyperprior", the baseline of section 2 and appendix 6.1): each channel of the latent has one
learned density, shared by every position, and the latents are independent under it.

Training: y + U(-1/2, 1/2), rate -log2 p(y~) with p the density convolved with the box.
Evaluation: q = round(y - m) for the channel's median m (rounded to OFFSET_GRID), the decoder
sees q + m, and the rate is q's code length under the channel's table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aekit.bottlenecks.base import BOTTLENECKS, BottleneckOutput
from aekit.bottlenecks.entropy import (
    CodingStage,
    EntropyCoded,
    FactorizedDensity,
    add_noise,
    sha256_of,
)
from aekit.components import Dims
from aekit.errors import AekitError


@dataclass
class FactorizedOptions:
    latent_channels: int = 64
    """Channels of the latent at each position of the grid body's last feature map (with a
    flat body the whole latent is one position)."""

    @property
    def vector_width(self) -> int:
        return self.latent_channels

    def __post_init__(self) -> None:
        if self.latent_channels < 1:
            raise AekitError(f"latent_channels must be at least 1 (got {self.latent_channels})")


class ChannelDensity:
    """Rounding and rates of (B, P, C) latents under one FactorizedDensity over C channels."""

    def __init__(self, density: FactorizedDensity) -> None:
        self.density = density

    def noisy(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y~ = y + U(-1/2, 1/2) and its bits per example, for y (B, P, C)."""
        y_noisy = add_noise(y)
        b, p, c = y.shape
        lik = self.density.likelihood(y_noisy.permute(2, 0, 1).reshape(c, b * p))
        return y_noisy, -torch.log2(lik).reshape(c, b, p).sum((0, 2))

    def stage(self, n: int, positions: int) -> CodingStage:
        """n examples of `positions` x C values, position-major: each codes under its
        channel's table, around its channel's median."""
        offsets, bank = self.density.tables()
        c = self.density.channels
        channel = torch.arange(c).repeat(n, positions)
        return CodingStage(channel, bank, offsets.repeat(n, positions))

    def identity(self) -> str:
        """SHA-256 of the offsets and tables (bit for bit)."""
        offsets, bank = self.density.tables()
        return sha256_of(offsets, bank.lo, bank.sizes, bank.pmf)


@BOTTLENECKS.register("factorized")
class Factorized(EntropyCoded):
    Options = FactorizedOptions

    def __init__(self, options: FactorizedOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self.density = FactorizedDensity(self.channels)
        self.coder = ChannelDensity(self.density)

    def noisy(self, h: torch.Tensor, samples: int) -> BottleneckOutput:
        y_noisy, bits = self.coder.noisy(h.view(h.shape[0], -1, self.channels))
        return self.output(y_noisy.reshape(h.shape), bits, samples, y=h)

    @property
    def stages(self) -> int:
        return 1

    def values(self, h: torch.Tensor) -> list[torch.Tensor]:
        return [h.detach().cpu().double()]

    def stage(self, s: int, previous: list[torch.Tensor], n: int) -> CodingStage:
        return self.coder.stage(n, self.grid[0] * self.grid[1])

    def identity(self) -> str:
        return self.coder.identity()
