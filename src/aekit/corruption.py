"""Input corruptions of the denoising autoencoder (Vincent et al. 2008): the encoder sees a
corrupted x, the loss compares the reconstruction with the clean x."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aekit.components import Dims, NoOptions, Registry
from aekit.errors import AekitError


class Corruption(nn.Module):
    Options = NoOptions

    def __init__(self, options: NoOptions, dims: Dims) -> None:
        super().__init__()
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


@dataclass
class FractionOptions:
    noise: float = 0.25
    """Fraction of the input dimensions corrupted, in [0, 1]."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise AekitError(f"noise must be a fraction in [0, 1] (got {self.noise})")


@dataclass
class GaussianNoiseOptions:
    noise: float = 0.3
    """Standard deviation of the additive Gaussian noise."""

    def __post_init__(self) -> None:
        if self.noise < 0:
            raise AekitError(f"noise must be a non-negative standard deviation (got {self.noise})")


@CORRUPTIONS.register("none")
class NoCorruption(Corruption):
    """The identity: plain (non-denoising) autoencoders see x itself."""


@CORRUPTIONS.register("gaussian")
class GaussianNoise(Corruption):
    """x + sigma * eps."""

    Options = GaussianNoiseOptions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.options.noise * torch.randn_like(x)


@CORRUPTIONS.register("masking")
class MaskingNoise(Corruption):
    """A random fraction of the inputs set to 0."""

    Options = FractionOptions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.rand_like(x) >= self.options.noise
        return x * keep


@CORRUPTIONS.register("salt-pepper")
class SaltAndPepper(Corruption):
    """A random fraction of the inputs set to the minimum or maximum of the [0, 1] range,
    each with probability 1/2."""

    Options = FractionOptions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = torch.rand_like(x) < self.options.noise
        salt = (torch.rand_like(x) < 0.5).to(x.dtype)
        return torch.where(hit, salt, x)
