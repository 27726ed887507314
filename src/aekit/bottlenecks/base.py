"""The bottleneck protocol: what sits between encoder and decoder.

Families differ mainly here. A bottleneck turns the encoder's features `h` into the code the
decoder sees, and reports what its family adds to the objective.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from aekit.components import Dims, NoOptions, Registry
from aekit.errors import AekitError


@dataclass
class BottleneckOutput:
    z: torch.Tensor
    """What the decoder sees: a sample for stochastic bottlenecks."""
    code: torch.Tensor
    """The deterministic representation (posterior mean, or the code itself)."""
    kl: torch.Tensor | None = None
    """KL(q(z|x) || p(z)) per example and latent dimension, (B, latent_dim), in nats."""
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-example auxiliary losses, (B,) each, added to the objective as they are."""
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    """The posterior's parameters (e.g. mu, logvar), for bounds that need log q(z|x)."""


class Bottleneck(nn.Module, ABC):
    """Subclasses define forward; encode and sample_prior have defaults."""

    Options = NoOptions
    has_prior = False
    """Whether p(z) is defined, so that `sample_prior` and a KL term exist."""

    def __init__(self, options: NoOptions, dims: Dims) -> None:
        super().__init__()
        self.options = options
        self.latent_dim = dims.latent_dim

    @property
    def in_features(self) -> int:
        """Width of the encoder output this bottleneck consumes."""
        return self.latent_dim

    @abstractmethod
    def forward(self, h: torch.Tensor) -> BottleneckOutput:
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
        raise AekitError(
            f"the {self.kind!r} bottleneck has no prior to sample from "  # type: ignore[attr-defined]
            "(deterministic autoencoders learn no p(z))"
        )


BOTTLENECKS: Registry[Bottleneck] = Registry("bottleneck")
