"""Wasserstein autoencoders: a deterministic code whose aggregate distribution over the batch
is pushed towards the prior by a divergence between samples, instead of a per-example KL.

- WAE-MMD (Tolstikhin et al. 2018): the unbiased U-statistic of the squared MMD with the
  inverse multiquadratic kernel k(x, y) = C / (C + |x - y|^2), summed over the scales
  C = 2 * D * var(prior) * s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10), as in the paper's code.
- SWAE (Kolouri et al. 2019): the sliced Wasserstein distance SW_p^p, the mean over L
  random directions theta of the 1-D p-Wasserstein distance between the projected batch and
  projected prior draws, which is a sort.

The reconstruction cost is the likelihood's -log p(x|z) (choose `--likelihood gaussian` for
the squared error of the papers).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch

from aekit.errors import AekitError
from aekit.objectives.base import OBJECTIVES, ForwardPass, Objective, ObjectiveOutput, auxiliary
from aekit.priors import Prior

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Written out rather than cdist(...)**2: the square root's gradient is NaN at distance 0.
    d = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T
    return d.clamp_min(0.0)


def imq_mmd(z: torch.Tensor, p: torch.Tensor, base: float, scales=IMQ_SCALES) -> torch.Tensor:
    """Unbiased estimate of MMD^2 between samples z and p (n each), IMQ kernel, summed over
    bandwidths C = base * s. The U-statistic drops the i = j terms of the within-sample sums."""
    n = z.shape[0]
    if n < 2:
        return z.new_zeros(())
    d_zz, d_pp, d_zp = squared_distances(z, z), squared_distances(p, p), squared_distances(z, p)
    off_diagonal = 1.0 - torch.eye(n, device=z.device, dtype=z.dtype)
    total = z.new_zeros(())
    for s in scales:
        c = base * s
        within = (c / (c + d_zz) + c / (c + d_pp)) * off_diagonal
        total = total + within.sum() / (n * (n - 1)) - 2 * (c / (c + d_zp)).mean()
    return total


def sliced_wasserstein(
    z: torch.Tensor, p: torch.Tensor, projections: int, power: float
) -> torch.Tensor:
    """SW_p^p between equally sized samples, over `projections` uniform random directions."""
    theta = torch.randn(z.shape[1], projections, device=z.device, dtype=z.dtype)
    theta = theta / theta.norm(dim=0, keepdim=True)
    z_proj = torch.sort(z @ theta, dim=0).values
    p_proj = torch.sort(p @ theta, dim=0).values
    return (z_proj - p_proj).abs().pow(power).mean()


class MatchingObjective(Objective):
    """-log p(x|z) + weight * divergence(batch codes, as many prior draws)."""

    needs_prior = True
    term = ""
    """The name of the divergence among the reported terms."""

    @abstractmethod
    def divergence(self, z: torch.Tensor, prior_draws: torch.Tensor, prior: Prior) -> torch.Tensor:
        """The divergence between the codes and the prior draws, a scalar."""

    @abstractmethod
    def weight(self) -> float:
        """lambda, the weight of the divergence."""

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        b = f.bottleneck
        code = b.dense_code()
        prior_draws = b.prior.sample_like(code.detach())
        divergence = self.divergence(code, prior_draws, b.prior)
        loss = f.nll.mean() + self.weight() * divergence + auxiliary(b)
        return ObjectiveOutput(loss, self.report(f, loss, **{self.term: divergence}))


@dataclass
class WAEOptions:
    mmd_weight: float = 10.0
    """lambda, the weight of the MMD (10 in the paper's MNIST experiments)."""

    def __post_init__(self) -> None:
        if self.mmd_weight < 0:
            raise AekitError(f"mmd_weight must be non-negative (got {self.mmd_weight})")


@OBJECTIVES.register("wae-mmd")
class WAEMMD(MatchingObjective):
    Options = WAEOptions

    term = "mmd"

    def divergence(self, z: torch.Tensor, prior_draws: torch.Tensor, prior: Prior) -> torch.Tensor:
        return imq_mmd(z, prior_draws, base=2.0 * z.shape[1] * prior.variance())

    def weight(self) -> float:
        return self.options.mmd_weight


@dataclass
class SWAEOptions:
    sw_weight: float = 10.0
    """lambda, the weight of the sliced Wasserstein term."""
    projections: int = 50
    """L, random directions per batch (50 in the paper)."""
    power: float = 2.0
    """p of SW_p (2 in the paper)."""

    def __post_init__(self) -> None:
        if self.sw_weight < 0 or self.projections < 1 or self.power < 1:
            raise AekitError("sw_weight must be >= 0, projections >= 1 and power >= 1")


@OBJECTIVES.register("swae")
class SWAE(MatchingObjective):
    Options = SWAEOptions

    term = "sw"

    def divergence(self, z: torch.Tensor, prior_draws: torch.Tensor, prior: Prior) -> torch.Tensor:
        return sliced_wasserstein(z, prior_draws, self.options.projections, self.options.power)

    def weight(self) -> float:
        return self.options.sw_weight
