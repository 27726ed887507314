"""The mean-scale hyperprior (Ballé et al. 2018, "Variational image compression with a scale
hyperprior"; with predicted means, Minnen, Ballé & Toderici 2018, "Joint autoregressive and
hierarchical priors for learned image compression", their "Mean & Scale Hyperprior").

Side latents z = h_a(y), two stride-2 stages below the latent grid, are coded under a
factorized density; the hyper-synthesis h_s(z^) predicts for every latent a mean mu and a
scale sigma, and y is coded as q = round(y - mu) under N(0, sigma^2) convolved with the box.
The decoder sees q + mu.

**Deterministic decoding.** The decoder must pick, for every symbol, exactly the table the
encoder picked; in floating point h_s(z^) can differ by an ulp between thread counts, BLAS
builds or devices, and a scale next to a table boundary then selects another table and
corrupts everything after it (CompressAI's most reported failure). Here h_s runs in evaluation
in exact dyadic fixed point: weights, biases and every layer's output are rounded to
multiples of 2^-16 and carried in float64, so every product is a multiple of 2^-32 and every
partial sum is exact while it stays below 2^20 (53 mantissa bits), which is checked, by bound,
on every layer. Exact sums do not depend on the order they are added in, so mu and sigma are
bit-identical whatever the threads, the kernels or the machine; a scale then selects its table
by comparisons with the fixed table of scales (no exp, no log).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aekit.bottlenecks.base import BOTTLENECKS, BottleneckOutput
from aekit.bottlenecks.entropy import (
    LIKELIHOOD_MIN,
    TAIL_MASS,
    CodingStage,
    EntropyCoded,
    FactorizedDensity,
    TableBank,
    add_noise,
    check_table_sizes,
    sha256_of,
)
from aekit.bottlenecks.factorized import ChannelDensity, FactorizedOptions
from aekit.components import Dims
from aekit.errors import AekitError
from aekit.lower_bound import lower_bound

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64
"""The Gaussian tables: 64 scales spaced evenly in log from 0.11 to 256 (CompressAI's table,
after Ballé et al. 2018); predicted scales are bounded below by 0.11 in training too, and a
scale codes with the smallest table scale at or above it."""
FIXED_POINT = 2.0**-16
"""The grid of the exact hyper-synthesis."""
FIXED_POINT_RANGE = 2.0**20
"""Partial sums stay exact below 2^21 on a 2^-32 grid; anything at or past 2^20 is refused."""


def scale_table() -> torch.Tensor:
    return torch.exp(
        torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS, dtype=torch.float64)
    )


def gaussian_mass(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """P(x - 1/2 < X <= x + 1/2) for X ~ N(0, sigma^2), from the side of the smaller tail."""
    v = x.abs()
    return torch.special.ndtr((0.5 - v) / sigma) - torch.special.ndtr((-0.5 - v) / sigma)


def gaussian_bank(scales: torch.Tensor) -> TableBank:
    """One table per scale over -K .. K, K = ceil(scale * z) for the two-sided TAIL_MASS."""
    z = float(torch.special.ndtri(torch.tensor(1 - TAIL_MASS / 2, dtype=torch.float64)))
    half = torch.ceil(scales * z).long()
    sizes = 2 * half + 1
    check_table_sizes(sizes)
    k = torch.arange(int(sizes.max()), dtype=torch.float64)
    centres = k - half.double().unsqueeze(1)
    keep = k.unsqueeze(0) < sizes.unsqueeze(1)
    sigma = scales.unsqueeze(1)
    tail = torch.special.ndtr((-half.double() - 0.5) / scales)
    pmf = torch.zeros(len(scales), int(sizes.max()) + 2, dtype=torch.float64)
    pmf[:, 1:-1] = torch.where(keep, gaussian_mass(centres, sigma), 0.0)
    pmf[:, 0] = tail
    pmf.scatter_(1, (sizes + 1).unsqueeze(1), tail.unsqueeze(1))
    return TableBank(-half, sizes, pmf)


def halved(size: tuple[int, int]) -> tuple[int, int]:
    """The map size after a 5x5 stride-2 conv with padding 2: ceil(n / 2)."""
    return ((size[0] + 1) // 2, (size[1] + 1) // 2)


def up(c_in: int, c_out: int, small: tuple[int, int], large: tuple[int, int]) -> nn.Module:
    """The 5x5 stride-2 transposed conv from `small` back to exactly `large`."""
    pad = (large[0] - 2 * small[0] + 1, large[1] - 2 * small[1] + 1)
    return nn.ConvTranspose2d(c_in, c_out, 5, 2, 2, output_padding=pad)


def on_grid(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x / FIXED_POINT) * FIXED_POINT


@torch.no_grad()
def exact_forward(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`layers` (convs, transposed convs and ReLUs) on x (float64, CPU, on the grid) in exact
    fixed point: see the module docstring. Out of range is an AekitError, never a silent
    rounding."""
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            x = x.clamp_min(0)
            continue
        w, b = (
            on_grid(layer.weight.detach().cpu().double()),
            on_grid(layer.bias.detach().cpu().double()),
        )
        if isinstance(layer, nn.ConvTranspose2d):
            args = (layer.stride, layer.padding, layer.output_padding)
            conv = F.conv_transpose2d
        else:
            args = (layer.stride, layer.padding)
            conv = F.conv2d
        bound = conv(x.abs(), w.abs(), None, *args) + b.abs().view(1, -1, 1, 1)
        if float(bound.max()) >= FIXED_POINT_RANGE:
            raise AekitError(
                "the hyper-synthesis left its exact fixed-point range (a partial sum reached "
                f"{float(bound.max()):.3g} >= 2^20): the model's side network has diverged"
            )
        x = on_grid(conv(x, w, b, *args))
    return x


