"""JointVAE (Dupont 2018): a continuous and a categorical latent side by side.

The encoder gives 2 D Gaussian parameters and N K logits; the decoder sees [z, c], z ~
N(mu, diag(sigma^2)) reparameterised, c a relaxed one-hot per categorical variable
(`bottlenecks/categorical.py`; Dupont keeps tau fixed at 0.67). Both KLs are analytic, to
N(0, I) and to the uniform categorical, and are reported apart (`kl_parts`: continuous,
categorical), which is what the JointVAE objective puts a capacity on, one per kind
(`objectives/elbo.py`, joint-capacity). Inference gives [mu, the mode of c].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aekit.bottlenecks.base import BOTTLENECKS, BottleneckOutput
from aekit.bottlenecks.categorical import CategoricalLatent, CategoricalOptions, categorical_kl
from aekit.bottlenecks.gaussian import gaussian_kl, reparameterise, split_gaussian
from aekit.components import Dims
from aekit.errors import AekitError


@dataclass
class JointOptions(CategoricalOptions):
    continuous_dim: int = 10
    """Width of the continuous (Gaussian) latent (Dupont's MNIST model: 10)."""
    variables: int = 1
    """Categorical variables (MNIST: one, of 10 categories)."""
    temperature: float = 0.67
    """The Gumbel-softmax temperature (Dupont: 0.67, fixed)."""
    min_temperature: float = 0.67
    """Where an annealed temperature stops (equal to temperature: no annealing)."""
    anneal_rate: float = 0.0
    """r of tau(t) = max(tau_min, tau_0 exp(-r t)) (0: fixed)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.continuous_dim < 1:
            raise AekitError(f"continuous_dim must be at least 1 (got {self.continuous_dim})")

    def latent_width(self) -> int:
        return self.continuous_dim + self.variables * self.categories

    def width_note(self) -> str:
        return (
            f"{self.continuous_dim} continuous + {self.variables} variables x "
            f"{self.categories} categories"
        )


@BOTTLENECKS.register("joint")
class Joint(CategoricalLatent):
    Options = JointOptions

    def __init__(self, options: JointOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self.continuous_dim = options.continuous_dim

    @property
    def in_features(self) -> int:
        return 2 * self.continuous_dim + self.latent_dim - self.continuous_dim

    def split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mu, logvar (B, D) and the logits (B, N, K)."""
        o = self.options
        mu, logvar = split_gaussian(h[:, : 2 * o.continuous_dim])
        return mu, logvar, h[:, 2 * o.continuous_dim :].view(-1, o.variables, o.categories)

    def forward(
        self, h: torch.Tensor, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        mu, logvar, logits = self.split(h)
        z, _ = reparameterise(mu, logvar, samples)
        c = self.categorical.draw(logits, samples, step, self.training)
        kl_continuous = gaussian_kl(mu, logvar)
        kl_categorical = categorical_kl(logits.log_softmax(-1))
        return BottleneckOutput(
            z=torch.cat([z, c.flatten(2)], -1).reshape(-1, self.latent_dim),
            code=torch.cat([mu, self.categorical.mode(logits)], 1),
            samples=samples,
            kl=torch.cat([kl_continuous, kl_categorical], 1),
            kl_parts={
                "continuous": kl_continuous.sum(1),
                "categorical": kl_categorical.sum(1),
            },
            params={"mu": mu, "logvar": logvar, "probs": logits.softmax(-1)},
            schedule={"temperature": self.categorical.temperature(step)},
        )

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        mu, _, logits = self.split(h)
        return torch.cat([mu, self.categorical.mode(logits)], 1)

    def sample_prior(self, n, *, device="cpu", generator=None):
        z = torch.randn(n, self.continuous_dim, generator=generator)
        return torch.cat([z, self.categorical.prior_draws(n, generator)], 1).to(device)

    def traversals(
        self, codes: torch.Tensor, rows: int, steps: int
    ) -> list[tuple[str, torch.Tensor]]:
        """The continuous dimensions swept (the most active first, the categorical part of
        the first code held), then each categorical variable through its categories."""
        d = self.continuous_dim
        base = torch.cat([codes[:, :d].median(0).values, codes[0, d:]])
        continuous = super().traversals(codes[:, :d], rows, steps)
        out = []
        for label, sweep in continuous:
            full = base.repeat(len(sweep), 1)
            full[:, :d] = sweep
            out.append((label, full))
        return out + self.categorical.sweeps(base, d, rows)
