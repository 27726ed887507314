"""Sparse bottlenecks: the pre-activations become a code with few non-zero latents.

    relu       z = ReLU(pre)                                      (Bricken et al. 2023)
    topk       z = ReLU(TopK_k(pre)), or linear TopK              (Gao et al. 2024; Makhzani &
                                                                   Frey 2013, k-sparse AE)
    batchtopk  the B k largest of the batch; inference: pre > theta (Bussmann et al. 2024)
    jumprelu   z = pre H(pre - theta), theta learned per latent  (Rajamanoharan et al. 2024)
    abstopk    the k largest |pre|, sign kept (bidirectional features)

Each owns its parameters and running statistics: the JumpReLU log-thresholds, the BatchTopK
inference threshold (a moving average of the smallest selected value), and for every one the
count of tokens since each latent last fired (`dead`, which AuxK reads). The penalties that
shape a sparse code (L1 weighted by decoder norms, the L0 penalty, AuxK, Matryoshka) are the
sparse-coding objective's (`objectives/sparse.py`); the bottleneck reports what they need:
the code, its L0 (differentiable for JumpReLU), the dead latents, the pre-activations.

k-sparse bottlenecks select k entries per example (`select`) and, when k is small against the
number of latents, output only (values, pattern) (`BottleneckOutput.sparse`): with the
dictionary body the encoder's backward and the decode then touch the selected rows only
(`aekit.sparse`), and the (B, n) code is never built.
"""

from __future__ import annotations

import itertools
import math
from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch.autograd import Function
from torch.nn import functional as F

from aekit import distributed
from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.components import Dims
from aekit.errors import AekitError
from aekit.sparse import (
    Pattern,
    Preactivations,
    SparseCode,
    SparseLatents,
    as_preactivations,
    topk_indices,
)

SPARSE_RATIO = 8
"""`sparse_decode="auto"` outputs the sparse code (and so runs the kernels) when
k * SPARSE_RATIO <= n. They replace five of the six O(B n d) matmuls of a dense step by
O(B k d) gathers, which run several times slower per multiply-add; benchmarks/sae_kernels.py
(d=384, n=6144, B=4096, CPU) measured the kernels 1.3x faster at n / k = 8 and 0.8x at
n / k = 4. Not measured on GPU."""
SPARSE_DECODES = ("auto", "sparse", "dense")


@dataclass
class SparseOptions:
    dead_tokens: int = 10_000_000
    """A latent that has not fired for this many training rows is dead (Gao et al.: 10M
    tokens); AuxK trains the dead latents."""

    def __post_init__(self) -> None:
        if self.dead_tokens < 1:
            raise AekitError(f"dead_tokens must be at least 1 (got {self.dead_tokens})")


