"""Diagonal-Gaussian posterior q(z|x) = N(mu, diag(exp(logvar))) with a prior p(z) that has
a density: N(0, I) (analytic KL), a Gaussian mixture, or the VampPrior (Monte-Carlo KL)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aekit import distributed
from aekit.bottlenecks.base import (
    BOTTLENECKS,
    Bottleneck,
    BottleneckOutput,
    PriorOptions,
    require_density,
)
from aekit.components import Dims
from aekit.priors import LOG_2PI, StandardNormal, VampPrior

# exp(logvar) over- or underflows in float32 beyond these; clamping keeps a wild encoder
# from producing inf/NaN before the optimiser can correct it.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension, in closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def split_gaussian(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = h.chunk(2, dim=-1)
    return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def reparameterise(
    mu: torch.Tensor, logvar: torch.Tensor, samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples` draws z = mu + sigma * eps, (samples, B, D), and log q(z|x), (samples, B).

    The sample stays differentiable in (mu, sigma); log q is written through eps, which is
    both cheaper and exact: (z - mu) / sigma = eps."""
    eps = distributed.randn_rows((samples, *mu.shape), device=mu.device, dtype=mu.dtype, dim=1)
    z = mu + (0.5 * logvar).exp() * eps
    log_q = -0.5 * (LOG_2PI + logvar + eps.pow(2)).sum(-1)
    return z, log_q


@dataclass
class GaussianOptions(PriorOptions):
    prior: str = "normal"
    """p(z): normal (N(0, I), analytic KL), mixture (fixed Gaussian mixture) or vamp
    (VampPrior); the last two use a Monte-Carlo KL."""
    prior_components: int = 0
    """Components of a mixture or VampPrior (0: the default, 10 and 500 pseudo-inputs)."""


@BOTTLENECKS.register("gaussian")
class Gaussian(Bottleneck):
    Options = GaussianOptions
    has_density = True

    def __init__(self, options: GaussianOptions, dims: Dims) -> None:
        require_density(options.prior, "gaussian")
        super().__init__(options, dims)

    @property
    def in_features(self) -> int:
        return 2 * self.latent_dim

    def attach(self, encoder: nn.Module) -> None:
        if isinstance(self.prior, VampPrior):
            self.prior.attach(lambda u: split_gaussian(encoder(u)))

    def forward(
        self, h: torch.Tensor, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        mu, logvar = split_gaussian(h)
        z, log_q = reparameterise(mu, logvar, samples)
        analytic = isinstance(self.prior, StandardNormal)
        return BottleneckOutput(
            z=z.reshape(-1, self.latent_dim),
            code=mu,
            samples=samples,
            kl=gaussian_kl(mu, logvar) if analytic else None,
            log_q=log_q,
            log_prior=self.prior.log_prob(z),
            params={"mu": mu, "logvar": logvar},
            prior=self.prior,
        )

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return split_gaussian(h)[0]
