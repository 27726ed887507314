"""Training objectives: how the reconstruction NLL and the bottleneck's terms are combined.

Every objective reports the same honest quantities beside its loss: `nll` (-log p(x|z),
nats per example), and for stochastic bottlenecks `kl` and `elbo = -(nll + kl)`, whatever
weights, warm-ups or free bits shape the loss. Passing `step=None` evaluates the objective
at the end of its schedules, which is what validation and early stopping compare.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from aekit.bottlenecks.base import BottleneckOutput
from aekit.components import Dims, NoOptions, Registry
from aekit.errors import AekitError


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    """The scalar that is minimised (a batch mean)."""
    terms: dict[str, torch.Tensor]
    """Named batch means (detached): nll, kl, elbo, loss, and schedule values."""


def ramp(step: int | None, steps: int) -> float:
    """Linear 0 -> 1 over `steps` steps; 1 when `steps` is 0 or at the end (step=None)."""
    if step is None or steps <= 0:
        return 1.0
    return min(1.0, step / steps)


class Objective(ABC):
    """Combines the NLL and the bottleneck's terms into the loss; subclasses define __call__."""

    Options = NoOptions
    needs_kl = False

    def __init__(self, options: NoOptions, dims: Dims) -> None:
        self.options = options

    @abstractmethod
    def __call__(self, nll: torch.Tensor, b: BottleneckOutput, step: int | None) -> ObjectiveOutput:
        """The loss and named terms of a batch; `step=None` means the end of the schedules."""

    def schedule_end(self) -> int:
        """The step at which this objective's schedules reach their final values."""
        return 0

    @staticmethod
    def report(
        nll: torch.Tensor, b: BottleneckOutput, loss: torch.Tensor, **extra: float
    ) -> dict[str, torch.Tensor]:
        terms = {"loss": loss.detach(), "nll": nll.detach().mean()}
        if b.kl is not None:
            kl = b.kl.detach().sum(1)
            terms["kl"] = kl.mean()
            terms["elbo"] = -(nll.detach() + kl).mean()
        for name, value in b.losses.items():
            terms[name] = value.detach().mean()
        for name, value in extra.items():
            terms[name] = torch.tensor(value)
        return terms


OBJECTIVES: Registry[Objective] = Registry("objective")


def auxiliary(b: BottleneckOutput) -> torch.Tensor | float:
    return sum((v.mean() for v in b.losses.values()), 0.0)


@OBJECTIVES.register("reconstruction")
class Reconstruction(Objective):
    """-log p(x|z) (plus any auxiliary loss of the bottleneck)."""

    def __call__(self, nll: torch.Tensor, b: BottleneckOutput, step: int | None) -> ObjectiveOutput:
        loss = nll.mean() + auxiliary(b)
        return ObjectiveOutput(loss, self.report(nll, b, loss))


@dataclass
class ELBOOptions:
    beta: float = 1.0
    """Weight of the KL term: 1 is the ELBO (Kingma & Welling), >1 the beta-VAE (Higgins et al.)."""
    kl_warmup_steps: int = 0
    """Raise the KL weight linearly from 0 to beta over this many steps (0: no warm-up)."""
    free_bits: float = 0.0
    """Free bits (Kingma et al. 2016): each latent dimension's batch-mean KL counts as at least
    this many nats in the loss (0: off). The reported KL and ELBO are never clamped."""

    def __post_init__(self) -> None:
        if self.beta < 0 or self.kl_warmup_steps < 0 or self.free_bits < 0:
            raise AekitError("beta, kl_warmup_steps and free_bits must be non-negative")


@OBJECTIVES.register("elbo")
class ELBO(Objective):
    """nll + beta * KL: the negative ELBO at beta = 1."""

    Options = ELBOOptions
    needs_kl = True

    def schedule_end(self) -> int:
        return self.options.kl_warmup_steps

    def __call__(self, nll: torch.Tensor, b: BottleneckOutput, step: int | None) -> ObjectiveOutput:
        o = self.options
        weight = o.beta * ramp(step, o.kl_warmup_steps)
        if o.free_bits > 0:
            kl_term = b.kl.mean(0).clamp(min=o.free_bits).sum()
        else:
            kl_term = b.kl.sum(1).mean()
        loss = nll.mean() + weight * kl_term + auxiliary(b)
        return ObjectiveOutput(loss, self.report(nll, b, loss, kl_weight=weight))


@dataclass
class CapacityOptions:
    gamma: float = 1000.0
    """Weight of |KL - C| (Burgess et al. 2018 use 1000)."""
    capacity_max: float = 25.0
    """C_max, the final capacity in nats (25 in the paper)."""
    capacity_steps: int = 100_000
    """Steps over which C grows linearly from 0 to C_max (100,000 in the paper)."""

    def __post_init__(self) -> None:
        if self.gamma < 0 or self.capacity_max < 0 or self.capacity_steps < 0:
            raise AekitError("gamma, capacity_max and capacity_steps must be non-negative")


@OBJECTIVES.register("capacity")
class Capacity(Objective):
    """Capacity-annealed beta-VAE (Burgess et al. 2018): nll + gamma * |KL - C(step)|."""

    Options = CapacityOptions
    needs_kl = True

    def schedule_end(self) -> int:
        return self.options.capacity_steps

    def capacity(self, step: int | None) -> float:
        return self.options.capacity_max * ramp(step, self.options.capacity_steps)

    def __call__(self, nll: torch.Tensor, b: BottleneckOutput, step: int | None) -> ObjectiveOutput:
        c = self.capacity(step)
        kl = b.kl.sum(1).mean()
        loss = nll.mean() + self.options.gamma * (kl - c).abs() + auxiliary(b)
        return ObjectiveOutput(loss, self.report(nll, b, loss, capacity=c))
