"""Diagonal-Gaussian posterior q(z|x) = N(mu, diag(exp(logvar))) with a N(0, I) prior."""

from __future__ import annotations

import torch

from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput

# exp(logvar) over- or underflows in float32 beyond these; clamping keeps a wild encoder
# from producing inf/NaN before the optimiser can correct it.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension, in closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


@BOTTLENECKS.register("gaussian")
class Gaussian(Bottleneck):
    has_prior = True

    @property
    def in_features(self) -> int:
        return 2 * self.latent_dim

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        mu, logvar = self.posterior(h)
        # Reparameterisation: z = mu + sigma * eps keeps the sample differentiable in (mu, sigma).
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        return BottleneckOutput(
            z=z, code=mu, kl=gaussian_kl(mu, logvar), params={"mu": mu, "logvar": logvar}
        )

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return self.posterior(h)[0]

    def sample_prior(
        self,
        n: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(device)
