"""The autoencoder as a composition: corrupt? -> encoder -> bottleneck -> decoder -> p(x|z).

The target is the input itself, or a paired target of another shape (`ModelConfig.output_shape`:
a transcoder reads one site and predicts another), as denoising already separates the
corrupted input from the clean target. The parts may have hooks the model calls for them:
`initialise(x, target)` (data-dependent initialisation, before or at the first training
batch), `after_backward()` (projected gradients) and `after_step()` (constraints after the
optimiser step), and `folded_state()` (their weights as saved for inference).

A masked autoencoder is the same composition: the patches corruption hides patches, the vit
encoder codes the visible ones (`aekit.patches.Tokens`), the decoder predicts every patch and
the objective scores the hidden ones. Its decoder reads patch tokens, not a pooled code, so it
reconstructs (`reconstruct(x)` shows it every patch) but decodes no code alone and samples
nothing (`decodes_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from aekit import distributed, precision
from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.bottlenecks.quantizer import Quantizer
from aekit.components import AuxiliaryStep
from aekit.corruption import Corruption
from aekit.data.tensor_data import Batch
from aekit.errors import AekitError
from aekit.likelihoods import Likelihood
from aekit.models.config import ModelConfig
from aekit.objectives import ForwardPass, Objective, TrainsAuxiliary
from aekit.patches import Masked
from aekit.sparse import Preactivations, SparseCode, SparseLatents


@dataclass
class AutoencoderOutput:
    reconstruction: torch.Tensor
    """E[x|z] for the first draw of z, shaped like x."""
    params: torch.Tensor
    """The likelihood's parameters from the decoder (e.g. Bernoulli logits), all draws."""
    latents: torch.Tensor | None
    """The z the decoder saw, (samples * B, latent_dim); None for a sparse code given only as
    (values, pattern) (`bottleneck.sparse`)."""
    code: torch.Tensor | None
    """The deterministic code (posterior mean); None likewise."""
    loss: torch.Tensor
    """The training objective, a scalar."""
    terms: dict[str, torch.Tensor]
    """Named batch means: nll, kl, elbo (nats per example), loss, schedule values; fvu, l0,
    dead, auxk, ... for sparse coding."""
    bottleneck: BottleneckOutput
    log_px: torch.Tensor | None
    """log p(x|z) per draw, (samples, B), when the objective computed it."""
    inference_loss: torch.Tensor | None = None
    """The encoder's own loss for objectives that train it apart (PIWAE)."""


Condition = torch.Tensor | int | None
"""Labels (int or (B,) integers) for label-conditioned models, (B, d) vectors otherwise."""


def label_error(label: float, classes: int) -> str:
    if isinstance(label, float) and label.is_integer() and abs(label) < 2**53:
        label = int(label)
    return (
        f"label {label} is outside the trained range 0..{classes - 1} (the model knows "
        f"{classes} classes)"
    )


