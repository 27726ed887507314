"""Latent quantization (Hsu et al. 2023, "Disentanglement via latent quantization", QLAE):
each latent dimension d has its own learned scalar codebook of n values v_d1..v_dn, and
z_d is replaced by the nearest of them,

    q(z)_d = v_d,k   with k = argmin_k |z_d - v_d,k|,

passed to the decoder straight-through. The codebooks are trained by the quantization loss
|sg(z) - q(z)|^2 and the encoder held to them by the commitment loss |z - sg(q(z))|^2 (both
means over the latents, as in VQ-VAE); the paper's other ingredient is a high weight decay
(AdamW, 0.1: the `qlae` recipe), which keeps the decoder from undoing the grid's axis
alignment. A code is one index per latent: a grid of n^latent_dim points, of which each
factor of variation is meant to take one axis.

The authors' losses are means over pixels with weight 1 on the reconstruction; aekit's NLL is
a sum over the input's values, so the two weights here are the paper's times the number of
input values, which keeps the paper's balance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from aekit.bottlenecks.base import BOTTLENECKS
from aekit.bottlenecks.quantizer import Quantized, Quantizer, straight_through
from aekit.components import Dims
from aekit.errors import AekitError


@dataclass
class LatentQuantizationOptions:
    values_per_latent: int = 10
    """n, the learned values of each latent's scalar codebook (10 in the paper)."""
    quantization_weight: float = 0.001
    """Weight of |sg(z) - q(z)|^2 per input value (the authors' dSprites setting: 0.001)."""
    commitment_weight: float = 0.001
    """Weight of |z - sg(q(z))|^2 per input value (the authors' dSprites setting: 0.001)."""

    def __post_init__(self) -> None:
        if self.values_per_latent < 2:
            raise AekitError(f"values_per_latent must be at least 2 (got {self.values_per_latent})")
        if self.quantization_weight < 0 or self.commitment_weight < 0:
            raise AekitError("quantization_weight and commitment_weight must be non-negative")


@BOTTLENECKS.register("lq")
class LatentQuantizer(Quantizer):
    Options = LatentQuantizationOptions
    codes_positions = False

    def __init__(self, options: LatentQuantizationOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        n = options.values_per_latent
        # The authors' initialisation: every codebook evenly spaced over [-0.5, 0.5].
        self.values = nn.Parameter(torch.linspace(-0.5, 0.5, n).repeat(dims.latent_dim, 1))
        self.loss_scale = math.prod(dims.input_shape)

    @staticmethod
    def vector_width(options, dims: Dims) -> int:
        return dims.latent_dim

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.options.values_per_latent,) * self.latent_dim

    def quantize(self, v: torch.Tensor) -> Quantized:
        index = (v.unsqueeze(-1) - self.values).abs().argmin(-1)  # (N, latent_dim)
        q = self.lookup(index)
        o, scale = self.options, self.loss_scale
        losses = {
            "quantization": o.quantization_weight * scale * (v.detach() - q).pow(2).mean(1),
            "commitment": o.commitment_weight * scale * (v - q.detach()).pow(2).mean(1),
        }
        return Quantized(straight_through(v, q), index, losses)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.values.expand(indices.shape[0], -1, -1), 2, indices.unsqueeze(-1))[
            ..., 0
        ]

    def traversals(
        self, codes: torch.Tensor, rows: int, steps: int
    ) -> list[tuple[str, torch.Tensor]]:
        """The most varied latents first, each set to every value of its codebook (in order
        of value), the other latents at the median code's values."""
        codes = codes.detach()
        spread = codes.var(0) if len(codes) > 1 else torch.zeros(codes.shape[1])
        median = codes.median(0).values
        values = self.values.detach().sort(1).values.to(codes)
        out = []
        for d in torch.argsort(spread, descending=True)[:rows].tolist():
            sweep = median.repeat(values.shape[1], 1)
            sweep[:, d] = values[d]
            out.append((f"z{d}", sweep))
        return out
