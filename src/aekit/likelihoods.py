"""Likelihood heads p(x|z): the decoder outputs their parameters, shaped like x.

`log_prob` is summed over every dimension of an example, in nats, so that a negative
log-likelihood and a KL summed over latent dimensions are on the same scale and the ELBO
is a real bound. Leading dimensions are kept: parameters (S, B, *shape) for S latent draws
give (S, B), so the data need not be copied S times.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aekit.components import Dims, NoOptions, Registry
from aekit.errors import AekitError


class Likelihood(nn.Module, ABC):
    """A head p(x|z); subclasses define log_prob, mean and sample."""

    Options = NoOptions

    def __init__(self, options: NoOptions, dims: Dims) -> None:
        super().__init__()
        self.options = options
        self.event_dims = len(dims.target_shape)

    def sum_per_example(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over the dimensions of one example (the trailing ones)."""
        return t.flatten(-self.event_dims).sum(-1)

    @abstractmethod
    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example, in nats: (B,) for params (B, *shape), (S, B) for params
        (S, B, *shape) against x (B, *shape) or its expansion."""

    @abstractmethod
    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z], shaped like x."""

    @abstractmethod
    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A draw x ~ p(x|z), shaped like x."""

    def check_data(self, x: torch.Tensor, what: str) -> None:
        """Raise a clear error when the data cannot have this likelihood."""


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Independent Bernoulli pixels; the decoder outputs logits. For data in [0, 1]: a true
    likelihood of binary data, and the usual cross-entropy for grey levels."""

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # The loss function wants equal sizes; expand_as is a view, not a copy.
        cross_entropy = F.binary_cross_entropy_with_logits(
            params, x.expand_as(params), reduction="none"
        )
        return -self.sum_per_example(cross_entropy)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        u = torch.rand(params.shape, generator=generator).to(params.device)
        return (u < torch.sigmoid(params)).to(params.dtype)

    def check_data(self, x: torch.Tensor, what: str) -> None:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise AekitError(
                f"{what}: the bernoulli likelihood needs values in [0, 1], the data spans "
                f"[{lo:.4g}, {hi:.4g}]; rescale it (--scale minmax) or use --likelihood gaussian"
            )


@dataclass
class ScaleOptions:
    variance: str = "global"
    """`fixed` (sigma as given), `global` (one learned scale) or `pixel` (one learned scale per
    input dimension); learned scales start at sigma."""
    sigma: float = 1.0
    """The scale: standard deviation for gaussian, b for laplace (fixed value or initial value)."""
    min_sigma: float = 1e-3
    """Floor of a learned scale, so a perfectly reconstructed pixel cannot drive the
    likelihood to infinity."""

    def __post_init__(self) -> None:
        if self.variance not in ("fixed", "global", "pixel"):
            raise AekitError(f"variance must be fixed, global or pixel (got {self.variance!r})")
        if not self.sigma > 0 or not self.min_sigma > 0:
            raise AekitError(
                f"sigma and min_sigma must be positive (got {self.sigma}, {self.min_sigma})"
            )


class LocationScale(Likelihood):
    """A location-scale family whose location is the decoder output and whose scale is fixed
    or a learned parameter (global or per pixel), never a function of z."""

    Options = ScaleOptions

    def __init__(self, options: ScaleOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        shape = dims.target_shape if options.variance == "pixel" else ()
        log_scale = torch.full(shape, math.log(options.sigma))
        if options.variance == "fixed":
            self.register_buffer("log_scale", log_scale)
        else:
            self.log_scale = nn.Parameter(log_scale)

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(min=math.log(self.options.min_sigma)).exp()

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


@LIKELIHOODS.register("gaussian")
class Gaussian(LocationScale):
    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = self.scale()
        log_density = (
            -0.5 * ((x - params) / sigma).pow(2) - sigma.log() - 0.5 * math.log(2 * math.pi)
        )
        return self.sum_per_example(log_density)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        eps = torch.randn(params.shape, generator=generator).to(params.device)
        return params + self.scale() * eps


@LIKELIHOODS.register("laplace")
class Laplace(LocationScale):
    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b = self.scale()
        return self.sum_per_example(-(x - params).abs() / b - (2 * b).log())

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        u = torch.rand(params.shape, generator=generator).to(params.device) - 0.5
        return params - self.scale() * u.sign() * torch.log1p(-2 * u.abs())
