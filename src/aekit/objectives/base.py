"""The objective protocol: how one forward pass becomes the loss.

Every objective reports the same honest quantities beside its loss: `nll` (-log p(x|z),
nats per example, averaged over the draws), and for bottlenecks with a density `kl` and
`elbo = -(nll + kl)`, whatever weights, warm-ups, free bits or tighter bounds shape the
loss. Passing `step=None` evaluates the objective at the end of its schedules, which is what
validation and early stopping compare.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput, PriorOptions
from aekit.components import Dims, NoOptions, Registry, options_class
from aekit.errors import AekitError
from aekit.priors import PRIORS


@dataclass
class ForwardPass:
    """What an objective sees of one forward pass."""

    x: torch.Tensor
    """The target batch, (B, ...): the clean input, or the paired target of a transcoder."""
    bottleneck: BottleneckOutput
    params: torch.Tensor
    """The decoder's output for all draws, (samples * B, ...)."""
    decoder: nn.Module
    likelihood: Any = None
    """p(x|z), whose `log_prob` gives `log_px` when an objective asks for it."""
    source: torch.Tensor | None = None
    """The model's (uncorrupted) input, when the target is another tensor."""

    @cached_property
    def log_px(self) -> torch.Tensor:
        """log p(x|z) of each draw, (samples, B), nats (computed once, when first read)."""
        return self.likelihood.log_prob(self.params.reshape(-1, *self.x.shape), self.x)

    @property
    def computed_log_px(self) -> torch.Tensor | None:
        """`log_px` if the objective read it (sparse coding never does), else None."""
        return self.__dict__.get("log_px")

    @property
    def nll(self) -> torch.Tensor:
        """-log p(x|z) per example, averaged over the draws, (B,)."""
        return -self.log_px.mean(0)

    def log_weights(self) -> torch.Tensor:
        """Importance log-weights log p(x, z_s) - log q(z_s|x), (samples, B)."""
        b = self.bottleneck
        return self.log_px + b.log_prior - b.log_q


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    """The scalar that is minimised (a batch mean)."""
    terms: dict[str, torch.Tensor]
    """Named batch means (detached): nll, kl, elbo, loss, and schedule values."""
    inference_loss: torch.Tensor | None = None
    """When set, the inference network (encoder, posterior) is trained on this scalar and the
    generative model (decoder, prior) on `loss` (PIWAE)."""


def ramp(step: int | None, steps: int) -> float:
    """Linear 0 -> 1 over `steps` steps; 1 when `steps` is 0 or at the end (step=None)."""
    if step is None or steps <= 0:
        return 1.0
    return min(1.0, step / steps)


class Objective(ABC):
    """Combines the NLL and the bottleneck's terms into the loss; subclasses define __call__."""

    Options = NoOptions
    needs_density = False
    """Whether the bottleneck must report log q(z|x) and log p(z) (a bound on log p(x))."""
    needs_kl = False
    """Whether the bottleneck must report a KL to its prior (analytic, or from densities)."""
    needs_prior = False
    """Whether the bottleneck must have a prior to sample from (WAE, SWAE)."""
    paired_targets = False
    """Whether it can train a model to predict a paired target instead of its input."""

    def __init__(self, options: NoOptions, dims: Dims) -> None:
        self.options = options
        self.dims = dims

    def attach(self, bottleneck: Bottleneck, decoder: nn.Module, likelihood: Any = None) -> None:
        """Called once by the model: refuse, with a one-line error, the parts this objective
        cannot train; keep what it needs of them."""
        kind = f"objective {self.kind!r}"  # type: ignore[attr-defined]
        b = bottleneck.kind  # type: ignore[attr-defined]
        if self.needs_density and not bottleneck.has_density:
            raise AekitError(
                f"{kind} needs a stochastic bottleneck with densities q(z|x) and p(z) "
                f"(gaussian, hierarchical); {b!r} has none"
            )
        if self.needs_kl and not bottleneck.has_kl:
            raise AekitError(
                f"{kind} needs a stochastic bottleneck with densities q(z|x) and p(z) or an "
                f"analytic KL to its prior (gaussian, hierarchical, categorical, joint); {b!r} "
                "has none"
            )
        if self.needs_prior and bottleneck.prior_to_match is None:
            raise AekitError(f"{kind} matches the codes to a prior; {prior_hint(b)}")

    @property
    def samples(self) -> int:
        """Latent draws per example that the forward pass must provide."""
        return 1

    @abstractmethod
    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        """The loss and named terms of a batch; `step=None` means the end of the schedules."""

    def schedule_end(self) -> int:
        """The step at which this objective's schedules reach their final values."""
        return 0

    def see_training_data(self, examples: int) -> None:
        """Told once, before training starts, how many examples the training data holds:
        an option `dataset_size` left at 0 takes it (estimators that mix over the data set,
        beta-TCVAE's, need it)."""
        if getattr(self.options, "dataset_size", None) == 0:
            self.options.dataset_size = examples  # type: ignore[attr-defined]

    def as_data(self, prediction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean in the units of the data x it was predicted for: the same
        tensor, unless the objective's targets are a transform of x (normalised patches)."""
        return prediction

    @staticmethod
    def report(f: ForwardPass, loss: torch.Tensor, **extra: float | torch.Tensor):
        nll = f.nll.detach()
        terms = {"loss": loss.detach(), "nll": nll.mean()}
        kl = f.bottleneck.kl_per_example()
        if kl is not None:
            kl = kl.detach()
            terms["kl"] = kl.mean()
            terms["elbo"] = -(nll + kl).mean()
        for name, value in f.bottleneck.losses.items():
            terms[name] = value.detach().mean()
        terms.update(schedule_terms(f.bottleneck))
        for name, value in extra.items():
            terms[name] = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
        return terms


class TrainsAuxiliary(Objective):
    """An objective with a network of its own, trained by an optimiser of its own (FactorVAE's
    discriminator): the model holds `auxiliary` as a part, and the Trainer steps it after each
    step of the model on `auxiliary_loss` with `auxiliary_optimizer`."""

    auxiliary: nn.Module
    auxiliary_name = "auxiliary"
    """What the auxiliary network is called in checkpoints and messages."""

    @abstractmethod
    def auxiliary_loss(self, b: BottleneckOutput) -> ObjectiveOutput:
        """The loss of the `auxiliary` network on a training step's bottleneck output (whose
        codes it must detach: the model was already stepped on them)."""

    @abstractmethod
    def auxiliary_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser of the `auxiliary` network."""


OBJECTIVES: Registry[Objective] = Registry("objective")


def prior_hint(kind: str) -> str:
    """Why bottleneck `kind` has no prior to match, and what to choose instead."""
    if takes_prior(kind):
        return f"the {kind!r} bottleneck has none: pass --prior ({', '.join(PRIORS.names())})"
    takers = [k for k in BOTTLENECKS.names() if takes_prior(k)]
    return (
        f"the {kind!r} bottleneck has no --prior to match (any p(z) it has is built into it); "
        f"choose a bottleneck that takes one: {', '.join(takers)}"
    )


def takes_prior(kind: str) -> bool:
    return issubclass(options_class(BOTTLENECKS[kind]), PriorOptions)


def schedule_terms(b: BottleneckOutput) -> dict[str, torch.Tensor]:
    """The bottleneck's schedule values at this step (a temperature, k), as terms."""
    return {name: torch.tensor(float(value)) for name, value in b.schedule.items()}


def auxiliary(b: BottleneckOutput) -> torch.Tensor | float:
    return sum((v.mean() for v in b.losses.values()), 0.0)
