"""Input corruptions of the denoising autoencoder (Vincent et al. 2008): the encoder sees a
corrupted x, the loss compares the reconstruction with the clean x; and the patch masking of
the masked autoencoder (He et al. 2022), whose loss is defined on what it hides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from aekit import distributed
from aekit.components import Dims, NoOptions, Registry
from aekit.errors import AekitError
from aekit.patches import Masked


class Corruption(nn.Module):
    Options = NoOptions
    part_of_objective = False
    """Whether the loss is defined on the corrupted input (the hidden patches of a masked
    autoencoder), so that evaluation corrupts too, with its fixed seed; a denoising
    autoencoder is evaluated on clean inputs."""

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
        eps = distributed.randn_rows(x.shape, device=x.device, dtype=x.dtype)
        return x + self.options.noise * eps


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


@dataclass
class PatchMaskingOptions:
    mask_ratio: float = 0.75
    """Fraction of each image's patches hidden from the encoder: 75 % is MAE's choice, where
    both fine-tuning and linear probing peak (He et al. 2022, Figure 5)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise AekitError(f"mask_ratio must be a fraction in [0, 1) (got {self.mask_ratio})")


@CORRUPTIONS.register("patches")
class PatchMasking(Corruption):
    """Hides a random `mask_ratio` of each image's patches (He et al. 2022): the output is
    `Masked`, which the vit body's encoder reads, drawing the visible patches by sorting
    per-example noise once it knows the grid. `fixed(keep)` fixes them instead."""

    Options = PatchMaskingOptions
    part_of_objective = True

    def __init__(self, options: PatchMaskingOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self._fixed: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> Masked:
        return Masked(x, self.options.mask_ratio, self._fixed)

    @contextmanager
    def fixed(self, keep: torch.Tensor) -> Iterator[None]:
        """Within the block every batch shows the encoder the patches `keep` (B, n) names
        (row-major indices): a fixed mask for tests and figures."""
        self._fixed = keep
        try:
            yield
        finally:
            self._fixed = None
