"""The bottleneck protocol: what sits between encoder and decoder.

Families differ mainly here. A bottleneck turns the encoder's features `h` into the code the
decoder sees, and reports what its family adds to the objective. Stochastic bottlenecks draw
`samples` latents per example (importance-weighted bounds need several) and report the
log-densities log q(z|x) and log p(z) of each draw.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from aekit.components import Dims, NoOptions, Registry
from aekit.errors import AekitError
from aekit.priors import PRIORS, Prior, make_prior


@dataclass
class BottleneckOutput:
    z: torch.Tensor
    """What the decoder sees, (samples * B, latent_dim), sample-major: rows s*B..(s+1)*B-1
    hold draw s for the whole batch."""
    code: torch.Tensor
    """The deterministic representation (posterior mean, or the code itself), (B, latent_dim)."""
    samples: int = 1
    kl: torch.Tensor | None = None
    """Analytic KL(q(z|x) || p(z)) per example and latent dimension, (B, latent_dim), in nats,
    where it has a closed form."""
    log_q: torch.Tensor | None = None
    """log q(z|x) of each draw, (samples, B)."""
    log_prior: torch.Tensor | None = None
    """log p(z) of each draw, (samples, B)."""
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-example auxiliary losses, (B,) each, added to the objective as they are."""
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    """The posterior's parameters (e.g. mu, logvar)."""
    prior: Prior | None = None
    """The prior of this latent space (matching objectives draw from it)."""

    def kl_per_example(self) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) per example, (B,): analytic where possible, else the Monte-Carlo
        estimate mean_s [log q(z_s|x) - log p(z_s)]."""
        if self.kl is not None:
            return self.kl.sum(-1)
        if self.log_q is not None and self.log_prior is not None:
            return (self.log_q - self.log_prior).mean(0)
        return None


@dataclass
class PriorOptions:
    prior: str = "none"
    """The prior p(z) to match and sample from: none, normal, uniform, ring, mixture, or a
    registered one."""
    prior_components: int = 0
    """Components of a mixture prior (0: its default, 10)."""

    def __post_init__(self) -> None:
        if self.prior != "none":
            PRIORS[self.prior]  # an unknown name is reported here, with the choices
        if self.prior_components < 0:
            raise AekitError(f"prior_components must be >= 0 (got {self.prior_components})")


class Bottleneck(nn.Module, ABC):
    """Subclasses define forward; encode and sample_prior have defaults."""

    Options = NoOptions
    has_density = False
    """Whether log q(z|x) and log p(z) are reported, so that KL terms, importance-weighted
    bounds and likelihood estimates exist."""

    def __init__(self, options: NoOptions, dims: Dims) -> None:
        super().__init__()
        self.options = options
        self.latent_dim = dims.latent_dim
        name = getattr(options, "prior", "none")
        self.prior: Prior | None = (
            None if name == "none" else make_prior(name, dims, options.prior_components)
        )

    @property
    def has_prior(self) -> bool:
        """Whether p(z) is defined, so that `sample_prior` works."""
        return self.prior is not None

    @property
    def in_features(self) -> int:
        """Width of the encoder output this bottleneck consumes."""
        return self.latent_dim

    def attach(self, encoder: nn.Module) -> None:
        """Called once by the model: priors built from the encoder (VampPrior) hook in here."""

    @abstractmethod
    def forward(self, h: torch.Tensor, samples: int = 1) -> BottleneckOutput:
        """The code the decoder sees, and what this family adds to the objective."""

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """The deterministic code of features `h` (no sampling)."""
        return self.forward(h).code

    def sample_prior(
        self,
        n: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if self.prior is None:
            raise AekitError(
                f"the {self.kind!r} bottleneck has no prior to sample from "  # type: ignore[attr-defined]
                "(deterministic autoencoders learn no p(z); fit a latent density first)"
            )
        return self.prior.sample(n, generator).to(device)

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of p(z) (they belong to the generative model, not to inference)."""
        return self.prior.parameters() if self.prior is not None else iter(())


def require_density(name: str, kind: str) -> None:
    def usable(n: str) -> bool:
        return PRIORS[n].has_density and PRIORS[n].full_support

    if name == "none" or not usable(name):
        with_density = [n for n in PRIORS.names() if usable(n)]
        raise AekitError(
            f"the {kind} bottleneck needs a prior with a density everywhere; got {name!r} "
            f"(choose from {', '.join(with_density)})"
        )


BOTTLENECKS: Registry[Bottleneck] = Registry("bottleneck")
