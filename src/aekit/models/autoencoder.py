"""The autoencoder as a composition: corrupt? -> encoder -> bottleneck -> decoder -> p(x|z)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aekit.bottlenecks.base import Bottleneck, BottleneckOutput
from aekit.corruption import Corruption
from aekit.errors import AekitError
from aekit.likelihoods import Likelihood
from aekit.models.config import ModelConfig
from aekit.objectives import Objective


@dataclass
class AutoencoderOutput:
    reconstruction: torch.Tensor
    """E[x|z] for the sampled z, shaped like x."""
    params: torch.Tensor
    """The likelihood's parameters from the decoder (e.g. Bernoulli logits)."""
    latents: torch.Tensor
    """The z the decoder saw (a sample for stochastic bottlenecks)."""
    code: torch.Tensor
    """The deterministic code (posterior mean)."""
    loss: torch.Tensor
    """The training objective, a scalar."""
    terms: dict[str, torch.Tensor]
    """Named batch means: nll, kl, elbo (nats per example), loss, schedule values."""
    bottleneck: BottleneckOutput


class Autoencoder(nn.Module):
    """Inference (`encode`, `decode`, `reconstruct`, `sample`) is kept apart from the training
    objective (`forward`): encoding gives the posterior mean and pays for no loss."""

    def __init__(
        self,
        encoder: nn.Module,
        bottleneck: Bottleneck,
        decoder: nn.Module,
        likelihood: Likelihood,
        objective: Objective,
        corruption: Corruption,
        config: ModelConfig,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.bottleneck = bottleneck
        self.decoder = decoder
        self.likelihood = likelihood
        self.corruption = corruption
        self.objective = objective
        self.config = config

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.config.input_shape

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def has_prior(self) -> bool:
        return self.bottleneck.has_prior

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise AekitError(
                f"input has shape {tuple(x.shape[1:])} per example but the model expects "
                f"{self.input_shape}"
            )

    def forward(
        self, x: torch.Tensor, step: int | None = None, corrupt: bool | None = None
    ) -> AutoencoderOutput:
        """The training objective on a batch. `step` drives schedules (None: their end);
        the input is corrupted in training mode unless `corrupt` says otherwise."""
        self.check_input(x)
        corrupt = self.training if corrupt is None else corrupt
        b = self.bottleneck(self.encoder(self.corruption(x) if corrupt else x))
        params = self.decoder(b.z)
        nll = -self.likelihood.log_prob(params, x)
        objective = self.objective(nll, b, step)
        return AutoencoderOutput(
            reconstruction=self.likelihood.mean(params),
            params=params,
            latents=b.z,
            code=b.code,
            loss=objective.loss,
            terms=objective.terms,
            bottleneck=b,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic code of x: the posterior mean for VAEs. (B, latent_dim)."""
        self.check_input(x)
        return self.bottleneck.encode(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], shaped like the data."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise AekitError(
                f"latents have shape {tuple(z.shape)}; expected (N, {self.latent_dim})"
            )
        return self.likelihood.mean(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, mean: bool = True
    ) -> torch.Tensor:
        """n draws z ~ p(z) decoded to E[x|z] (`mean=True`) or to a sample x ~ p(x|z)."""
        if n < 1:
            raise AekitError(f"number of samples must be at least 1 (got {n})")
        z = self.bottleneck.sample_prior(n, device=self.device, generator=generator)
        params = self.decoder(z)
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params, generator)
