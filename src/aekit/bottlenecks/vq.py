"""Vector quantization (van den Oord et al. 2017) and the fixes for its codebook collapse.

Each vector is replaced by its nearest codebook entry. The codebook learns either by gradient
on the codebook loss |sg[x] - e|^2 or by exponential moving averages of the vectors assigned to
each code (VQ-VAE appendix, with Laplace smoothing of the counts); the encoder is held near its
codes by the commitment loss beta |x - sg[e]|^2. Options, all off by default:

- `kmeans_init`: the codebook starts as k-means centres of the first training batch;
- `restart`: codes that fall out of use are pulled to the encoder output nearest to them,
  with a weight that decays with the code's running usage (CVQ-VAE, Zheng & Vedaldi 2023);
- `rotation`: the rotation trick replaces the straight-through gradient (Fifty et al. 2024);
- `simvq`: the codebook is a frozen random basis times one learned linear map, so every
  code moves with every update (SimVQ, Zhu et al. 2024);
- `cosine`: vectors and codes are l2-normalised, so codes are chosen by cosine similarity.

`VectorQuantizer.update_codebook` is where the codebook changes outside the optimiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aekit import distributed
from aekit.bottlenecks.base import BOTTLENECKS
from aekit.bottlenecks.quantizer import Quantized, Quantizer, rotation_trick, straight_through
from aekit.components import Dims
from aekit.errors import AekitError


@dataclass
class VQOptions:
    codebook_size: int = 512
    """Number of codes K."""
    code_dim: int = 16
    """Width of each quantized vector (the latent is latent_dim / code_dim of them)."""
    commitment: float = 0.25
    """beta, the weight of the commitment loss |x - sg[e]|^2 (0.25 in the paper)."""
    ema: bool = False
    """Learn the codebook by exponential moving averages instead of the codebook loss."""
    ema_decay: float = 0.99
    """gamma of the EMA updates (0.99 in the paper)."""
    ema_epsilon: float = 1e-5
    """Laplace smoothing of the EMA cluster sizes."""
    kmeans_init: int = 0
    """Lloyd iterations of k-means on the first training batch to initialise the codebook
    (0: random initialisation)."""
    restart: bool = False
    """Pull unused codes towards their nearest encoder outputs (CVQ-VAE anchor update)."""
    restart_decay: float = 0.99
    """Decay of the running code usage that the anchor update reads."""
    rotation: bool = False
    """Rotation trick gradient instead of straight-through."""
    simvq: bool = False
    """Codebook = frozen random basis x learned linear map (SimVQ)."""
    cosine: bool = False
    """Choose codes by cosine similarity (vectors and codes on the unit sphere)."""

    @property
    def vector_width(self) -> int:
        return self.code_dim

    def __post_init__(self) -> None:
        if self.codebook_size < 1:
            raise AekitError(f"codebook_size must be at least 1 (got {self.codebook_size})")
        if self.code_dim < 1:
            raise AekitError(f"code_dim must be at least 1 (got {self.code_dim})")
        if self.commitment < 0 or self.kmeans_init < 0:
            raise AekitError("commitment and kmeans_init must be non-negative")
        for name in ("ema_decay", "restart_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise AekitError(f"{name} must be in [0, 1) (got {getattr(self, name)})")
        if self.ema_epsilon <= 0:
            raise AekitError(f"ema_epsilon must be positive (got {self.ema_epsilon})")
        if self.simvq and self.ema:
            raise AekitError("simvq learns its linear map by gradient: it cannot use ema")
        if self.simvq and self.restart:
            raise AekitError(
                "restart moves explicit codes; simvq's codes are a linear map (add --no-restart)"
            )


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """|x_n - e_k|^2, (N, K)."""
    return x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.T + codebook.pow(2).sum(1).unsqueeze(0)


def kmeans(x: torch.Tensor, k: int, iterations: int, generator: torch.Generator | None = None):
    """Lloyd's algorithm from k points of x (drawn with replacement when x has fewer than k
    rows). Returns the centres (k, D) and the cluster sizes (k,)."""
    n = x.shape[0]
    start = (
        torch.randperm(n, generator=generator)[:k]
        if n >= k
        else torch.randint(n, (k,), generator=generator)
    )
    centres = x[start.to(x.device)].clone()
    counts = torch.zeros(k, device=x.device)
    for _ in range(iterations):
        assign = squared_distances(x, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled].unsqueeze(1)
    return centres, counts


@dataclass
class CodeStatistics:
    """What one training batch tells a codebook, before it changes: the vectors assigned to
    each code (their count and sum, for the EMA) and each code's nearest vector (the anchor
    of a restart). Statistics of several batches of vectors pool into one update (residual
    stages sharing a codebook)."""

    counts: torch.Tensor
    """Vectors assigned to each code, (K,)."""
    sums: torch.Tensor | None
    """Their sum per code, (K, D) (EMA codebooks)."""
    nearest: torch.Tensor | None
    """The squared distance of each code to its nearest vector, (K,) (restarts)."""
    anchors: torch.Tensor | None
    """That nearest vector, (K, D)."""

    def across_ranks(self) -> CodeStatistics:
        """The statistics of the global batch from every rank's (the identity in one process):
        counts and sums add; each code's nearest vector is the closest of the ranks' nearest,
        ties to the lowest rank, whose rows come first in the batch."""
        if distributed.current() is None:
            return self
        counts = distributed.sum_(self.counts)
        sums = None if self.sums is None else distributed.sum_(self.sums)
        if self.nearest is None:
            return CodeStatistics(counts, sums, None, None)
        nearest = distributed.stacked(self.nearest)  # (ranks, K)
        closest = nearest.argmin(0)  # the first minimum: the lowest rank
        anchors = distributed.stacked(self.anchors)[closest, torch.arange(len(closest))]
        return CodeStatistics(counts, sums, nearest.min(0).values, anchors)

    def pooled(self, other: CodeStatistics) -> CodeStatistics:
        sums = None if self.sums is None else self.sums + other.sums
        if self.nearest is None:
            return CodeStatistics(self.counts + other.counts, sums, None, None)
        closer = other.nearest < self.nearest  # ties keep the first, as one argmin would
        return CodeStatistics(
            self.counts + other.counts,
            sums,
            torch.where(closer, other.nearest, self.nearest),
            torch.where(closer.unsqueeze(1), other.anchors, self.anchors),
        )


@BOTTLENECKS.register("vq")
class VectorQuantizer(Quantizer):
    Options = VQOptions

    def __init__(self, options: VQOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        k, d = options.codebook_size, options.code_dim
        init = torch.randn(k, d) / math.sqrt(d) if options.simvq else torch.randn(k, d)
        if options.cosine:
            init = F.normalize(init, dim=1)
        if options.ema or options.simvq:
            # The EMA codebook and SimVQ's frozen basis change outside the optimiser.
            self.register_buffer("embedding", init)
        else:
            self.embedding = nn.Parameter(init)
        if options.simvq:
            self.projection = nn.Linear(d, d, bias=False)
            nn.init.eye_(self.projection.weight)
        if options.ema:
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        if options.restart:
            # Zero, as in CVQ-VAE: codes the first batches leave unused are moved at once.
            self.register_buffer("usage", torch.zeros(k))
        self.register_buffer("initialised", torch.tensor(options.kmeans_init == 0))
        self._initialised_seen = False

    def is_initialised(self) -> bool:
        """Whether k-means has run, read from the buffer (a device sync) only until it has."""
        if not self._initialised_seen:
            self._initialised_seen = bool(self.initialised)
        return self._initialised_seen

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._initialised_seen = False  # the loaded buffer decides again

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.options.codebook_size,)

    def codebook(self) -> torch.Tensor:
        """The codes (K, code_dim) as the quantizer uses them."""
        e = self.projection(self.embedding) if self.options.simvq else self.embedding
        # normalize saves its input for backward; a copy leaves the codebook free for the
        # in-place anchor update later in the same forward pass.
        return F.normalize(e.clone(), dim=1) if self.options.cosine else e

    @property
    def updates_codebook(self) -> bool:
        """Whether a training pass changes the codebook outside the optimiser (EMA, restarts)."""
        return self.training and (self.options.ema or self.options.restart)

    def nearest(
        self, x: torch.Tensor, *, update: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The nearest codes e (N, D) with the gradient path to the codebook, their indices (N,),
        the commitment and codebook losses per vector, and the distances (N, K). `x` is
        already normalised if cosine. With `update`, a training pass then updates the
        codebook from x; residual VQ passes False and updates once from all its stages."""
        if self.training and self.options.kmeans_init and not self.is_initialised():
            self.initialise(x.detach())
        codebook = self.codebook()
        with torch.no_grad():
            distances = squared_distances(x.detach(), codebook.detach())
            indices = distances.argmin(1)
        e = codebook[indices]
        o = self.options
        losses = {"commitment": o.commitment * (x - e.detach()).pow(2).sum(1)}
        if not o.ema:
            losses["codebook"] = (x.detach() - e).pow(2).sum(1)
        if update and self.updates_codebook:
            self.update_codebook(x.detach(), indices, distances)
        return e, indices, losses, distances

    def quantize(self, v: torch.Tensor) -> Quantized:
        x = F.normalize(v, dim=1) if self.options.cosine else v
        e, indices, losses, _ = self.nearest(x)
        z_q = rotation_trick(x, e) if self.options.rotation else straight_through(x, e)
        return Quantized(z_q, indices.unsqueeze(1), losses)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook()[indices[:, 0]]

    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        # On every rank from the global batch's vectors, with the ranks' common random state.
        x = distributed.gather_rows(x)
        centres, counts = kmeans(x, self.options.codebook_size, self.options.kmeans_init)
        if self.options.cosine:
            centres = F.normalize(centres, dim=1)
        self.embedding.data.copy_(centres)
        if self.options.ema:
            self.ema_count.copy_(counts.clamp_min(1.0))
            self.ema_sum.copy_(centres * self.ema_count.unsqueeze(1))
        self.initialised.fill_(True)

    @torch.no_grad()
    def update_codebook(
        self, x: torch.Tensor, indices: torch.Tensor, distances: torch.Tensor
    ) -> None:
        """The codebook changes made outside the optimiser, once per training batch: the EMA
        update of counts and sums, then the anchor update of codes that fell out of use."""
        self.apply_statistics(self.statistics(x, indices, distances))

    @torch.no_grad()
    def statistics(
        self,
        x: torch.Tensor,
        indices: torch.Tensor,
        distances: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> CodeStatistics:
        """What vectors x (N, D), assigned to `indices` (N,) at `distances` (N, K), tell the
        codebook; `weight` (N,) of 0/1 leaves the 0 rows out (stages dropped by quantizer
        dropout)."""
        o, k = self.options, self.options.codebook_size
        if weight is None:
            counts = torch.bincount(indices, minlength=k).to(x.dtype)
        else:
            counts = x.new_zeros(k).index_add_(0, indices, weight.to(x.dtype))
        sums = None
        if o.ema:
            kept = x if weight is None else x * weight.unsqueeze(1)
            sums = x.new_zeros(k, x.shape[1]).index_add_(0, indices, kept)
        if not o.restart:
            return CodeStatistics(counts, sums, None, None)
        if weight is not None:
            distances = distances.masked_fill(weight.unsqueeze(1) == 0, math.inf)
        nearest, rows = distances.min(0)
        return CodeStatistics(counts, sums, nearest, x[rows])

    @torch.no_grad()
    def apply_statistics(self, st: CodeStatistics) -> None:
        """One update of the codebook from a batch's statistics: the EMA of counts and sums,
        then the anchor update of codes that fell out of use. Statistics of no vector at all
        (every row dropped) leave the codebook and its statistics as they are; the test is a
        tensor, not an `if`, which would wait for the device."""
        o, k = self.options, self.options.codebook_size
        st = st.across_ranks()
        seen = st.counts.sum() > 0
        embedding = self.embedding
        if o.ema:
            count = self.ema_count.lerp(st.counts, 1 - o.ema_decay)
            total = self.ema_sum.lerp(st.sums, 1 - o.ema_decay)
            n = count.sum()
            smoothed = (count + o.ema_epsilon) / (n + k * o.ema_epsilon) * n
            codes = total / smoothed.unsqueeze(1)
            embedding = F.normalize(codes, dim=1) if o.cosine else codes
        if o.restart:
            share = st.counts / st.counts.sum().clamp_min(1)
            usage = self.usage.lerp(share, 1 - o.restart_decay)
            # CVQ-VAE: alpha_k = exp(-p_k K 10 / (1 - gamma)) is ~1 for an unused code and ~0
            # for one used at the uniform rate 1/K; the anchor is the closest encoder output.
            alpha = torch.exp(-usage * k * 10 / (1 - o.restart_decay)).unsqueeze(1)
            embedding = embedding * (1 - alpha) + alpha * st.anchors
            if o.cosine:
                embedding = F.normalize(embedding, dim=1)
            if o.ema:
                total = embedding * count.unsqueeze(1)
            self.usage.copy_(torch.where(seen, usage, self.usage))
        if o.ema:
            self.ema_count.copy_(torch.where(seen, count, self.ema_count))
            self.ema_sum.copy_(torch.where(seen, total, self.ema_sum))
        if o.ema or o.restart:
            self.embedding.copy_(torch.where(seen, embedding, self.embedding))
