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

import torch
from torch import nn

from aekit.bottlenecks.base import BottleneckOutput
from aekit.components import Dims, NoOptions, Registry


@dataclass
class ForwardPass:
    """What an objective sees of one forward pass."""

    x: torch.Tensor
    """The clean target batch, (B, ...)."""
    log_px: torch.Tensor
    """log p(x|z) of each draw, (samples, B), nats."""
    bottleneck: BottleneckOutput
    params: torch.Tensor
    """The decoder's output for all draws, (samples * B, ...)."""
    decoder: nn.Module

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
    """Whether the bottleneck must report log q(z|x) and log p(z) (a KL or a bound)."""
    needs_prior = False
    """Whether the bottleneck must have a prior to sample from (WAE, SWAE)."""

    def __init__(self, options: NoOptions, dims: Dims) -> None:
        self.options = options
        self.dims = dims

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
        for name, value in extra.items():
            terms[name] = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
        return terms


OBJECTIVES: Registry[Objective] = Registry("objective")


def auxiliary(b: BottleneckOutput) -> torch.Tensor | float:
    return sum((v.mean() for v in b.losses.values()), 0.0)