@dataclass
class KSparseOptions(SparseOptions):
    k: int = 32
    """Active latents per example (on average over a batch for batchtopk; Gao et al.: 32)."""
    k_start: int = 0
    """Sparsity schedule (Makhzani & Frey 2013): k falls linearly from k_start to k over
    k_steps training steps, so that few latents die early (0: a constant k)."""
    k_steps: int = 0
    """Steps of the k schedule (the paper: the first half of training)."""
    sparse_decode: str = "auto"
    """auto | sparse | dense: output (values, pattern) (with the dictionary body the sparse
    kernels then run), or a dense (batch, latents) code with plain autograd. auto: sparse
    when 8 k <= latents."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise AekitError(f"k must be at least 1 (got {self.k})")
        if self.k_start < 0 or self.k_steps < 0:
            raise AekitError("k_start and k_steps must be non-negative")
        if self.k_start and self.k_start < self.k:
            raise AekitError(f"k_start ({self.k_start}) must be at least k ({self.k})")
        if bool(self.k_start) != bool(self.k_steps):
            raise AekitError("the k schedule needs both k_start and k_steps (or neither)")
        if self.sparse_decode not in SPARSE_DECODES:
            raise AekitError(
                f"unknown sparse_decode {self.sparse_decode!r}; choose from {SPARSE_DECODES}"
            )


class SparseBottleneck(Bottleneck):
    """Latents from pre-activations; subclasses define `dense` (the inference code)."""

    Options = SparseOptions
    is_sparse = True
    differentiable_l0 = False
    """Whether `l0` carries a pseudo-gradient (the L0 penalty needs one)."""

    def __init__(self, options: SparseOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self.d_in = math.prod(dims.input_shape)
        self.register_buffer("tokens_since_fired", torch.zeros(dims.latent_dim, dtype=torch.long))

    @abstractmethod
    def dense(self, pre: torch.Tensor) -> torch.Tensor:
        """Inference latents (B, n) from pre-activations, differentiable."""

    def l0(self, pre: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (z != 0).sum() / z.shape[0]

    def forward(
        self, h: torch.Tensor | Preactivations, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        pre = as_preactivations(h)
        dense = pre.dense()
        z = self.dense(dense)
        dead = self.update_dead(None, None, z, z.shape[0]) if self.training else None
        return BottleneckOutput(
            z=z if samples == 1 else z.repeat(samples, 1),
            code=z,
            samples=samples,
            l0=self.l0(dense, z),
            dead=dead,
            features=pre,
        )

    def encode(self, h: torch.Tensor | Preactivations) -> torch.Tensor:
        return self.dense(as_preactivations(h).dense())

    def encode_sparse(self, h: torch.Tensor | Preactivations) -> SparseCode:
        """(values, indices), (B, width): the non-zero latents padded with zeros to the
        batch's largest count."""
        z = self.encode(h)
        width = max(1, int((z != 0).sum(1).max()))
        indices = z.abs().topk(width, dim=1).indices
        return SparseCode(z.gather(1, indices), indices)

    @torch.no_grad()
    def update_dead(
        self,
        values: torch.Tensor | None,
        pattern: Pattern | None,
        z: torch.Tensor | None,
        rows: int,
    ) -> torch.Tensor:
        """Count the rows since each latent last fired; return the dead mask (n,)."""
        if z is None:
            counts = torch.zeros(self.latent_dim, device=values.device)
            fired = counts.index_add_(0, pattern.col, (values != 0).to(counts.dtype)) > 0
        else:
            fired = (z != 0).any(0)
        if distributed.current() is not None:  # every rank's rows: the same counters on each
            fired = distributed.max_(fired)
            rows = distributed.sum_(torch.tensor(rows, device=fired.device))  # no host sync
        self.tokens_since_fired.add_(rows).masked_fill_(fired, 0)
        return self.tokens_since_fired >= self.options.dead_tokens


@BOTTLENECKS.register("relu")
class ReLU(SparseBottleneck):
    """z = ReLU(pre); its sparsity comes from the objective's L1 penalty."""

    def dense(self, pre):
        return F.relu(pre)


