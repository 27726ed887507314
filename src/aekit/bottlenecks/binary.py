"""Binary codes without a codebook: lookup-free (LFQ) and binary spherical (BSQ) quantization.

Each of the `bits` dimensions is coded by its sign, so a vector has one of 2^bits codes and its
index is sum_d [z_d > 0] 2^d. Nothing is looked up; codebook usage is encouraged by an entropy
penalty on the soft assignment q(c|z) proportional to exp(inv_temperature * logit(c, z)):

    entropy_weight * ( H[q(c|z_n)] - diversity * H[mean_n q(c|z_n)] ),

low per-vector entropy (confident codes) and high batch entropy (all codes used). The soft
assignment factorises over bits, q(c_d = +1 | z) = sigmoid(a * z_d), so the per-vector entropy
is a sum over bits. The batch entropy does not factorise: it is computed exactly over all codes
up to `exact_entropy_bits` bits, and above that by the per-bit approximation
sum_d H[mean_n q(c_d|z_n)] (an upper bound; BSQ's factorised estimate).

- LFQ (Yu et al. 2024, MAGVIT-v2): codes c in {-1, 1}^bits; q uses -|z - c|^2, so a = 4.
- BSQ (Zhao et al. 2024): z is projected to the unit sphere first and the codes are
  c in {-1, 1}^bits / sqrt(bits), also unit vectors; q uses c^T u, so a = 2 / sqrt(bits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from aekit.bottlenecks.base import BOTTLENECKS
from aekit.bottlenecks.quantizer import Quantized, Quantizer, straight_through
from aekit.components import Dims
from aekit.errors import AekitError

EXACT_ENTROPY_BITS = 12


@dataclass
class BinaryOptions:
    bits: int = 10
    """Dimensions of the code; 2^bits codes."""
    commitment: float = 0.25
    """Weight of |z - sg[q]|^2."""
    entropy_weight: float = 0.1
    """Weight of the entropy penalty (0.1 in MAGVIT-v2)."""
    diversity: float = 1.0
    """gamma: weight of the batch (codebook) entropy inside the penalty."""
    inv_temperature: float = 100.0
    """Sharpness of the soft assignment used by the entropy terms."""

    @property
    def vector_width(self) -> int:
        return self.bits

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 62:
            raise AekitError(f"bits must be in 1..62 (got {self.bits})")
        for name in ("commitment", "entropy_weight", "diversity", "inv_temperature"):
            if getattr(self, name) < 0:
                raise AekitError(f"{name} must be non-negative (got {getattr(self, name)})")


@dataclass
class BSQOptions(BinaryOptions):
    inv_temperature: float = 1.0
    """Sharpness of the soft assignment (1 in the BSQ paper)."""


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log() + (1 - p) * (1 - p).clamp_min(1e-12).log())


def batch_code_entropy(p: torch.Tensor) -> torch.Tensor:
    """H[mean_n q(c|z_n)] for per-bit probabilities p (N, bits) of c_d = 1, in nats: exact
    over all 2^bits codes for small codes, else the per-bit upper bound."""
    bits = p.shape[1]
    if bits > EXACT_ENTROPY_BITS:
        return binary_entropy(p.mean(0)).sum()
    codes = (
        (torch.arange(2**bits, device=p.device)[:, None] >> torch.arange(bits, device=p.device)) & 1
    ).to(p.dtype)
    log_p, log_not = p.clamp_min(1e-12).log(), (1 - p).clamp_min(1e-12).log()
    log_q = log_p @ codes.T + log_not @ (1 - codes).T
    mean_q = log_q.exp().mean(0)
    return -(mean_q * mean_q.clamp_min(1e-30).log()).sum()


class BinaryQuantizer(Quantizer):
    """Sign quantization of `prepare(v)` to codes of magnitude `level`, with the entropy
    penalty; subclasses set the input map, the level and the logit scale."""

    def __init__(self, options: BinaryOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self.register_buffer("powers", 2 ** torch.arange(options.bits), persistent=False)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (2**self.options.bits,)

    level = 1.0
    logit_scale = 4.0

    def prepare(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def quantize(self, v: torch.Tensor) -> Quantized:
        o = self.options
        x = self.prepare(v)
        positive = x > 0
        q = torch.where(positive, self.level, -self.level)
        losses = {"commitment": o.commitment * (x - q).pow(2).sum(1)}
        if o.entropy_weight > 0 and self.training:
            p = torch.sigmoid(o.inv_temperature * self.logit_scale * x)
            per_vector = binary_entropy(p).sum(1)
            losses["entropy"] = o.entropy_weight * (
                per_vector - o.diversity * batch_code_entropy(p)
            )
        index = (positive.long() * self.powers).sum(1, keepdim=True)
        return Quantized(straight_through(x, q), index, losses)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        bits = (indices >> torch.arange(self.options.bits, device=indices.device)) & 1
        return (bits.float() * 2 - 1) * self.level


@BOTTLENECKS.register("lfq")
class LookupFreeQuantizer(BinaryQuantizer):
    Options = BinaryOptions


@BOTTLENECKS.register("bsq")
class BinarySphericalQuantizer(BinaryQuantizer):
    Options = BSQOptions

    def __init__(self, options: BSQOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        self.level = 1.0 / math.sqrt(options.bits)
        self.logit_scale = 2.0 / math.sqrt(options.bits)

    def prepare(self, v: torch.Tensor) -> torch.Tensor:
        return F.normalize(v, dim=1)
