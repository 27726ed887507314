"""Importance-weighted bounds on log p(x): IWAE and the three variants of Rainforth et al.

With log-weights log w_s = log p(x, z_s) - log q(z_s|x) for z_s ~ q(z|x):

- IWAE (Burda et al. 2016):   log (1/K) sum_k w_k                  (k=1 is the ELBO)
- MIWAE (Rainforth et al. 2018): (1/M) sum_m log (1/K) sum_k w_mk  (M=1 is the IWAE)
- CIWAE: beta * ELBO + (1 - beta) * IWAE over the same K draws
- PIWAE: the decoder and prior follow the IWAE gradient over all M*K draws, the encoder
  follows the MIWAE gradient over the same draws (two backward passes over one forward)

The log-mean-exp is computed with logsumexp, so no weight is ever exponentiated on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aekit.errors import AekitError
from aekit.objectives.base import OBJECTIVES, ForwardPass, Objective, ObjectiveOutput, auxiliary


def log_mean_exp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The IWAE bound per example from log-weights (K, B)."""
    return log_mean_exp(log_w, 0)


def miwae_bound(log_w: torch.Tensor, m: int) -> torch.Tensor:
    """The MIWAE bound per example: log-weights (M*K, B) split into M groups of K."""
    return log_mean_exp(log_w.view(m, -1, log_w.shape[-1]), 1).mean(0)


def check_count(name: str, value: int) -> None:
    if value < 1:
        raise AekitError(f"{name} must be at least 1 (got {value})")


class ImportanceObjective(Objective):
    """Shared by the bounds below: each computes its per-example bound(s) and calls finish."""

    needs_density = True

    def finish(
        self, f: ForwardPass, bound: torch.Tensor, inference: torch.Tensor | None = None
    ) -> ObjectiveOutput:
        """The loss -bound (and the encoder's own loss -inference, for PIWAE)."""
        extra = auxiliary(f.bottleneck)
        loss = -bound.mean() + extra
        terms = self.report(f, loss, bound=bound.mean())
        inference_loss = None if inference is None else -inference.mean() + extra
        return ObjectiveOutput(loss, terms, inference_loss)


@dataclass
class IWAEOptions:
    k: int = 5
    """Importance samples per example (Burda et al. report k = 1, 5 and 50)."""

    def __post_init__(self) -> None:
        check_count("k", self.k)


@OBJECTIVES.register("iwae")
class IWAE(ImportanceObjective):
    Options = IWAEOptions

    @property
    def samples(self) -> int:
        return self.options.k

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        return self.finish(f, iwae_bound(f.log_weights()))


@dataclass
class MIWAEOptions:
    m: int = 8
    """Independent IWAE estimates averaged (M); the paper's budget is M * K = 64."""
    k: int = 8
    """Importance samples inside each estimate (K)."""

    def __post_init__(self) -> None:
        check_count("m", self.m)
        check_count("k", self.k)


@OBJECTIVES.register("miwae")
class MIWAE(ImportanceObjective):
    Options = MIWAEOptions

    @property
    def samples(self) -> int:
        return self.options.m * self.options.k

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        return self.finish(f, miwae_bound(f.log_weights(), self.options.m))


@OBJECTIVES.register("piwae")
class PIWAE(MIWAE):
    """The generative model is trained on the IWAE bound of all M*K draws (its gradient
    improves with more samples); the inference network on MIWAE(M, K), whose gradient keeps
    a usable signal-to-noise ratio. The reported `bound` is the IWAE one."""

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        log_w = f.log_weights()
        return self.finish(f, iwae_bound(log_w), inference=miwae_bound(log_w, self.options.m))


@dataclass
class CIWAEOptions:
    k: int = 64
    """Importance samples per example (the paper's budget is 64)."""
    beta: float = 0.5
    """Weight of the ELBO; 1 - beta goes to the IWAE bound (beta=1: VAE, beta=0: IWAE)."""

    def __post_init__(self) -> None:
        check_count("k", self.k)
        if not 0.0 <= self.beta <= 1.0:
            raise AekitError(f"beta must lie in [0, 1] (got {self.beta})")


@OBJECTIVES.register("ciwae")
class CIWAE(ImportanceObjective):
    Options = CIWAEOptions

    @property
    def samples(self) -> int:
        return self.options.k

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        log_w = f.log_weights()
        beta = self.options.beta
        return self.finish(f, beta * log_w.mean(0) + (1 - beta) * iwae_bound(log_w))
