"""Reconstruction, the ELBO with its beta / warm-up / free-bits variants, the
capacity-annealed beta-VAE, and JointVAE's capacity per kind of latent."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aekit.errors import AekitError
from aekit.objectives.base import (
    OBJECTIVES,
    ForwardPass,
    Objective,
    ObjectiveOutput,
    auxiliary,
    ramp,
)


@OBJECTIVES.register("reconstruction")
class Reconstruction(Objective):
    """-log p(x|z) (plus any auxiliary loss of the bottleneck)."""

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        loss = f.nll.mean() + auxiliary(f.bottleneck)
        return ObjectiveOutput(loss, self.report(f, loss))


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
    """nll + beta * KL: the negative ELBO at beta = 1. The KL is analytic where the prior
    allows (N(0, I)), else the single-draw Monte-Carlo estimate log q(z|x) - log p(z)."""

    Options = ELBOOptions
    needs_kl = True

    def schedule_end(self) -> int:
        return self.options.kl_warmup_steps

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        o, b = self.options, f.bottleneck
        weight = o.beta * ramp(step, o.kl_warmup_steps)
        if o.free_bits > 0:
            if b.kl is None:
                raise AekitError(
                    "free bits need a per-dimension analytic KL (the normal prior); this "
                    "prior's KL is a Monte-Carlo estimate"
                )
            kl_term = b.kl.mean(0).clamp(min=o.free_bits).sum()
        else:
            kl_term = b.kl_per_example().mean()
        loss = f.nll.mean() + weight * kl_term + auxiliary(b)
        return ObjectiveOutput(loss, self.report(f, loss, kl_weight=weight))


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

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        c = self.capacity(step)
        kl = f.bottleneck.kl_per_example().mean()
        loss = f.nll.mean() + self.options.gamma * (kl - c).abs() + auxiliary(f.bottleneck)
        return ObjectiveOutput(loss, self.report(f, loss, capacity=c))


@dataclass
class JointCapacityOptions:
    gamma: float = 30.0
    """Weight of each |KL - C| (Dupont 2018, MNIST: 30)."""
    continuous_capacity: float = 5.0
    """C_z max, the final capacity of the continuous latent in nats (MNIST: 5)."""
    categorical_capacity: float = 5.0
    """C_c max, that of the categorical latent, capped at its largest possible KL, the sum of
    log K over the variables (MNIST: 5, so log 10 = 2.30)."""
    capacity_steps: int = 25_000
    """Steps over which both capacities grow linearly from 0 (MNIST: 25,000)."""

    def __post_init__(self) -> None:
        values = (self.gamma, self.continuous_capacity, self.categorical_capacity)
        if min(values) < 0 or self.capacity_steps < 0:
            raise AekitError("gamma, the capacities and capacity_steps must be non-negative")


@OBJECTIVES.register("joint-capacity")
class JointCapacity(Objective):
    """JointVAE (Dupont 2018): nll + gamma |KL_z - C_z(step)| + gamma |KL_c - C_c(step)|, each
    capacity raised linearly; the KLs are those of the continuous and the categorical latent."""

    Options = JointCapacityOptions
    needs_kl = True

    def attach(self, bottleneck, decoder, likelihood=None) -> None:
        super().attach(bottleneck, decoder, likelihood)
        variables = getattr(bottleneck.options, "variables", None)
        categories = getattr(bottleneck.options, "categories", None)
        if variables is None or not hasattr(bottleneck.options, "continuous_dim"):
            raise AekitError(
                f"objective 'joint-capacity' needs the joint bottleneck (continuous and "
                f"categorical latents); {bottleneck.kind!r} is not one"
            )
        self.categorical_max = variables * math.log(categories)

    def schedule_end(self) -> int:
        return self.options.capacity_steps

    def capacities(self, step: int | None) -> tuple[float, float]:
        o = self.options
        r = ramp(step, o.capacity_steps)
        return o.continuous_capacity * r, min(o.categorical_capacity * r, self.categorical_max)

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        c_z, c_c = self.capacities(step)
        parts = f.bottleneck.kl_parts
        kl_z, kl_c = parts["continuous"].mean(), parts["categorical"].mean()
        gamma = self.options.gamma
        loss = f.nll.mean() + gamma * ((kl_z - c_z).abs() + (kl_c - c_c).abs())
        loss = loss + auxiliary(f.bottleneck)
        extra = {"kl_continuous": kl_z, "kl_categorical": kl_c, "capacity_continuous": c_z,
                 "capacity_categorical": c_c}  # fmt: skip
        return ObjectiveOutput(loss, self.report(f, loss, **extra))