class KSparse(SparseBottleneck):
    """Keeps k latents per example (per batch for batchtopk): selection, then a value."""

    Options = KSparseOptions
    per_example = True
    """Exactly k per example (batchtopk: k B per batch)."""

    def __init__(self, options: KSparseOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        largest = max(options.k, options.k_start)
        if largest > dims.latent_dim:
            raise AekitError(
                f"k={largest} is larger than the number of latents ({dims.latent_dim})"
            )

    @property
    def uses_kernels(self) -> bool:
        """Whether training outputs the sparse code only (with the dictionary body: the
        sparse kernels run)."""
        mode, k = self.options.sparse_decode, self.options.k
        return mode == "sparse" or (mode == "auto" and k * SPARSE_RATIO <= self.latent_dim)

    def k_at(self, step: int | None) -> int:
        """k at a training step (the schedule's end for None)."""
        o = self.options
        if not o.k_start or step is None or o.k_steps <= 0 or step >= o.k_steps:
            return o.k
        return round(o.k_start + (o.k - o.k_start) * step / o.k_steps)

    def schedule_end(self) -> int:
        return self.options.k_steps if self.options.k_start else 0

    def selects(self, training: bool) -> bool:
        """Whether the latents come from `select` in this mode (else from `dense`)."""
        return True

    def score(self, pre: torch.Tensor) -> torch.Tensor:
        """What latents are ranked by (AuxK ranks the dead latents by it too)."""
        return pre

    def value(self, pre: torch.Tensor) -> torch.Tensor:
        """The latent value of a selected pre-activation."""
        return F.relu(pre)

    def select(self, pre: torch.Tensor, k: int) -> Pattern:
        """The k entries per example to keep, from detached pre-activations (B, n)."""
        return Pattern.from_topk(topk_indices(self.score(pre), k), pre.shape[1])

    def dense(self, pre):
        indices = self.score(pre).topk(self.options.k, dim=1, sorted=False).indices
        return torch.zeros_like(pre).scatter(1, indices, self.value(pre.gather(1, indices)))

    def observe(self, values: torch.Tensor) -> None:
        """Training-time statistics of the selected values."""

    def forward(
        self, h: torch.Tensor | Preactivations, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        if not self.selects(self.training):
            return super().forward(h, samples, step)
        pre = as_preactivations(h)
        k = self.k_at(step if self.training else None)
        z = None
        if self.uses_kernels:
            pattern = self.select(pre.detached(), k)
            values = self.value(pre.at(pattern))
        else:
            dense = pre.dense()
            pattern = self.select(dense.detach(), k)
            values = self.value(dense[pattern.row, pattern.col])
            z = pattern.dense(values)
        rows = pattern.n_rows
        dead = None
        if self.training:
            dead = self.update_dead(values, pattern, z, rows)
            self.observe(values.detach())
        if samples != 1:
            z = (z if z is not None else pattern.dense(values)).repeat(samples, 1)
        return BottleneckOutput(
            z=z,
            code=z if samples == 1 else None,
            samples=samples,
            sparse=SparseLatents(values, pattern),
            l0=(values != 0).sum() / rows,
            dead=dead,
            features=pre,
            schedule={"k": k} if self.options.k_start else {},
        )

    def encode_sparse(self, h: torch.Tensor | Preactivations) -> SparseCode:
        """(values, indices), (B, k): the k selected latents (topk, abstopk), or for
        bottlenecks that select only in training the non-zero ones, padded."""
        if not self.selects(False):
            return super().encode_sparse(h)
        pre = as_preactivations(h).dense()
        indices = self.score(pre).topk(self.options.k, dim=1).indices
        return SparseCode(self.value(pre.gather(1, indices)), indices)

    def masked_code(self, pre: Preactivations, mask: torch.Tensor, k: int) -> SparseLatents:
        """The top-k code among the latents in `mask` (n,), ranked and valued as this
        bottleneck ranks and values them (AuxK's code of the dead latents)."""
        score = self.score(pre.detached()).masked_fill(~mask, -math.inf)
        pattern = Pattern.from_topk(topk_indices(score, k), self.latent_dim)
        return SparseLatents(self.value(pre.at(pattern)), pattern)


@dataclass
class TopKOptions(KSparseOptions):
    rectify: bool = True
    """ReLU on the kept values (Gao et al. 2024). Off, the k largest are kept as they are, as
    in the k-sparse autoencoder of Makhzani & Frey (2013), whose hidden units are linear."""


@BOTTLENECKS.register("topk")
class TopK(KSparse):
    Options = TopKOptions

    def value(self, pre):
        return F.relu(pre) if self.options.rectify else pre


@BOTTLENECKS.register("abstopk")
class AbsTopK(KSparse):
    def score(self, pre):
        return pre.abs()

    def value(self, pre):
        return pre


CALIBRATION_BATCHES = 20
"""Training batches over which BatchTopK's inference threshold is averaged at the end of each
epoch (20 x 4,096 activations with the SAE defaults)."""


def smallest_positive(values: torch.Tensor) -> torch.Tensor:
    """The smallest positive entry (inf if there is none): the lowest value a batch top-k kept."""
    return torch.where(values > 0, values, math.inf).min()


@dataclass
class BatchTopKOptions(KSparseOptions):
    threshold_decay: float = 0.99
    """Decay of the moving average of the smallest selected activation, the threshold that
    replaces the batch top-k at inference."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.threshold_decay < 1.0:
            raise AekitError(f"threshold_decay must be in [0, 1) (got {self.threshold_decay})")


@BOTTLENECKS.register("batchtopk")
class BatchTopK(KSparse):
    """Training keeps the B k largest pre-activations of the whole batch (ReLU'd), so examples
    share a budget of B k; inference keeps pre > theta, theta a moving average of the smallest
    value kept in training, so the saved model runs on one example at a time.

    In a short run the weights move faster than that average follows (synthetic activations,
    one epoch of batches of 4,096: held-out L0 2.9 at k=4 and 26.0 at k=32, against 4.06 and
    32.3 calibrated, `benchmarks/quantizer_defaults.py`). So at the end of every epoch
    `calibrate` sets theta as the paper estimates it, the mean over batches of the smallest
    activation the batch top-k keeps, from that epoch's final weights."""

    Options = BatchTopKOptions
    per_example = False

    def __init__(self, options: BatchTopKOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self.register_buffer("threshold", torch.tensor(0.0))

    def selects(self, training):
        return training

    def select(self, pre, k):
        b, n = pre.shape
        flat = pre.reshape(-1)
        shard = distributed.current()
        if shard is None:
            return Pattern.from_flat(flat.topk(b * k, sorted=False).indices, b, n)
        # The global batch's B k largest: each rank offers its own B k largest (or all it has),
        # and keeps its entries at or above the B k-th largest of all offers.
        wanted = shard.total * k
        offered = flat.topk(min(wanted, flat.numel()), sorted=False).values
        padded = offered.new_full((wanted,), -math.inf)
        padded[: offered.numel()] = offered
        cutoff = distributed.stacked(padded).flatten().topk(wanted, sorted=False).values.min()
        return Pattern.from_flat((flat >= cutoff).nonzero().flatten(), b, n)

    def dense(self, pre):
        return torch.where(pre > self.threshold, pre, 0.0)  # theta >= 0: a ReLU too

    @torch.no_grad()
    def calibrate(self, features) -> None:
        """theta = the mean over up to CALIBRATION_BATCHES batches of features of the smallest
        value the batch top-k keeps (Bussmann et al. 2024), at k's value at the end of its
        schedule; unchanged if no batch keeps a positive value."""
        k = self.k_at(None)
        smallest = []
        for h in itertools.islice(features, CALIBRATION_BATCHES):
            pre = as_preactivations(h).dense()
            smallest.append(
                smallest_positive(pre.reshape(-1).topk(len(pre) * k, sorted=False).values)
            )
        finite = [v for v in smallest if torch.isfinite(v)]
        if finite:
            self.threshold.copy_(torch.stack(finite).mean())

    @torch.no_grad()
    def observe(self, values):
        smallest = distributed.min_(smallest_positive(values))
        decay = self.options.threshold_decay
        ema = torch.where(
            self.threshold > 0, decay * self.threshold + (1 - decay) * smallest, smallest
        )
        self.threshold.copy_(torch.where(torch.isfinite(smallest), ema, self.threshold))


def rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(Function):
    """z = pre H(pre - theta). d/dpre = H(pre - theta); d/dtheta = -(theta / eps)
    K((pre - theta) / eps), K the rectangle kernel (Rajamanoharan et al. 2024, eq. 11)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        grad_pre = grad * (pre > theta)
        kernel = rectangle((pre - theta) / ctx.eps)
        grad_theta = -(theta / ctx.eps) * (kernel * grad).sum(0)
        return grad_pre, grad_theta, None


class _Step(Function):
    """H(pre - theta). No gradient to pre; d/dtheta = -(1 / eps) K((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        kernel = rectangle((pre - theta) / ctx.eps)
        return None, -(1.0 / ctx.eps) * (kernel * grad).sum(0), None


def jumprelu(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    return _JumpReLU.apply(pre, theta, eps)


def heaviside(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    return _Step.apply(pre, theta, eps)


@dataclass
class JumpReLUOptions(SparseOptions):
    threshold_init: float = 0.001
    """Initial threshold of every latent (Gemma Scope: 0.001)."""
    bandwidth: float = 0.001
    """Width epsilon of the rectangle kernel of the threshold's pseudo-gradient (Gemma
    Scope: 0.001)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("threshold_init", "bandwidth"):
            if getattr(self, name) <= 0:
                raise AekitError(f"{name} must be positive (got {getattr(self, name)})")


@BOTTLENECKS.register("jumprelu")
class JumpReLU(SparseBottleneck):
    """Learned thresholds theta = exp(log_threshold); `l0` = sum_i H(pre_i - theta_i), whose
    straight-through pseudo-gradient trains the thresholds under the L0 penalty."""

    Options = JumpReLUOptions
    differentiable_l0 = True

    def __init__(self, options: JumpReLUOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self.log_threshold = torch.nn.Parameter(
            torch.full((dims.latent_dim,), math.log(options.threshold_init))
        )

    def dense(self, pre):
        return jumprelu(pre, self.log_threshold.exp(), self.options.bandwidth)

    def l0(self, pre, z):
        return heaviside(pre, self.log_threshold.exp(), self.options.bandwidth).sum(1).mean()
