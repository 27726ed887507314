"""The bottleneck protocol: what sits between encoder and decoder.

Families differ mainly here. A bottleneck turns the encoder's features `h` into the code the
decoder sees, and reports what its family adds to the objective. It may own parameters,
buffers and running statistics (a codebook, a threshold, a dead-latent counter), and it
receives the training step (annealed temperatures, sparsity schedules). Its capabilities are
separate flags that objectives ask for:

- `has_kl`: a KL(q(z|x) || p(z)) per example, analytic or from densities (the ELBO);
- `has_density`: log q(z|x) and log p(z) of every draw (importance-weighted bounds, the
  likelihood estimate), which implies a KL;
- `is_sparse`: the code is sparse, and the output may carry it as (values, pattern) instead
  of a dense (B, latent_dim) tensor (`BottleneckOutput.sparse`).

Stochastic bottlenecks draw `samples` latents per example (importance-weighted bounds need
several).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from aekit.components import Dims, NoOptions, Registry
from aekit.errors import AekitError
from aekit.patches import Tokens
from aekit.priors import PRIORS, Prior, make_prior
from aekit.sparse import Preactivations, SparseLatents


@dataclass
class BottleneckOutput:
    z: torch.Tensor | Tokens | None
    """What the decoder sees, (samples * B, latent_dim), sample-major: rows s*B..(s+1)*B-1
    hold draw s for the whole batch. None when only `sparse` is given (`dense_z` builds it);
    the per-patch codes `Tokens` for a vit token decoder (a masked autoencoder)."""
    code: torch.Tensor | None
    """The deterministic representation (posterior mean, or the code itself), (B, latent_dim);
    None when only `sparse` is given."""
    samples: int = 1
    kl: torch.Tensor | None = None
    """Analytic KL(q(z|x) || p(z)) per example and KL unit, (B, units), in nats, where it has
    a closed form: a unit is a latent dimension of a Gaussian, a variable of a categorical."""
    kl_parts: dict[str, torch.Tensor] = field(default_factory=dict)
    """The KL per example of each kind of latent, (B,) each, when a bottleneck has several
    (JointVAE's continuous and categorical parts); they sum to `kl_per_example()`."""
    log_q: torch.Tensor | None = None
    """log q(z|x) of each draw, (samples, B)."""
    log_prior: torch.Tensor | None = None
    """log p(z) of each draw, (samples, B)."""
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-example auxiliary losses, (B,) each, added to the objective as they are."""
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    """The posterior's parameters (e.g. mu, logvar)."""
    schedule: dict[str, float] = field(default_factory=dict)
    """The values of the bottleneck's schedules at this step (a temperature, k), reported
    beside the objective's terms."""
    prior: Prior | None = None
    """The prior of this latent space (matching objectives draw from it)."""
    sparse: SparseLatents | None = None
    """A sparse code's values at its pattern's entries, with their gradient path (sparse
    bottlenecks); decoders that take it never see the dense (B, latent_dim) code."""
    l0: torch.Tensor | None = None
    """Sparse bottlenecks: the mean number of active latents per example, a scalar;
    differentiable where the bottleneck has a pseudo-gradient for it (JumpReLU's thresholds)."""
    dead: torch.Tensor | None = None
    """Sparse bottlenecks in training: which latents have not fired for the dead window, (n,)."""
    features: Preactivations | None = None
    """Sparse bottlenecks: the encoder's pre-activations (AuxK codes the dead latents from them)."""
    bits: torch.Tensor | None = None
    """Entropy-coded bottlenecks: the code length of each example, (B,), in bits under the
    learned density: in training -log2 of the likelihood of the noisy latents, in evaluation
    the ideal code length under the tables a compressed file is coded with."""

    def dense_z(self) -> torch.Tensor:
        """z, built from the sparse code when only that was given."""
        if self.z is not None:
            return self.z
        assert self.sparse is not None
        return self.sparse.dense()

    def dense_code(self) -> torch.Tensor:
        """The code, built from the sparse code when only that was given."""
        return self.code if self.code is not None else self.dense_z()

    def kl_per_example(self) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) per example, (B,): analytic where possible, else the Monte-Carlo
        estimate mean_s [log q(z_s|x) - log p(z_s)]."""
        if self.kl is not None:
            return self.kl.sum(-1)
        if self.log_q is not None and self.log_prior is not None:
            return (self.log_q - self.log_prior).mean(0)
        return None


@dataclass
class PriorOptions:
    prior: str = "none"
    """The prior p(z) to match and sample from: none, normal, uniform, ring, mixture, or a
    registered one."""
    prior_components: int = 0
    """Components of a mixture prior (0: its default, 10)."""

    def __post_init__(self) -> None:
        if self.prior != "none":
            PRIORS[self.prior]  # an unknown name is reported here, with the choices
        if self.prior_components < 0:
            raise AekitError(f"prior_components must be >= 0 (got {self.prior_components})")


class Bottleneck(nn.Module, ABC):
    """Subclasses define forward; encode and sample_prior have defaults."""

    Options = NoOptions
    has_density = False
    """Whether log q(z|x) and log p(z) are reported, so that KL terms, importance-weighted
    bounds and likelihood estimates exist."""
    analytic_kl = False
    """Whether the KL to the prior is given in closed form without densities of the draws
    (a relaxed categorical's KL: its relaxed draws have no usable density)."""
    is_sparse = False
    """Whether the code is sparse (the sparse-coding objective and metrics apply)."""
    codes_positions = False
    """Whether the latent is a grid of code vectors, one per position of the last feature map
    on images (the layout of VQ-VAE and of learned image codecs): the recipe's body becomes
    `grid` and latent_dim follows from the options' `vector_width`."""
    has_rate = False
    """Whether the code is entropy-coded under a learned density and its length in bits is
    reported (`BottleneckOutput.bits`): the rate of a rate-distortion objective."""

    def __init__(self, options: NoOptions, dims: Dims) -> None:
        super().__init__()
        self.options = options
        self.latent_dim = dims.latent_dim
        name = getattr(options, "prior", "none")
        self.prior: Prior | None = (
            None if name == "none" else make_prior(name, dims, options.prior_components)
        )

    @property
    def has_prior(self) -> bool:
        """Whether p(z) is defined, so that `sample_prior` works."""
        return self.prior is not None

    @property
    def prior_to_match(self) -> Prior | None:
        """The fixed prior whose draws a matching objective (WAE, SWAE) compares the codes
        with, carried in every output (`BottleneckOutput.prior`). None where p(z) is absent or
        exists only through the bottleneck's own networks or variables (hierarchical,
        categorical): `sample_prior` draws from those, but there is no prior object whose
        draws and variance a divergence can use."""
        return self.prior

    @property
    def has_kl(self) -> bool:
        """Whether a KL(q(z|x) || p(z)) is reported, in closed form or from the densities."""
        return self.has_density or self.analytic_kl

    def schedule_end(self) -> int:
        """The step at which this bottleneck's schedules (temperatures, k) end (0: none)."""
        return 0

    def selects(self, training: bool) -> bool:
        """Whether the code is k entries selected per example in this mode, so that decoders
        may take it as (values, indices) (k-sparse bottlenecks)."""
        return False

    @property
    def in_features(self) -> int:
        """Width of the encoder output this bottleneck consumes."""
        return self.latent_dim

    def attach(self, encoder: nn.Module) -> None:
        """Called once by the model: priors built from the encoder (VampPrior) hook in here."""

    @abstractmethod
    def forward(
        self, h: torch.Tensor, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        """The code the decoder sees, and what this family adds to the objective; `step` is
        the global training step (None: the end of the schedules, as in evaluation)."""

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """The deterministic code of features `h` (no sampling)."""
        return self.forward(h).code

    def sample_prior(
        self,
        n: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if self.prior is None:
            raise AekitError(
                f"the {self.kind!r} bottleneck has no prior to sample from "  # type: ignore[attr-defined]
                "(deterministic autoencoders learn no p(z); fit a latent density first)"
            )
        return self.prior.sample(n, generator).to(device)

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of p(z) (they belong to the generative model, not to inference)."""
        return self.prior.parameters() if self.prior is not None else iter(())

    def traversals(
        self, codes: torch.Tensor, rows: int, steps: int
    ) -> list[tuple[str, torch.Tensor]]:
        """The rows of a latent traversal around the codes (N, latent_dim) of some data:
        (label, codes to decode) each. Continuous latents: the most active dimensions first
        (by variance over the codes), each swept from its 2nd to its 98th percentile in
        `steps` steps, the other coordinates at the median code."""
        codes = codes.detach()
        spread = codes.var(0) if len(codes) > 1 else torch.zeros(codes.shape[1])
        order = torch.argsort(spread, descending=True)[:rows].tolist()
        lo, hi = torch.quantile(codes, torch.tensor([0.02, 0.98]), dim=0)
        median = codes.median(0).values
        out = []
        for d in order:
            sweep = median.repeat(steps, 1)
            sweep[:, d] = torch.linspace(float(lo[d]), float(hi[d]), steps)
            out.append((f"z{d}", sweep))
        return out


def require_density(name: str, kind: str) -> None:
    def usable(n: str) -> bool:
        return PRIORS[n].has_density and PRIORS[n].full_support

    if name == "none" or not usable(name):
        with_density = [n for n in PRIORS.names() if usable(n)]
        raise AekitError(
            f"the {kind} bottleneck needs a prior with a density everywhere; got {name!r} "
            f"(choose from {', '.join(with_density)})"
        )


BOTTLENECKS: Registry[Bottleneck] = Registry("bottleneck")