class Autoencoder(nn.Module):
    """Inference (`encode`, `decode`, `reconstruct`, `sample`) is kept apart from the training
    objective (`forward`): encoding gives the posterior mean and pays for no loss."""

    run_kind = "autoencoder"
    """How a run directory records this model (`aekit.load` dispatches on it)."""

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
        prior = getattr(bottleneck, "prior", None)
        if config.condition_width and getattr(prior, "runs_encoder", False):
            raise AekitError(
                f"the {prior.kind!r} prior runs the encoder on its own pseudo-inputs, which "
                f"have no condition; the conditional {config.recipe!r} model's encoder needs "
                "one (choose another --prior)"
            )
        bottleneck.attach(encoder)
        objective.attach(bottleneck, decoder, likelihood)
        if isinstance(objective, TrainsAuxiliary):
            self.auxiliary = objective.auxiliary  # saved, moved and loaded with the model
        if getattr(decoder, "reads_tokens", False) and (
            config.bottleneck.kind != "identity" or prior is not None
        ):
            raise AekitError(
                "a vit token decoder reads one code per patch: they pass the identity "
                f"bottleneck as they are, with no --prior (got {config.bottleneck.kind!r}"
                f"{' with a prior' if prior is not None else ''})"
            )
        if corruption.part_of_objective and not getattr(decoder, "reads_tokens", False):
            raise AekitError(
                f"the {config.corruption.kind!r} corruption hides patches from a vit encoder "
                "whose decoder reads patch tokens: pass --body vit --token-decoder (the mae "
                "recipe)"
            )
        if config.output_shape is not None and not objective.paired_targets:
            raise AekitError(
                f"a paired target (--target-site, output_shape=) needs an objective that "
                f"predicts one (sparse-coding: transcoders); {config.objective.kind!r} "
                "reconstructs the input"
            )
        self._support_checked = False

    @property
    def parts(self) -> tuple[nn.Module, ...]:
        return (self.encoder, self.bottleneck, self.decoder, self.likelihood)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.config.input_shape

    @property
    def target_shape(self) -> tuple[int, ...]:
        """The shape of what the model predicts: the input's, or a paired target's."""
        return self.config.dims.target_shape

    @property
    def paired(self) -> bool:
        """Whether the model predicts a paired target (a transcoder) rather than its input."""
        return self.config.output_shape is not None

    @property
    def d_in(self) -> int:
        return math.prod(self.input_shape)

    @property
    def d_out(self) -> int:
        return math.prod(self.target_shape)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def decodes_tokens(self) -> bool:
        """Whether the decoder reads per-patch codes (a masked autoencoder) rather than the
        pooled code `encode` gives: such a model reconstructs but does not generate."""
        return getattr(self.decoder, "reads_tokens", False)

    @property
    def has_prior(self) -> bool:
        return self.bottleneck.has_prior

    @property
    def conditional(self) -> bool:
        return self.config.condition_width > 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the weights (float64 after `model.double()`)."""
        return next(self.parameters()).dtype

    def batch_to_model(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the model's device; floating values in the model's dtype (data sources
        give float32, a model may be float64). Integer batches keep their type, so that
        `check_input` still refuses them by name."""
        return x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)

    def check_data(self, data: Any) -> None:
        """Whether a data source fits the model: example shape, labels or paired targets, and
        the likelihood's support (checked on in-memory data)."""
        name = getattr(data, "name", "data")
        shape = tuple(getattr(data, "shape", ()))
        if shape != self.input_shape:
            raise AekitError(
                f"{name} holds examples of shape {shape}; the model expects {self.input_shape}"
            )
        x = getattr(data, "x", None)
        if self.conditional and getattr(data, "y", None) is None:
            raise AekitError(f"the model is conditional but the {name} has no labels/conditions")
        if self.paired:
            target_shape = tuple(getattr(data, "target_shape", ()))
            if target_shape != self.target_shape:
                raise AekitError(
                    f"{name} gives no paired targets of shape {self.target_shape} (it gives "
                    f"{target_shape or 'none'}); this model predicts one site from another"
                )
        elif x is not None:
            self.likelihood.check_data(x, name)

    def check_input(
        self, x: torch.Tensor, target: torch.Tensor | None = None, *, values: bool = True
    ) -> None:
        """Shape and dtype of a batch (and of a paired target, if given), and with `values`
        their finiteness, which waits for the device to compute it."""
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.input_shape:
            shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AekitError(
                f"input has shape {shape} per example but the model expects {self.input_shape}"
            )
        if not x.is_floating_point():
            raise AekitError(f"input has dtype {x.dtype}; expected floating-point values")
        if x.shape[0] == 0:
            raise AekitError("input is an empty batch")
        # One reduction in the common case; the element-wise test only when the sum is not
        # finite (NaN or inf inside, or an overflowing sum of huge values).
        if values and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise AekitError("input contains NaN or infinite values")
        if target is None:
            return
        if not self.paired:
            raise AekitError("a target was given but this model reconstructs its input")
        if target.shape != (x.shape[0], *self.target_shape):
            raise AekitError(
                f"target has shape {tuple(target.shape)}; expected "
                f"{(x.shape[0], *self.target_shape)}"
            )
        if not target.is_floating_point():
            raise AekitError(f"the target has dtype {target.dtype}; expected floating-point values")
        if values and not bool(torch.isfinite(target).all()):
            raise AekitError("the target contains NaN or infinite values")

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
        classes = cfg.condition_classes
        try:
            c = torch.as_tensor(condition, device=self.device)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            if classes and isinstance(condition, int):  # beyond int64
                raise AekitError(label_error(condition, classes)) from None
            raise AekitError(
                f"the condition must be labels or vectors of numbers (got {condition!r:.60})"
            ) from None
        if classes:
            if c.dtype == torch.bool or c.is_complex():
                raise AekitError(f"label conditions must be integers (got {c.dtype})")
            if c.is_floating_point() and not bool((c == c.round()).all()):
                raise AekitError("label conditions must be integers")
            c = c.reshape(-1)
            # Compared before the cast: a float label beyond int64 would wrap around.
            bad = (c < 0) | (c >= classes)
            if bool(bad.any()):
                raise AekitError(label_error(c[bad][0].item(), classes))
            c = F.one_hot(c.long(), classes).to(self.dtype)
        else:
            c = c.to(self.dtype)
            c = c.reshape(-1, c.shape[-1]) if c.ndim else c.reshape(1, 1)
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

    def features(self, x: torch.Tensor, c: torch.Tensor | None) -> Any:
        """The encoder's output: a tensor, or the dictionary's lazy pre-activations (which
        only sparse bottlenecks read lazily; the others get the dense product)."""
        h = self.encoder(x) if c is None else self.encoder(x, c)
        if isinstance(h, Preactivations) and not self.bottleneck.is_sparse:
            return h.dense()
        return h

    def decoder_params(
        self,
        z: torch.Tensor | SparseLatents | SparseCode,
        c: torch.Tensor | None,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decoder's output for latents z (dense, or a sparse code, which decoders that
        take one decode directly), the condition c and, for decoders that read it, the
        model's input `source`."""
        if isinstance(z, SparseLatents | SparseCode) and not getattr(
            self.decoder, "decodes_sparse", False
        ):
            z = z.dense() if isinstance(z, SparseLatents) else z.dense(self.latent_dim)
        if c is not None:
            c = c.repeat(z.shape[0] // c.shape[0], 1)  # one copy per draw, sample-major
            z = torch.cat([z, c], 1)
        if getattr(self.decoder, "reads_source", False):
            return self.decoder(z, source)
        return self.decoder(z)

    def _decoder_input(self, b: BottleneckOutput) -> torch.Tensor | SparseLatents:
        """The dense code when the bottleneck built one (plain autograd: `sparse_decode
        dense`), else its sparse code for decoders that take it (the kernels); for the others
        the dense code is built once, here, and kept in `b` for the objective."""
        if b.z is not None:
            return b.z
        if getattr(self.decoder, "decodes_sparse", False):
            return b.sparse
        b.z = b.dense_z()
        b.code = b.z if b.samples == 1 else b.code
        return b.z

    def forward(
        self,
        x: torch.Tensor,
        step: int | None = None,
        corrupt: bool | None = None,
        condition: Condition = None,
        target: torch.Tensor | None = None,
        *,
        check_values: bool = True,
    ) -> AutoencoderOutput:
        """The training objective on a batch (against `target` for paired models). `step`
        drives schedules (None: their end); the input is corrupted in training mode unless
        `corrupt` says otherwise. `check_values=False` skips the finiteness check, a device
        sync per batch: the Trainer's batches come from sources validated when they were
        made, and its loss check stops a run that still meets a non-finite value."""
        self.check_input(x, target, values=check_values)
        if self.paired and target is None:
            raise AekitError(
                "this model predicts a paired target (a transcoder): pass target= with the input"
            )
        if self.training and not self.is_initialised():
            # From every rank's rows of the batch: the initialisation a single process makes.
            gathered = None if target is None else distributed.gather_rows(target)
            self.initialise(distributed.gather_rows(x), gathered)
        if self.training and not self._support_checked:  # streamed data is checked here
            self.likelihood.check_data(x if target is None else target, "training batch")
            self._support_checked = True
        c = self.condition_vector(condition, x.shape[0])
        corrupt = self.training if corrupt is None else corrupt
        seen = self.corruption(x) if corrupt or self.corruption.part_of_objective else x
        if self.decodes_tokens and not isinstance(seen, Masked):
            seen = Masked.every_patch(seen)
        samples = self.objective.samples
        # bf16 training autocasts the bodies (and a sparse selection, which reads the
        # encoder's product); statistics, KL and likelihood sums stay float32 (precision.py).
        with precision.bodies(x.device):
            h = self.features(seen, c)
        with precision.bodies(x.device) if self.bottleneck.is_sparse else nullcontext():
            b = self.bottleneck(precision.full(h), samples, step)
        with precision.bodies(x.device):
            params = self.decoder_params(self._decoder_input(b), c, x)
        params = precision.full(params)
        y = x if target is None else target.to(params.dtype)
        f = ForwardPass(y, b, params, self.decoder, self.likelihood, x)
        objective = self.objective(f, step)
        return AutoencoderOutput(
            reconstruction=self.objective.as_data(self.likelihood.mean(params[: x.shape[0]]), x),
            params=params,
            latents=b.z,
            code=b.code,
            loss=objective.loss,
            terms=objective.terms,
            bottleneck=b,
            log_px=f.computed_log_px,
            inference_loss=objective.inference_loss,
        )

    def step_forward(self, batch: Batch, step: int) -> AutoencoderOutput:
        """One training batch, for the shared trainer: labels condition a conditional model,
        a paired model's target is `batch.y`."""
        if self.paired:
            return self(batch.x, step=step, target=batch.y, check_values=False)
        condition = batch.y if self.conditional else None
        return self(batch.x, step=step, condition=condition, check_values=False)

    def see_training_data(self, data: Any) -> None:
        """The objective is told the training set's size (beta-TCVAE mixes over it)."""
        self.objective.see_training_data(len(data))

    def auxiliary_steps(self) -> list[AuxiliaryStep]:
        """The objective's own network (FactorVAE's discriminator), trained on each step's
        bottleneck output."""
        objective = self.objective
        if not isinstance(objective, TrainsAuxiliary):
            return []
        return [
            AuxiliaryStep(
                objective.auxiliary_name,
                [p for p in objective.auxiliary.parameters() if p.requires_grad],
                objective.auxiliary_optimizer,
                lambda out: objective.auxiliary_loss(out.bottleneck),
            )
        ]

    def is_initialised(self) -> bool:
        """Whether the data-dependent initialisation (if the parts have one) has run."""
        check = getattr(self.decoder, "is_initialised", None)
        return True if check is None else check()

    @torch.no_grad()
    def initialise(self, x: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Data-dependent initialisation from a sample of inputs (N, ...) [and paired targets]:
        the dictionary's normalisation and b_dec. Training calls it on its first batch if
        nobody did before (a larger sample, as `aekit train` gives, is better)."""
        self.check_input(x, target)
        init = getattr(self.decoder, "initialise", None)
        if init is not None:
            init(x, target)

    def _call_hooks(self, name: str) -> None:
        for part in self.parts:
            hook = getattr(part, name, None)
            if hook is not None:
                hook()

    def after_backward(self) -> None:
        """Called after the gradients exist: each part's projection of its gradient (the
        unit-norm decoder rows' tangent space)."""
        self._call_hooks("after_backward")

    def after_step(self) -> None:
        """Called after each optimiser step: each part's constraint (unit-norm decoder rows).
        (Codebooks and other running statistics update in the training forward.)"""
        self._call_hooks("after_step")

    @property
    def calibrates(self) -> bool:
        """Whether the bottleneck fixes a statistic from the final weights (BatchTopK)."""
        return hasattr(self.bottleneck, "calibrate")

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Batch]) -> None:
        """Hand the encoder's features of training batches to a bottleneck that `calibrates`;
        for the others nothing is read."""
        if not self.calibrates:
            return
        was_training = self.training
        self.eval()
        try:
            self.bottleneck.calibrate(
                self.features(
                    b.x, self.condition_vector(b.y, b.x.shape[0]) if self.conditional else None
                )
                for b in batches
            )
        finally:
            self.train(was_training)

    def schedule_end(self) -> int:
        """The step at which the schedules (warm-ups, annealing, k, temperature) end."""
        return max(self.objective.schedule_end(), self.bottleneck.schedule_end())

    def log_px(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) of every draw, (samples, B), from the decoder's output for
        sample-major draws (samples * B, ...) and the batch x (B, ...)."""
        return self.likelihood.log_prob(params.reshape(-1, *x.shape), x)

    def backward(self, out: AutoencoderOutput) -> None:
        """Gradients of the objective. When the objective trains the inference network on a
        loss of its own (PIWAE), two backward passes share the one forward."""
        if out.inference_loss is None:
            out.loss.backward()
        else:
            generative, inference = self.parameter_groups()
            out.loss.backward(inputs=generative, retain_graph=True)
            out.inference_loss.backward(inputs=inference)
        self.after_backward()

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
        """The deterministic code of x: the posterior mean for VAEs, the dense latents of a
        sparse code. (B, latent_dim)."""
        self.check_input(x)
        c = self.condition_vector(condition, x.shape[0])
        return self.bottleneck.encode(self.features(x, c))

    def encode_sparse(self, x: torch.Tensor) -> SparseCode:
        """A sparse bottleneck's code of x as (values, indices), (B, k) each: the k selected
        latents of a k-sparse code, or the non-zero latents padded with zeros to the batch's
        largest count."""
        self.check_input(x)
        return self.sparse_bottleneck.encode_sparse(self.features(x, None))

    def decode(
        self,
        z: torch.Tensor | SparseCode,
        condition: Condition = None,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """E[x|z], shaped like the target: z dense (N, latent_dim) or a `SparseCode`;
        `source` is the input, for decoders that read it (a transcoder's skip)."""
        if isinstance(z, SparseCode):
            n = z.values.shape[0]
        elif z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise AekitError(
                f"latents have shape {tuple(z.shape)}; expected (N, {self.latent_dim})"
            )
        else:
            n = z.shape[0]
        c = self.condition_vector(condition, n)
        return self.likelihood.mean(self.decoder_params(z, c, source))

    def decode_sparse(
        self, values: torch.Tensor, indices: torch.Tensor, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E[x|z] of a sparse code (B, k) (`source`: the input, for a transcoder's skip)."""
        return self.decode(SparseCode(values, indices.long()), source=source)

    def reconstruct(self, x: torch.Tensor, condition: Condition = None) -> torch.Tensor:
        """The inference output for x, shaped like the target. k-sparse codes go through
        their (values, indices) when the decoder takes them (no dense code); a decoder of
        patch tokens sees the codes of every patch."""
        if self.decodes_tokens:
            self.check_input(x)
            self.condition_vector(condition, x.shape[0])  # refuses a condition
            b = self.bottleneck(self.features(Masked.every_patch(x), None))
            return self.objective.as_data(self.likelihood.mean(self.decoder_params(b.z, None)), x)
        if (
            condition is None
            and self.bottleneck.selects(training=False)
            and getattr(self.decoder, "decodes_sparse", False)
        ):
            return self.decode(self.encode_sparse(x), source=x)
        return self.decode(self.encode(x, condition), condition, source=x)

    @property
    def sparse_bottleneck(self) -> Bottleneck:
        """The bottleneck, when it is sparse (else a clear error)."""
        if not self.bottleneck.is_sparse:
            kinds = [k for k in BOTTLENECKS.names() if BOTTLENECKS[k].is_sparse]
            raise AekitError(
                f"the {self.config.bottleneck.kind!r} bottleneck is not sparse: sparse codes "
                f"exist only for {', '.join(kinds)}"
            )
        return self.bottleneck

    def decoder_directions(self) -> torch.Tensor:
        """Each latent's direction in the target space, (latent_dim, d_out), for a linear
        (dictionary) decoder: what a latent adds to the output per unit of activation."""
        directions = getattr(self.decoder, "output_directions", None)
        if directions is None:
            raise AekitError(
                f"the {self.config.body.kind!r} body's decoder is not linear: latents have no "
                "fixed output directions (the dictionary body has them)"
            )
        return directions()

    @torch.no_grad()
    def folded_state_dict(self) -> dict[str, torch.Tensor]:
        """The state for inference: parts that normalise internally (the dictionary) fold
        their constants into their weights, so the saved model gives the same outputs on raw
        inputs. Not for further training."""
        state = self.state_dict()
        for name, part in (("encoder", self.encoder), ("decoder", self.decoder)):
            fold = getattr(part, "folded_state", None)
            if fold is not None:
                state.update({f"{name}.{k}": v for k, v in fold().items()})
        return state

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
        if self.decodes_tokens:
            raise AekitError(
                f"a {self.config.recipe!r} model's decoder reads the codes of visible patches: "
                "it reconstructs and completes images but has no codes to sample from"
            )
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
