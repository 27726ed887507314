"""Quantizers built from several vector quantizers.

- Residual VQ (Zeghidour et al. 2021; Lee et al. 2022, RQ-VAE): stage s quantizes what the
  stages before it left over, r_s = x - sum_{i<s} e_i, so a vector is coded by one index per
  stage and approximated ever more finely. The commitment loss of stage s is
  beta |r_s - sg[e_s]|^2 = beta |x - sg[sum_{i<=s} e_i]|^2, RQ-VAE's partial-sum form. Stages
  have their own codebooks or share one (RQ-VAE). Quantizer dropout (SoundStream) trains each
  example on a random number of leading stages, so a prefix of the indices is a coarser code
  and one model serves several bitrates.
- Product (grouped) VQ (Jegou et al. 2011): the vector is cut into groups, each quantized by
  its own codebook; the code is one index per group.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from aekit import distributed
from aekit.bottlenecks.base import BOTTLENECKS
from aekit.bottlenecks.quantizer import Quantized, Quantizer, rotation_trick, straight_through
from aekit.bottlenecks.vq import CodeStatistics, VectorQuantizer, VQOptions
from aekit.components import Dims
from aekit.errors import AekitError


def stage_options(options: VQOptions, code_dim: int) -> VQOptions:
    values = {f.name: getattr(options, f.name) for f in fields(VQOptions)}
    return VQOptions(**{**values, "code_dim": code_dim})


@dataclass
class ResidualOptions(VQOptions):
    stages: int = 4
    """Number of residual stages (indices per vector)."""
    shared_codebook: bool = False
    """One codebook for all stages (RQ-VAE) instead of one per stage."""
    quantizer_dropout: float = 0.0
    """Probability that a training example uses only a random number 1..stages of leading
    stages (SoundStream uses 1.0 for variable bitrate; 0: off)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stages < 1:
            raise AekitError(f"stages must be at least 1 (got {self.stages})")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise AekitError(f"quantizer_dropout must be in [0, 1] (got {self.quantizer_dropout})")
        if self.cosine:
            raise AekitError("cosine codebooks are for single-stage vq: residuals are not unit")


@BOTTLENECKS.register("rvq")
class ResidualVQ(Quantizer):
    Options = ResidualOptions
    truncatable = True

    def __init__(self, options: ResidualOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        stage_dims = Dims(dims.input_shape, options.code_dim)
        count = 1 if options.shared_codebook else options.stages
        self.stages = nn.ModuleList(
            VectorQuantizer(stage_options(options, options.code_dim), stage_dims)
            for _ in range(count)
        )

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.options.codebook_size,) * self.options.stages

    def stage(self, s: int) -> VectorQuantizer:
        return self.stages[0 if self.options.shared_codebook else s]

    def kept_stages(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, stages) 0/1: the stages each vector uses. Dropout draws one depth per example
        (the positions of an example share it)."""
        o = self.options
        keep = torch.ones(n, o.stages, device=device)
        if not self.training or o.quantizer_dropout == 0 or n % self.positions:
            return keep
        examples = n // self.positions
        depth = distributed.per_row(
            lambda s: torch.randint(1, o.stages + 1, s, device=device), (examples,)
        )
        dropped = distributed.rand_rows((examples,), device=device) < o.quantizer_dropout
        depth = torch.where(dropped, depth, torch.full_like(depth, o.stages))
        keep = (torch.arange(o.stages, device=device) < depth.unsqueeze(1)).float()
        return keep.repeat_interleave(self.positions, 0)

    def quantize(self, v: torch.Tensor) -> Quantized:
        keep = self.kept_stages(v.shape[0], v.device)
        residual, total = v, torch.zeros_like(v)
        indices, losses, statistics = [], {}, []
        dropout = self.training and self.options.quantizer_dropout > 0
        for s in range(self.options.stages):
            stage = self.stage(s)
            # Every stage picks its codes from the codebook as the step found it; the
            # codebooks change once, after the last stage (update_codebooks).
            e, idx, stage_losses, distances = stage.nearest(residual, update=False)
            if stage.updates_codebook:
                weight = keep[:, s] if dropout else None
                statistics.append(stage.statistics(residual.detach(), idx, distances, weight))
            total = total + e * keep[:, s : s + 1]
            residual = residual - e.detach()
            indices.append(idx)
            for name, value in stage_losses.items():
                losses[name] = losses.get(name, 0.0) + value * keep[:, s]
        if statistics:
            self.update_codebooks(statistics)
        z_q = rotation_trick(v, total) if self.options.rotation else straight_through(v, total)
        return Quantized(z_q, torch.stack(indices, 1), losses)

    def update_codebooks(self, statistics: list[CodeStatistics]) -> None:
        """One EMA / restart update per codebook and training step. A shared codebook pools
        the vectors of all stages into a single update, so it decays once per step (not once
        per stage, which would forget S times faster and let the last stage's residuals,
        not all of them, set the codes). Vectors of stages that quantizer dropout left out
        of an example are not counted."""
        if self.options.shared_codebook:
            pooled = statistics[0]
            for st in statistics[1:]:
                pooled = pooled.pooled(st)
            self.stages[0].apply_statistics(pooled)
            return
        for stage, st in zip(self.stages, statistics, strict=True):
            stage.apply_statistics(st)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return sum(self.stage(s).lookup(indices[:, s : s + 1]) for s in range(indices.shape[1]))


@dataclass
class ProductOptions(VQOptions):
    groups: int = 2
    """Number of groups the vector is cut into, each with its own codebook."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.groups < 1:
            raise AekitError(f"groups must be at least 1 (got {self.groups})")
        if self.code_dim % self.groups:
            raise AekitError(
                f"code_dim ({self.code_dim}) must be a multiple of groups ({self.groups})"
            )


@BOTTLENECKS.register("pvq")
class ProductVQ(Quantizer):
    Options = ProductOptions

    def __init__(self, options: ProductOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        width = options.code_dim // options.groups
        self.width = width
        self.groups = nn.ModuleList(
            VectorQuantizer(stage_options(options, width), Dims(dims.input_shape, width))
            for _ in range(options.groups)
        )

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.options.codebook_size,) * self.options.groups

    def quantize(self, v: torch.Tensor) -> Quantized:
        parts = [g.quantize(x) for g, x in zip(self.groups, v.split(self.width, 1), strict=True)]
        losses: dict[str, torch.Tensor] = {}
        for part in parts:
            for name, value in part.losses.items():
                losses[name] = losses.get(name, 0.0) + value
        return Quantized(
            torch.cat([p.z_q for p in parts], 1), torch.cat([p.indices for p in parts], 1), losses
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.lookup(indices[:, i : i + 1]) for i, g in enumerate(self.groups)], 1)
