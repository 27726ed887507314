"""Priors p(z): what a VAE's KL pulls the posterior towards, what WAE/SWAE match the encoded
batch to, and what `sample` draws from.

A prior can always be sampled; `log_prob` exists where the density does (VAE-style
bottlenecks need it, matching objectives only need samples). Register your own with
`@PRIORS.register("name")`, or wrap a sampling function with `prior_from_sampler`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import nn

from aekit.components import Dims, Registry
from aekit.errors import AekitError
from aekit.nets.base import check_parameters

LOG_2PI = math.log(2 * math.pi)


def diagonal_normal_log_prob(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


class Prior(nn.Module, ABC):
    has_density = True
    """Whether `log_prob` is defined (needed for KL terms and likelihood estimates)."""
    full_support = True
    """Whether the density is positive everywhere, so a Gaussian posterior has a finite KL."""
    runs_encoder = False
    """Whether the prior runs the model's encoder on inputs of its own (the VampPrior's
    pseudo-inputs), which have no condition: a conditional encoder cannot serve it."""

    def __init__(self, dims: Dims, components: int = 0) -> None:
        super().__init__()
        self.latent_dim = dims.latent_dim
        self._variance: float | None = None

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws, (n, latent_dim), on the prior's device."""

    def sample_like(self, z: torch.Tensor) -> torch.Tensor:
        """As many draws as `z` has rows, on z's device and in its dtype: what a matching
        objective compares a batch of codes with. This fallback (priors known only by
        `sample`) moves the draws there."""
        return self.sample(z.shape[0]).to(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) over the last dimension of z (..., latent_dim)."""
        raise AekitError(
            f"the {self.kind!r} prior has no density; it can be matched (WAE, SWAE) "  # type: ignore[attr-defined]
            "and sampled but not used in a KL term or a likelihood"
        )

    @property
    def device(self) -> torch.device:
        for t in [*self.parameters(), *self.buffers()]:
            return t.device
        return torch.device("cpu")

    def variance(self) -> float:
        """Mean per-dimension variance, from 20,000 draws with a fixed seed (kernel scales)."""
        if self._variance is None:
            with torch.no_grad():
                draws = self.sample(20_000, torch.Generator().manual_seed(0))
            self._variance = float(draws.var(0).mean())
        return self._variance


class DrawnPrior(Prior):
    """A prior drawn with torch's samplers, on any device in any dtype (`draw`): a training
    step's draws are made where the codes are, not on the CPU and copied."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.draw(n, generator, self.device, torch.float32)

    def sample_like(self, z: torch.Tensor) -> torch.Tensor:
        return self.draw(z.shape[0], None, z.device, z.dtype)

    @abstractmethod
    def draw(
        self,
        n: int,
        generator: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """n draws (n, latent_dim) on `device` in `dtype`."""


PRIORS: Registry[Prior] = Registry("prior")


def _normal(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    # A seeded generator draws on the CPU, so that it gives the same draws on any device.
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


def _uniform(shape, generator, device, dtype) -> torch.Tensor:
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    return torch.rand(shape, generator=generator, dtype=dtype).to(device)


def _randint(high: int, n: int, generator, device) -> torch.Tensor:
    if generator is None:
        return torch.randint(high, (n,), device=device)
    return torch.randint(high, (n,), generator=generator).to(device)


@PRIORS.register("normal")
class StandardNormal(DrawnPrior):
    """N(0, I)."""

    def draw(self, n, generator, device, dtype) -> torch.Tensor:
        return _normal((n, self.latent_dim), generator, device, dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)

    def variance(self) -> float:
        return 1.0


@PRIORS.register("uniform")
class Uniform(DrawnPrior):
    """Uniform on the cube [-1, 1]^D."""

    full_support = False

    def draw(self, n, generator, device, dtype) -> torch.Tensor:
        return 2 * _uniform((n, self.latent_dim), generator, device, dtype) - 1

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        inside = (z.abs() <= 1).all(-1)
        density = -self.latent_dim * math.log(2.0)
        return torch.where(inside, density, -math.inf).to(z.dtype)

    def variance(self) -> float:
        return 1.0 / 3.0


RING_WIDTH = 0.05


@PRIORS.register("ring")
class Ring(DrawnPrior):
    """A thin shell around the unit sphere: uniform direction, radius N(1, 0.05^2).
    In two dimensions this is the ring/circle of the SWAE paper."""

    has_density = False

    def draw(self, n, generator, device, dtype) -> torch.Tensor:
        direction = _normal((n, self.latent_dim), generator, device, dtype)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = 1 + RING_WIDTH * _normal((n, 1), generator, device, dtype)
        return direction * radius


@PRIORS.register("mixture")
class GaussianMixture(DrawnPrior):
    """A fixed mixture of `components` (default 10) equally weighted Gaussians with means on a
    circle of radius 2 in the first two latent dimensions and standard deviation 0.25: the
    clustered target of the SWAE and WAE demonstrations."""

    radius, scale = 2.0, 0.25

    def __init__(self, dims: Dims, components: int = 0) -> None:
        super().__init__(dims, components)
        k = components or 10
        means = torch.zeros(k, self.latent_dim)
        angles = 2 * math.pi * torch.arange(k) / k
        means[:, 0] = self.radius * torch.cos(angles)
        if self.latent_dim > 1:
            means[:, 1] = self.radius * torch.sin(angles)
        self.register_buffer("means", means, persistent=False)

    def draw(self, n, generator, device, dtype) -> torch.Tensor:
        which = _randint(self.means.shape[0], n, generator, device)
        noise = _normal((n, self.latent_dim), generator, device, dtype)
        return self.means.to(device, dtype)[which] + self.scale * noise

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        logvar = torch.full_like(self.means, 2 * math.log(self.scale))
        return mixture_log_prob(z, self.means, logvar)


def mixture_log_prob(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; means_k, diag(exp(logvars_k))) for z (..., D), means (K, D).

    Expanded as quadratic forms so that memory is (N, K), not (N, K, D): the likelihood
    estimator evaluates millions of z against hundreds of components."""
    shape = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])
    precision = torch.exp(-logvars)  # (K, D)
    quad = (
        flat.pow(2) @ precision.T
        - 2 * flat @ (means * precision).T
        + (means.pow(2) * precision).sum(1)
    )
    log_norm = -0.5 * (means.shape[1] * LOG_2PI + logvars.sum(1))  # (K,)
    log_components = log_norm - 0.5 * quad  # (N, K)
    out = torch.logsumexp(log_components, dim=1) - math.log(means.shape[0])
    return out.reshape(shape)


PosteriorFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@PRIORS.register("vamp")
class VampPrior(DrawnPrior):
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), a mixture of the
    variational posteriors at K learned pseudo-inputs u_k (default K = 500, initialised
    N(0.05, 0.01^2) as in the paper's binary-image experiments).

    The prior runs the encoder, so the model attaches its posterior function after
    construction (`attach`); the encoder's weights are not registered twice."""

    runs_encoder = True

    def __init__(self, dims: Dims, components: int = 0) -> None:
        super().__init__(dims, components)
        k = components or 500
        size = math.prod(dims.input_shape)
        check_parameters(k * size, f"the VampPrior's {k:,} pseudo-inputs of {size:,} values")
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(k, *dims.input_shape))
        self._posterior: list[PosteriorFn] = []  # a list keeps it out of nn.Module's registry

    def attach(self, posterior: PosteriorFn) -> None:
        self._posterior[:] = [posterior]

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._posterior:
            raise AekitError("the VampPrior is not attached to an encoder yet")
        return self._posterior[0](self.pseudo_inputs)

    def draw(self, n, generator, device, dtype) -> torch.Tensor:
        mu, logvar = self.components()  # on the model's device, in its dtype
        which = _randint(mu.shape[0], n, generator, mu.device)
        eps = _normal((n, self.latent_dim), generator, mu.device, mu.dtype)
        return (mu[which] + (0.5 * logvar[which]).exp() * eps).to(device, dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.components()
        return mixture_log_prob(z, mu, logvar)


def make_prior(name: str, dims: Dims, components: int = 0) -> Prior:
    return PRIORS[name](dims, components)


def prior_from_sampler(
    name: str, sampler: Callable[[int, torch.Generator | None], torch.Tensor]
) -> type[Prior]:
    """Register a prior known only by a sampling function `sampler(n, generator) -> (n, D)`
    (for WAE and SWAE). Register it again under the same name before loading a saved run."""

    class SampledPrior(Prior):
        has_density = False

        def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
            z = torch.as_tensor(sampler(n, generator), dtype=torch.float32)
            if tuple(z.shape) != (n, self.latent_dim):
                raise AekitError(
                    f"prior {name!r} returned shape {tuple(z.shape)} for n={n}; "
                    f"expected ({n}, {self.latent_dim})"
                )
            return z.to(self.device)

    SampledPrior.__name__ = f"SampledPrior[{name}]"
    PRIORS.unregister(name)  # re-registering (e.g. before loading a run) replaces it
    return PRIORS.register(name)(SampledPrior)
