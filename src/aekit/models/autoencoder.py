"""The autoencoder as a composition: corrupt? -> encoder -> bottleneck -> decoder -> p(x|z)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.bottlenecks.quantizer import Quantizer
from aekit.corruption import Corruption
from aekit.data.tensor_data import Batch, TensorData
from aekit.errors import AekitError
from aekit.likelihoods import Likelihood
from aekit.models.config import ModelConfig
from aekit.objectives import ForwardPass, Objective


@dataclass
class AutoencoderOutput:
    reconstruction: torch.Tensor
    """E[x|z] for the first draw of z, shaped like x."""
    params: torch.Tensor
    """The likelihood's parameters from the decoder (e.g. Bernoulli logits), all draws."""
    latents: torch.Tensor
    """The z the decoder saw, (samples * B, latent_dim)."""
    code: torch.Tensor
    """The deterministic code (posterior mean)."""
    loss: torch.Tensor
    """The training objective, a scalar."""
    terms: dict[str, torch.Tensor]
    """Named batch means: nll, kl, elbo (nats per example), loss, schedule values."""
    bottleneck: BottleneckOutput
    log_px: torch.Tensor
    """log p(x|z) per draw, (samples, B)."""
    inference_loss: torch.Tensor | None = None
    """The encoder's own loss for objectives that train it apart (PIWAE)."""


