"""Two stochastic layers: p(z2) p(z1|z2) p(x|z1), with a learned conditional prior p(z1|z2).

Inference is bottom-up, q(z1|x) q(z2|z1), as in the two-layer models of Burda et al. (2016):
it keeps q a simple chain that can be sampled in one pass and scored exactly, which is what
importance-weighted bounds and likelihood estimates need. (Top-down inference, as in ladder
VAEs, shares parameters between q and p and is tighter but not needed for two layers.)
The decoder sees z1; `latent_dim` is the size of z1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from aekit import distributed
from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.bottlenecks.gaussian import reparameterise, split_gaussian
from aekit.components import Dims
from aekit.errors import AekitError
from aekit.priors import diagonal_normal_log_prob


@dataclass
class HierarchicalOptions:
    top_dim: int = 0
    """Size of the top latent z2 (0: half of latent_dim, at least 1)."""
    level_hidden: int = 100
    """Width of the two tanh layers of q(z2|z1) and of p(z1|z2) (100 in Burda et al.)."""

    def __post_init__(self) -> None:
        if self.top_dim < 0 or self.level_hidden < 1:
            raise AekitError("top_dim must be >= 0 and level_hidden >= 1")


def gaussian_layer(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """x -> (mu, logvar) of a diagonal Gaussian over d_out, concatenated."""
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, 2 * d_out),
    )  # fmt: skip


@BOTTLENECKS.register("hierarchical")
class Hierarchical(Bottleneck):
    Options = HierarchicalOptions
    has_density = True

    def __init__(self, options: HierarchicalOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self.top_dim = options.top_dim or max(1, dims.latent_dim // 2)
        self.up = gaussian_layer(dims.latent_dim, options.level_hidden, self.top_dim)
        self.prior_net = gaussian_layer(self.top_dim, options.level_hidden, dims.latent_dim)

    @property
    def has_prior(self) -> bool:
        return True

    @property
    def prior_to_match(self) -> None:
        # p(z1) = E_{z2}[p(z1|z2)] is learned through prior_net: samples exist, no Prior object.
        return None

    @property
    def in_features(self) -> int:
        return 2 * self.latent_dim

    def forward(
        self, h: torch.Tensor, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        mu1, logvar1 = split_gaussian(h)
        z1, log_q1 = reparameterise(mu1, logvar1, samples)  # (S, B, D1)
        mu2, logvar2 = split_gaussian(self.up(z1))
        eps2 = distributed.randn_rows(mu2.shape, device=mu2.device, dtype=mu2.dtype, dim=1)
        z2 = mu2 + (0.5 * logvar2).exp() * eps2  # one z2 per z1 draw
        log_q2 = diagonal_normal_log_prob(z2, mu2, logvar2)
        prior_mu, prior_logvar = split_gaussian(self.prior_net(z2))
        log_p1 = diagonal_normal_log_prob(z1, prior_mu, prior_logvar)
        log_p2 = diagonal_normal_log_prob(z2, torch.zeros_like(z2), torch.zeros_like(z2))
        return BottleneckOutput(
            z=z1.reshape(-1, self.latent_dim),
            code=mu1,
            samples=samples,
            log_q=log_q1 + log_q2,
            log_prior=log_p1 + log_p2,
            params={"mu": mu1, "logvar": logvar1},
        )

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return split_gaussian(h)[0]

    def sample_prior(
        self,
        n: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        z2 = torch.randn(n, self.top_dim, generator=generator).to(device)
        mu, logvar = split_gaussian(self.prior_net(z2))
        eps = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return mu + (0.5 * logvar).exp() * eps

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        return self.prior_net.parameters()
