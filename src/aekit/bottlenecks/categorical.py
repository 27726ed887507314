"""A relaxed categorical latent: N variables of K categories each, the decoder sees one-hots.

q(c_n|x) = softmax(logits_n). In training a draw is relaxed with the Gumbel-softmax (Jang,
Gu & Poole 2017) / Concrete (Maddison, Mnih & Teh 2017) distribution,

    y = softmax((logits + g) / tau),   g = -log(-log u), u ~ U(0, 1),

so the decoder's gradient reaches the logits; with `hard` the forward pass uses the one-hot
of argmax y and the backward the relaxed y (straight-through Gumbel). The temperature is
annealed by the global step, tau(t) = max(tau_min, tau_0 exp(-r t)) (the paper's schedule).
Out of training the draws are exact one-hots (Gumbel-max), so a reported ELBO is the discrete
model's, E_q[log p(x|c)] - KL.

The KL to the uniform prior is analytic, per variable KL = sum_k q_k (log q_k + log K). The
relaxed draws have no density usable by importance-weighted bounds (`has_density` is False):
the ELBO trains this bottleneck and IWAE refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from aekit import distributed
from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.components import Dims
from aekit.errors import AekitError


@dataclass
class CategoricalOptions:
    variables: int = 30
    """Categorical variables N (Jang et al.'s MNIST notebook: 30)."""
    categories: int = 10
    """Categories K of each variable (10)."""
    temperature: float = 1.0
    """tau_0, the initial Gumbel-softmax temperature."""
    min_temperature: float = 0.5
    """tau_min, where the annealing stops (0.5 in the paper)."""
    anneal_rate: float = 3e-5
    """r of tau(t) = max(tau_min, tau_0 exp(-r t)), per training step (0: a fixed tau_0)."""
    hard: bool = False
    """Straight-through: one-hot draws forward, the relaxed gradient backward."""

    def __post_init__(self) -> None:
        if self.variables < 1 or self.categories < 2:
            raise AekitError("a categorical latent needs variables >= 1 and categories >= 2")
        if not self.temperature > 0 or not self.min_temperature > 0:
            raise AekitError("temperature and min_temperature must be positive")
        if self.min_temperature > self.temperature:
            raise AekitError(
                f"min_temperature ({self.min_temperature}) is above temperature "
                f"({self.temperature})"
            )
        if self.anneal_rate < 0:
            raise AekitError(f"anneal_rate must be non-negative (got {self.anneal_rate})")

    def latent_width(self) -> int:
        return self.variables * self.categories

    def width_note(self) -> str:
        return f"{self.variables} variables x {self.categories} categories"


def gumbel_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise of `shape` (samples, B, ...)."""
    u = distributed.rand_rows(shape, device=like.device, dtype=like.dtype, dim=1)
    tiny = torch.finfo(like.dtype).tiny
    return -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))


def categorical_kl(log_q: torch.Tensor) -> torch.Tensor:
    """KL(q || uniform) per variable of log-probabilities (..., N, K): sum_k q_k (log q_k +
    log K)."""
    return (log_q.exp() * (log_q + math.log(log_q.shape[-1]))).sum(-1)


class Categorical:
    """The relaxed categorical's mathematics over logits (B, N, K), shared with JointVAE."""

    def __init__(self, options: CategoricalOptions) -> None:
        self.options = options

    def temperature(self, step: int | None) -> float:
        o = self.options
        if step is None or o.anneal_rate == 0:
            return o.min_temperature if o.anneal_rate else o.temperature
        return max(o.min_temperature, o.temperature * math.exp(-o.anneal_rate * step))

    def schedule_end(self) -> int:
        o = self.options
        if o.anneal_rate == 0 or o.min_temperature == o.temperature:
            return 0
        return math.ceil(math.log(o.temperature / o.min_temperature) / o.anneal_rate)

    def draw(
        self, logits: torch.Tensor, samples: int, step: int | None, training: bool
    ) -> torch.Tensor:
        """`samples` draws (samples, B, N, K): relaxed in training, exact one-hots otherwise."""
        shape = (samples, *logits.shape)
        noisy = logits + gumbel_noise(torch.Size(shape), logits)
        one_hot = F.one_hot(noisy.argmax(-1), logits.shape[-1]).to(logits.dtype)
        if not training:
            return one_hot
        soft = (noisy / self.temperature(step)).softmax(-1)
        return soft + (one_hot - soft).detach() if self.options.hard else soft

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        """The most probable category of each variable as one-hots, (B, N * K)."""
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype).flatten(1)

    def prior_draws(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        o = self.options
        index = torch.randint(o.categories, (n, o.variables), generator=generator)
        return F.one_hot(index, o.categories).float().flatten(1)

    def sweeps(self, code: torch.Tensor, offset: int, rows: int) -> list[tuple[str, torch.Tensor]]:
        """Per variable (at most `rows`), the code with that variable set to each category."""
        o = self.options
        out = []
        for v in range(min(rows, o.variables)):
            codes = code.repeat(o.categories, 1)
            start = offset + v * o.categories
            codes[:, start : start + o.categories] = torch.eye(o.categories)
            out.append((f"c{v} = 0..{o.categories - 1}", codes))
        return out


class CategoricalLatent(Bottleneck):
    """What the bottlenecks with relaxed categorical variables share: a latent as wide as
    their options say, a uniform prior to sample, the temperature's schedule."""

    analytic_kl = True

    def __init__(self, options: CategoricalOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        if dims.latent_dim != options.latent_width():
            raise AekitError(
                f"latent_dim ({dims.latent_dim}) must be {options.width_note()} "
                f"({options.latent_width()})"
            )
        self.categorical = Categorical(options)

    @property
    def has_prior(self) -> bool:
        return True

    def schedule_end(self) -> int:
        return self.categorical.schedule_end()


@BOTTLENECKS.register("categorical")
class RelaxedCategorical(CategoricalLatent):
    Options = CategoricalOptions

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h.view(h.shape[0], self.options.variables, self.options.categories)

    def forward(
        self, h: torch.Tensor, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        logits = self.logits(h)
        log_q = logits.log_softmax(-1)
        y = self.categorical.draw(logits, samples, step, self.training)
        return BottleneckOutput(
            z=y.reshape(-1, self.latent_dim),
            code=self.categorical.mode(logits),
            samples=samples,
            kl=categorical_kl(log_q),
            params={"probs": log_q.exp()},
            schedule={"temperature": self.categorical.temperature(step)},
        )

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return self.categorical.mode(self.logits(h))

    def sample_prior(self, n, *, device="cpu", generator=None):
        return self.categorical.prior_draws(n, generator).to(device)

    def traversals(
        self, codes: torch.Tensor, rows: int, steps: int
    ) -> list[tuple[str, torch.Tensor]]:
        """Per variable, the first code with that variable set to each of its categories."""
        return self.categorical.sweeps(codes[0], 0, rows)
