"""Entropy-coded bottlenecks: latents rounded to integers and coded under learned densities
(Ballé, Laparra & Simoncelli 2017; Ballé et al. 2018, "Variational image compression with a
scale hyperprior"; Minnen, Ballé & Toderici 2018).

In training the latents get additive uniform noise U(-1/2, 1/2), a differentiable stand-in
for rounding whose density is the learned density convolved with the box, so the rate is
-log2 of the density's mass over [y - 1/2, y + 1/2]. In evaluation they are rounded, and each
integer symbol is coded under one of a bank of probability tables (`TableBank`). The file
then costs that ideal code length plus the coder's few bytes, so the rate reported in
evaluation is what the file will weigh.

The tables are derived from the weights in float64 on the CPU, deterministically, and never
saved: loading a model rebuilds them (there is no `update()` to forget), and a compressed file
records their SHA-256 so that tables that came out differently on another machine are refused
instead of decoding garbage.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from abc import abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aekit.bottlenecks.base import Bottleneck, BottleneckOutput
from aekit.components import Dims
from aekit.errors import AekitError

TAIL_MASS = 1e-9
"""The probability left outside a table's regular symbols, split between its two tails
(CompressAI's default): a symbol out there is coded as an escape plus its distance."""
MAX_TABLE = 2**16
"""Regular symbols one table may hold: wider densities are refused (a latent spread over
65,536 integers is a model that has not learned to compress)."""
ESCAPE_CLASSES = 48
"""Escaped distances e >= 0 are coded Exp-Golomb style: the class n = bit_length(e + 1) - 1
under P(n) proportional to 2^-(n + 1), then the n bits below the leading one, each at one
bit. Distances below 2^48 - 1 are representable, far past any float32 latent's integers."""
LIKELIHOOD_MIN = 1e-9
"""Training likelihoods are bounded below here (CompressAI's bound): -log2 stays finite,
at most 30 bits a symbol, while a latent is far out in a tail."""
OFFSET_GRID = 2.0**-8
"""Quantisation offsets (a density's median) are rounded to multiples of this, so that
dequantised latents q + offset lie on a dyadic grid (exact in the hyper-synthesis)."""


def escape_pmf() -> torch.Tensor:
    """P(n) of the escape classes n = 0 .. ESCAPE_CLASSES - 1, float64."""
    p = torch.tensor([2.0 ** -(n + 1) for n in range(ESCAPE_CLASSES)], dtype=torch.float64)
    return p / p.sum()


def escape_class(distances: torch.Tensor) -> torch.Tensor:
    """n = bit_length(e + 1) - 1 of distances e >= 0 (int64), exactly (frexp's exponent)."""
    return torch.frexp((distances + 1).double()).exponent.long() - 1


def escape_bits(distances: torch.Tensor) -> torch.Tensor:
    """Code length in bits of escaped distances e >= 0 (int64): the class and its bits."""
    n = escape_class(distances)
    return -torch.log2(escape_pmf())[n] + n


def check_table_sizes(sizes: torch.Tensor) -> None:
    widest = int(sizes.max())
    if widest > MAX_TABLE:
        raise AekitError(
            f"a learned density spreads over {widest:,} integers, more than the {MAX_TABLE:,} a "
            "probability table holds (the model has not learned to compress: train it with a "
            "rate term, --objective rd)"
        )


PROBABILITY_MIN = 2.0**-24
"""The smallest probability a table entry gets: constriction's 24-bit probabilities give no
symbol less, so the ideal code length below is the coder's, even for an entry the density
puts at 0 (a collapsed channel's tail)."""


@dataclass
class TableBank:
    """Probability tables over integer symbols, each with two escape entries.

    Table t codes the symbols lo[t] .. lo[t] + sizes[t] - 1 as entries 1 .. sizes[t] of its
    row of `pmf`; entry 0 means "below, by a distance coded after" and entry sizes[t] + 1
    "above". Rows are float64, zero-padded past sizes[t] + 2; each entry is at least
    PROBABILITY_MIN and each row sums to 1 (normalised on construction)."""

    lo: torch.Tensor
    """(T,) int64."""
    sizes: torch.Tensor
    """(T,) int64."""
    pmf: torch.Tensor
    """(T, max(sizes) + 2) float64."""

    def __post_init__(self) -> None:
        used = torch.arange(self.pmf.shape[1]).unsqueeze(0) < (self.sizes + 2).unsqueeze(1)
        floored = torch.where(used, self.pmf.clamp_min(PROBABILITY_MIN), 0.0)
        self.pmf = floored / floored.sum(1, keepdim=True)

    @property
    def tables(self) -> int:
        return len(self.lo)

    def row(self, t: int) -> torch.Tensor:
        return self.pmf[t, : int(self.sizes[t]) + 2]

    def entries(
        self, symbols: torch.Tensor, tables: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each symbol's entry in its table, and its escaped distance (0 where not escaped);
        int64 CPU tensors shaped like `symbols`."""
        rel = symbols.long().cpu() - self.lo[tables.cpu()]
        size = self.sizes[tables.cpu()]
        below, above = rel < 0, rel >= size
        entry = torch.where(below, 0, torch.where(above, size + 1, rel + 1))
        distance = torch.where(below, -rel - 1, torch.where(above, rel - size, 0))
        return entry, distance

    def symbols(
        self, entries: torch.Tensor, distances: torch.Tensor, tables: torch.Tensor
    ) -> torch.Tensor:
        """The inverse of `entries`."""
        lo, size = self.lo[tables], self.sizes[tables]
        regular = lo + entries - 1
        return torch.where(
            entries == 0,
            lo - 1 - distances,
            torch.where(entries == size + 1, lo + size + distances, regular),
        )

    def bits(self, symbols: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """The ideal code length of each symbol, float64, shaped like `symbols`."""
        entry, distance = self.entries(symbols, tables)
        escaped = (entry == 0) | (entry == self.sizes[tables.cpu()] + 1)
        bits = -torch.log2(self.pmf[tables.cpu(), entry])
        return bits + torch.where(escaped, escape_bits(distance), 0.0)

    def identity(self) -> str:
        """SHA-256 of the tables' supports and probabilities (bit for bit)."""
        return sha256_of(self.lo, self.sizes, self.pmf)


def sha256_of(*tensors: torch.Tensor) -> str:
    """SHA-256 (hex) of CPU tensors' bytes, in order."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def interval_mass(logits, x: torch.Tensor) -> torch.Tensor:
    """P(x - 1/2 < X <= x + 1/2) for a CDF given by its logits, computed on the side of the
    median where the subtraction loses least (Ballé 2018's sign trick)."""
    upper, lower = logits(x + 0.5), logits(x - 0.5)
    sign = -torch.sign(upper + lower).detach()
    return (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()


class FactorizedDensity(nn.Module):
    """A learned univariate density per channel, through its CDF (Ballé et al. 2018, appendix
    6.1): c(x) = f_K(... f_1(x)), f_k(x) = g_k(H_k x + b_k), g_k(x) = x + a_k * tanh(x) for
    k < K and the logistic sigmoid for k = K, with H_k = softplus(H'_k) > 0 and
    a_k = tanh(a'_k) > -1, so c increases monotonically from 0 to 1 for any weights.

    The quantisation offset of a channel is its median (found by bisection, exactly: there is
    no auxiliary quantile loss to train), and its table covers the central 1 - TAIL_MASS."""

    FILTERS = (3, 3, 3)
    """Hidden widths of the CDF network (the paper's)."""
    INIT_SCALE = 10.0
    """The initial density is about this wide (Ballé 2018's initialisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        widths = (1, *self.FILTERS, 1)
        scale = self.INIT_SCALE ** (1 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
            init = math.log(math.expm1(1 / scale / w_out))
            self.matrices.append(nn.Parameter(torch.full((channels, w_out, w_in), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, w_out, 1) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, w_out, 1)))
        self._tables: tuple[tuple, torch.Tensor, TableBank] | None = None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The CDF's logits at x (channels, n), computed in x's dtype."""
        cast = [[p.to(x.dtype) for p in group] for group in self._groups()]
        return cdf_logits(x, *cast)

    def _groups(self) -> tuple[nn.ParameterList, nn.ParameterList, nn.ParameterList]:
        return self.matrices, self.biases, self.factors

    def likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """The mass of [x - 1/2, x + 1/2] for values x (channels, n), bounded below."""
        return interval_mass(self.logits, x).clamp_min(LIKELIHOOD_MIN)

    def tables(self) -> tuple[torch.Tensor, TableBank]:
        """The quantisation offsets (channels,) float64 and one table per channel, rebuilt in
        float64 on the CPU whenever the weights have changed since the last call."""
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if self._tables is None or self._tables[0] != key:
            self._tables = (key, *self._build())
        return self._tables[1], self._tables[2]

    @torch.no_grad()
    def _build(self) -> tuple[torch.Tensor, TableBank]:
        exact = [[p.detach().cpu().double() for p in group] for group in self._groups()]

        def logits(x: torch.Tensor) -> torch.Tensor:
            return cdf_logits(x, *exact)

        def solve(target: float) -> torch.Tensor:
            """x (channels,) with logits(x) = target, by bisection (the logits increase)."""
            lo = torch.full((self.channels, 1), -(2.0**24), dtype=torch.float64)
            hi = -lo
            for _ in range(90):
                mid = (lo + hi) / 2
                below = logits(mid) < target
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            return ((lo + hi) / 2).squeeze(1)

        tail = math.log(TAIL_MASS / 2) - math.log1p(-TAIL_MASS / 2)  # logit(TAIL_MASS / 2)
        offsets = torch.round(solve(0.0) / OFFSET_GRID) * OFFSET_GRID
        lo = torch.floor(solve(tail) - offsets).long()
        sizes = torch.ceil(solve(-tail) - offsets).long() - lo + 1
        check_table_sizes(sizes)
        k = torch.arange(int(sizes.max()), dtype=torch.float64)
        centres = lo.double().unsqueeze(1) + k + offsets.unsqueeze(1)  # (channels, widest)
        keep = k.unsqueeze(0) < sizes.unsqueeze(1)
        ends = centres.gather(1, (sizes - 1).unsqueeze(1))
        pmf = torch.zeros(self.channels, int(sizes.max()) + 2, dtype=torch.float64)
        pmf[:, 1:-1] = torch.where(keep, interval_mass(logits, centres), 0.0)
        pmf[:, 0] = torch.sigmoid(logits(centres[:, :1] - 0.5)).squeeze(1)
        pmf.scatter_(1, (sizes + 1).unsqueeze(1), torch.sigmoid(-logits(ends + 0.5)))
        return offsets, TableBank(lo, sizes, pmf)


def cdf_logits(
    x: torch.Tensor,
    matrices: list[torch.Tensor],
    biases: list[torch.Tensor],
    factors: list[torch.Tensor],
) -> torch.Tensor:
    """The logits of FactorizedDensity's CDF at x (channels, n) for its parameters."""
    h = x.unsqueeze(1)  # (channels, 1, n)
    for k, (matrix, bias) in enumerate(zip(matrices, biases, strict=True)):
        h = torch.matmul(F.softplus(matrix), h) + bias
        if k < len(factors):
            h = h + torch.tanh(factors[k]) * torch.tanh(h)
    return h.squeeze(1)


def add_noise(y: torch.Tensor) -> torch.Tensor:
    """y + U(-1/2, 1/2): the training proxy of rounding."""
    return y + torch.rand_like(y) - 0.5


@dataclass
class CodingStage:
    """How one stage of a compressed file codes its integers: which table of `bank` codes
    each symbol (N, n) int64, and the offset (N, n) float64 that a symbol q stands for q +
    offset of (a channel's median, a predicted mean)."""

    tables: torch.Tensor
    bank: TableBank
    offsets: torch.Tensor


class EntropyCoded(Bottleneck):
    """A latent of `vector_width` channels at each position of the body's grid (on flat data
    a column of latent_dim / vector_width positions), rounded and entropy-coded in evaluation.

    Subclasses define the training densities (`forward` in training mode) and the coding
    protocol: `values` gives the continuous values each stage rounds, `stage` how stage s is
    coded given the symbols of the stages before it, and `identity` the hash of every table
    that does not depend on the data. The last stage is the latent the decoder sees. Encoding,
    decoding and the evaluation forward all go through `code` / `stage`, so the encoder uses
    exactly what the decoder will compute, and each stage's model is computed once."""

    codes_positions = True
    has_rate = True

    def __init__(self, options, dims: Dims) -> None:
        super().__init__(options, dims)
        self.channels = options.vector_width
        # A flat latent is a column of positions (the convolutions of a hyperprior still apply).
        self.grid = dims.latent_grid or (max(dims.latent_dim // self.channels, 1), 1)
        if dims.latent_dim != self.grid[0] * self.grid[1] * self.channels:
            raise AekitError(
                f"the {self.kind} latent is {self.grid[0]}x{self.grid[1]} positions x "  # type: ignore[attr-defined]
                f"{self.channels} channels; latent_dim {dims.latent_dim} does not match"
            )

    def maps(self, flat: torch.Tensor) -> torch.Tensor:
        """(B, h*w*C) position-major -> (B, C, h, w) feature maps."""
        return flat.view(flat.shape[0], *self.grid, self.channels).permute(0, 3, 1, 2)

    def flat(self, maps: torch.Tensor) -> torch.Tensor:
        """The inverse of `maps`."""
        return maps.permute(0, 2, 3, 1).reshape(maps.shape[0], -1)

    def output(
        self, y_hat: torch.Tensor, bits: torch.Tensor, samples: int, **params
    ) -> BottleneckOutput:
        return BottleneckOutput(
            z=y_hat if samples == 1 else y_hat.repeat(samples, 1),
            code=y_hat,
            samples=samples,
            bits=bits,
            params=params,
        )

    def forward(
        self, h: torch.Tensor, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        if self.training:
            return self.noisy(h, samples)
        symbols, stages = self.code(h)
        bits = sum(st.bank.bits(q, st.tables).sum(1) for q, st in zip(symbols, stages, strict=True))
        y_hat = self.dequantise(symbols[-1], stages[-1].offsets).to(h)
        return self.output(y_hat, bits.to(h), samples, y=h)

    @torch.no_grad()
    def code(self, h: torch.Tensor) -> tuple[list[torch.Tensor], list[CodingStage]]:
        """Every stage's symbols (B, n_s) int64, round(value - offset), and how it is coded."""
        symbols: list[torch.Tensor] = []
        stages: list[CodingStage] = []
        for s, value in enumerate(self.values(h)):
            stages.append(self.stage(s, symbols, len(h)))
            symbols.append(torch.round(value - stages[-1].offsets).long())
        return symbols, stages

    def dequantise(self, symbols: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The latent the decoder sees, q + offset, from the last stage's symbols."""
        return (symbols.double() + offsets).to(next(self.parameters()))

    @abstractmethod
    def noisy(self, h: torch.Tensor, samples: int) -> BottleneckOutput:
        """The training forward: noisy latents and their rate."""

    @property
    @abstractmethod
    def stages(self) -> int:
        """How many stages a compressed file codes, in order."""

    @abstractmethod
    def values(self, h: torch.Tensor) -> list[torch.Tensor]:
        """The continuous values (B, n_s) float64 on the CPU each stage rounds."""

    @abstractmethod
    def stage(self, s: int, previous: list[torch.Tensor], n: int) -> CodingStage:
        """How stage s of n examples is coded, given the symbols of stages 0 .. s-1."""

    @abstractmethod
    def identity(self) -> str:
        """SHA-256 of the fixed tables (those that do not depend on the coded data)."""