Condition = torch.Tensor | int | None
"""Labels (int or (B,) integers) for label-conditioned models, (B, d) vectors otherwise."""


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
        self.latent_density = None
        """A density fitted on training codes (`aekit.latent_density`), to sample models that
        learn no prior."""
        bottleneck.attach(encoder)

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
    def conditional(self) -> bool:
        return self.config.condition_width > 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_data(self, data: TensorData) -> None:
        """Whether a dataset fits the model: shape, labels, and the likelihood's support."""
        if self.conditional and data.y is None:
            raise AekitError(
                f"the model is conditional but the {data.name} has no labels/conditions"
            )
        self.check_input(data.x[:1])
        self.likelihood.check_data(data.x, data.name)

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise AekitError(
                f"input has shape {tuple(x.shape[1:])} per example but the model expects "
                f"{self.input_shape}"
            )

    def condition_vector(self, condition: Condition, n: int) -> torch.Tensor | None:
        """The conditioning vectors (n, width) of labels or vectors; None if unconditional."""
        cfg = self.config
        if not self.conditional:
            if condition is not None:
                raise AekitError("this model is not conditional; do not pass a condition")
            return None
        if condition is None:
            what = (
                f"labels 0..{cfg.condition_classes - 1}"
                if cfg.condition_classes
                else (f"vectors of width {cfg.condition_dim}")
            )
            raise AekitError(f"this model is conditional: pass a condition ({what})")
        c = torch.as_tensor(condition, device=self.device)
        if cfg.condition_classes:
            if c.is_floating_point() and not bool((c == c.round()).all()):
                raise AekitError("label conditions must be integers")
            c = c.long().reshape(-1)
            bad = (c < 0) | (c >= cfg.condition_classes)
            if bool(bad.any()):
                raise AekitError(
                    f"label {int(c[bad][0])} is outside the trained range "
                    f"0..{cfg.condition_classes - 1}"
                )
            c = F.one_hot(c, cfg.condition_classes).float()
        else:
            c = c.float().reshape(-1, c.shape[-1]) if c.ndim else c.reshape(1, 1).float()
            if c.shape[1] != cfg.condition_dim:
                raise AekitError(
                    f"the condition has width {c.shape[1]}; this model was trained on "
                    f"vectors of width {cfg.condition_dim}"
                )
        if c.shape[0] == 1 and n > 1:
            c = c.expand(n, -1)
        if c.shape[0] != n:
            raise AekitError(f"{c.shape[0]} conditions for {n} examples")
        return c

    def features(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return self.encoder(x) if c is None else self.encoder(x, c)

    def decoder_params(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if c is not None:
            c = c.repeat(z.shape[0] // c.shape[0], 1)  # one copy per draw, sample-major
            z = torch.cat([z, c], 1)
        return self.decoder(z)

    def forward(
        self,
        x: torch.Tensor,
        step: int | None = None,
        corrupt: bool | None = None,
        condition: Condition = None,
    ) -> AutoencoderOutput:
        """The training objective on a batch. `step` drives schedules (None: their end);
        the input is corrupted in training mode unless `corrupt` says otherwise."""
        self.check_input(x)
        c = self.condition_vector(condition, x.shape[0])
        corrupt = self.training if corrupt is None else corrupt
        samples = self.objective.samples
        b = self.bottleneck(self.features(self.corruption(x) if corrupt else x, c), samples)
        params = self.decoder_params(b.z, c)
        log_px = self.log_px(params, x)
        objective = self.objective(ForwardPass(x, log_px, b, params, self.decoder), step)
        return AutoencoderOutput(
            reconstruction=self.likelihood.mean(params[: x.shape[0]]),
            params=params,
            latents=b.z,
            code=b.code,
            loss=objective.loss,
            terms=objective.terms,
            bottleneck=b,
            log_px=log_px,
            inference_loss=objective.inference_loss,
        )

    def step_forward(self, batch: Batch, step: int) -> AutoencoderOutput:
        """One training batch, for the shared trainer."""
        return self(batch.x, step=step, condition=batch.y if self.conditional else None)

    def after_step(self) -> None:
        """Called after each optimiser step (nothing to do: codebooks update in forward)."""

    def schedule_end(self) -> int:
        """The step at which the objective's schedules (warm-ups, annealing) end."""
        return self.objective.schedule_end()

    def log_px(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) of every draw, (samples, B), from the decoder's output for
        sample-major draws (samples * B, ...) and the batch x (B, ...)."""
        return self.likelihood.log_prob(params.reshape(-1, *x.shape), x)

    def backward(self, out: AutoencoderOutput) -> None:
        """Gradients of the objective. When the objective trains the inference network on a
        loss of its own (PIWAE), two backward passes share the one forward."""
        if out.inference_loss is None:
            out.loss.backward()
            return
        generative, inference = self.parameter_groups()
        out.loss.backward(inputs=generative, retain_graph=True)
        out.inference_loss.backward(inputs=inference)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(generative, inference): the decoder, likelihood and prior p(z) vs. the encoder
        and the rest of the posterior q(z|x)."""
        generative = [
            *self.decoder.parameters(),
            *self.likelihood.parameters(),
            *self.bottleneck.generative_parameters(),
        ]
        ids = {id(p) for p in generative}
        inference = [p for p in self.parameters() if id(p) not in ids]
        return [p for p in generative if p.requires_grad], [p for p in inference if p.requires_grad]

    def encode(self, x: torch.Tensor, condition: Condition = None) -> torch.Tensor:
        """The deterministic code of x: the posterior mean for VAEs. (B, latent_dim)."""
        self.check_input(x)
        c = self.condition_vector(condition, x.shape[0])
        return self.bottleneck.encode(self.features(x, c))

    def decode(self, z: torch.Tensor, condition: Condition = None) -> torch.Tensor:
        """E[x|z], shaped like the data."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise AekitError(
                f"latents have shape {tuple(z.shape)}; expected (N, {self.latent_dim})"
            )
        c = self.condition_vector(condition, z.shape[0])
        return self.likelihood.mean(self.decoder_params(z, c))

    def reconstruct(self, x: torch.Tensor, condition: Condition = None) -> torch.Tensor:
        return self.decode(self.encode(x, condition), condition)

    @property
    def quantizer(self) -> Quantizer:
        """The bottleneck, when it is a quantizer (else a clear error)."""
        if not isinstance(self.bottleneck, Quantizer):
            kinds = [k for k in BOTTLENECKS.names() if issubclass(BOTTLENECKS[k], Quantizer)]
            raise AekitError(
                f"the {self.config.bottleneck.kind!r} bottleneck is continuous: code indices "
                f"exist only for quantizers ({', '.join(kinds)})"
            )
        return self.bottleneck

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor, condition: Condition = None) -> torch.Tensor:
        """The code indices of x, (B, positions, slots) int64: one index per position for VQ,
        FSQ, LFQ and BSQ, one per stage (residual VQ) or group (product VQ)."""
        self.check_input(x)
        c = self.condition_vector(condition, x.shape[0])
        return self.quantizer.encode_indices(self.features(x, c))

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor, condition: Condition = None) -> torch.Tensor:
        """E[x|z] for code indices (B, positions, slots); residual VQ also takes a prefix of
        its stages (a coarser code)."""
        return self.decode(self.quantizer.codes_from_indices(indices), condition)

    def sample_latents(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from p(z), or from the density fitted on training codes for models that
        learn no prior. (n, latent_dim)."""
        if n < 1:
            raise AekitError(f"number of samples must be at least 1 (got {n})")
        if self.has_prior:
            return self.bottleneck.sample_prior(n, device=self.device, generator=generator)
        if self.latent_density is not None:
            draws = self.latent_density.sample(n, generator=generator).to(self.device)
            if getattr(self.latent_density, "discrete", False):  # a prior over code indices
                return self.quantizer.codes_from_indices(draws)
            return draws
        raise AekitError(
            f"a {self.config.recipe!r} model learns no prior: fit a density on its training "
            "codes first (aekit.latent_density.fit_for_model; `aekit train` does this)"
        )

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        mean: bool = True,
        condition: Condition = None,
    ) -> torch.Tensor:
        """n draws z ~ p(z) decoded to E[x|z] (`mean=True`) or to a sample x ~ p(x|z)."""
        z = self.sample_latents(n, generator=generator)
        params = self.decoder_params(z, self.condition_vector(condition, n))
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params, generator)