@dataclass
class HyperpriorOptions(FactorizedOptions):
    latent_channels: int = 64
    """M, channels of the main latent at each position of the grid."""
    hyper_channels: int = 64
    """N, channels of the side latent z (two stride-2 stages below the latent grid)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hyper_channels < 1:
            raise AekitError(f"hyper_channels must be at least 1 (got {self.hyper_channels})")


@BOTTLENECKS.register("hyperprior")
class Hyperprior(EntropyCoded):
    Options = HyperpriorOptions

    def __init__(self, options: HyperpriorOptions, dims: Dims) -> None:
        super().__init__(options, dims)
        m, n = self.channels, options.hyper_channels
        grid, half = self.grid, halved(self.grid)
        self.side_grid = halved(half)
        wide = 3 * m // 2
        self.hyper_analysis = nn.Sequential(
            nn.Conv2d(m, n, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(n, n, 5, 2, 2), nn.ReLU(),
            nn.Conv2d(n, n, 5, 2, 2),
        )  # fmt: skip
        self.hyper_synthesis = nn.Sequential(
            up(n, m, self.side_grid, half), nn.ReLU(),
            up(m, wide, half, grid), nn.ReLU(),
            nn.Conv2d(wide, 2 * m, 3, 1, 1),
        )  # fmt: skip
        self.side_density = FactorizedDensity(n)
        self.side = ChannelDensity(self.side_density)
        self.scales = scale_table()
        self._bank: TableBank | None = None

    @property
    def bank(self) -> TableBank:
        """The Gaussian tables (they depend on no weight: built once)."""
        if self._bank is None:
            self._bank = gaussian_bank(self.scales)
        return self._bank

    def side_positions(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, h, w) -> (B, h*w, N)."""
        return z.permute(0, 2, 3, 1).reshape(z.shape[0], -1, z.shape[1])

    def side_maps(self, z: torch.Tensor) -> torch.Tensor:
        """(B, h*w, N) -> (B, N, h, w)."""
        return z.view(z.shape[0], *self.side_grid, -1).permute(0, 3, 1, 2)

    def noisy(self, h: torch.Tensor, samples: int) -> BottleneckOutput:
        y = self.maps(h)
        z_noisy, side_bits = self.side.noisy(self.side_positions(self.hyper_analysis(y)))
        mu, raw_scale = self.hyper_synthesis(self.side_maps(z_noisy)).chunk(2, dim=1)
        sigma = lower_bound(raw_scale, SCALE_MIN)
        y_noisy = add_noise(y)
        likelihood = gaussian_mass(y_noisy - mu, sigma).clamp_min(LIKELIHOOD_MIN)
        bits = -torch.log2(likelihood).sum((1, 2, 3)) + side_bits
        return self.output(
            self.flat(y_noisy), bits, samples, y=h, mu=self.flat(mu), sigma=self.flat(sigma)
        )

    @torch.no_grad()
    def conditionals(self, side_symbols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The means (B, latent_dim) float64 and table indices (B, latent_dim) int64 of the
        main latents, position-major, from the side symbols, exactly (CPU fixed point)."""
        side = self.stage(0, [], len(side_symbols))
        z_hat = self.side_maps(side_symbols.double() + side.offsets)
        mu, scale = exact_forward(self.hyper_synthesis, z_hat).chunk(2, dim=1)
        index = torch.searchsorted(self.scales, self.flat(scale).clamp_min(SCALE_MIN).contiguous())
        return self.flat(mu), index.clamp_max(SCALE_LEVELS - 1)

    @property
    def stages(self) -> int:
        return 2

    @torch.no_grad()
    def values(self, h: torch.Tensor) -> list[torch.Tensor]:
        z = self.side_positions(self.hyper_analysis(self.maps(h)))
        return [z.reshape(len(h), -1).cpu().double(), h.detach().cpu().double()]

    def stage(self, s: int, previous: list[torch.Tensor], n: int) -> CodingStage:
        if s == 0:
            return self.side.stage(n, self.side_grid[0] * self.side_grid[1])
        mu, index = self.conditionals(previous[0])
        return CodingStage(index, self.bank, mu)

    def identity(self) -> str:
        tables = sha256_of(self.scales, self.bank.lo, self.bank.sizes, self.bank.pmf)
        return hashlib.sha256(f"{self.side.identity()} {tables}".encode()).hexdigest()
