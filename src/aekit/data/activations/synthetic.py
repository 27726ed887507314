"""Synthetic activations with a known dictionary.

`make_sparse_data` draws rows that are sparse non-negative combinations of more true feature
directions than dimensions (superposition); `aekit.eval.recovery.feature_recovery` scores a
learned decoder against those directions. Together they are a ground-truth check of a sparse
autoencoder: on real activations nobody knows the features, here we do.

The generative model (all randomness from one `torch.Generator` seeded with `data_seed(seed)`,
a hash of `seed`: seeded with `seed` itself, its first normal draws would be those of a model
initialised after `torch.manual_seed(seed)`, and an SAE's random initial decoder rows would
BE the true features, recovered before any training):

1. Features. F (n_features, d): rows drawn i.i.d. N(0, I_d) and scaled to unit norm, so
   uniform on the sphere (n_features > d is superposition: they cannot be orthogonal).
2. Frequencies. Feature i (0-based) fires on a row with probability p_i, with
   Σ_i p_i = `active`, the expected number of active features per row:
   - "uniform": p_i = active / n_features;
   - "zipf":    p_i = active (i+1)^(-s) / Σ_j (j+1)^(-s), s = `zipf_exponent`, so feature 0
     is the most frequent and the index is the frequency rank.
   A p_i above 1 is an error (lower `active` or s), never silently clipped.
3. Firing, with correlation ρ = `correlated` in [0, 1]. Features are split into groups of
   `group_size` consecutive indices (so, under zipf, of similar frequency; the last group
   may be smaller). Per row, each group g draws one shared U_g ~ Uniform(0, 1), and each
   feature i draws its own V_i ~ Uniform(0, 1) and a coin S_i ~ Bernoulli(√ρ); feature i
   fires when W_i < p_i, with W_i = U_g(i) if S_i else V_i. W_i is Uniform(0, 1) either way,
   so P(i fires) = p_i exactly for every ρ: the frequencies and the expected active count
   do not depend on the correlation. For i ≠ j in the same group,
       P(i and j fire) = ρ min(p_i, p_j) + (1 − ρ) p_i p_j,
   so the correlation of their firing indicators is ρ when p_i = p_j (in general
   ρ (min(p_i, p_j) − p_i p_j) / sqrt(p_i (1 − p_i) p_j (1 − p_j))). Features of different
   groups, and all features when ρ = 0, fire independently.
4. Magnitudes. A firing feature gets a coefficient a_i ~ Uniform(low, high) from
   `magnitude=(low, high)` (0 <= low <= high), or exactly `magnitude` when it is a number;
   a feature that does not fire has a_i = 0.
5. Rows. x = Σ_i a_i F_i + `noise` ε, ε ~ N(0, I_d): `noise` is the standard deviation per
   coordinate (0: noiseless).

Rows are generated in chunks of `CHUNK_ROWS`, so the (rows, n_features) firing matrix is
never held whole; the true codes are kept sparse (CSR) in `SparseCodes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from aekit.errors import AekitError

CHUNK_ROWS = 8192
"""Rows generated per chunk (part of the random stream: changing it changes the data)."""
FREQUENCIES = ("zipf", "uniform")


@dataclass
class SparseCodes:
    """The true sparse codes of the rows, in CSR form: row r's active features are
    `indices[offsets[r]:offsets[r + 1]]` (increasing) with coefficients `values[...]`."""

    offsets: torch.Tensor
    """(N + 1,) int64 row pointers."""
    indices: torch.Tensor
    """(nnz,) int64 feature indices."""
    values: torch.Tensor
    """(nnz,) float32 coefficients a_i (all positive when magnitude's low > 0)."""
    probabilities: torch.Tensor
    """(n_features,) float64 firing probability p_i of each feature (sum: the `active` asked)."""
    groups: torch.Tensor
    """(n_features,) int64 correlation group of each feature (i // group_size)."""
    correlated: float
    """ρ, the firing correlation of equally frequent features of one group."""

    @property
    def n_rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_features(self) -> int:
        return len(self.probabilities)

    def active_counts(self) -> torch.Tensor:
        """(N,) int64: the number of features active on each row."""
        return self.offsets.diff()

    def _slice(self, start: int, stop: int | None) -> tuple[int, torch.Tensor, slice]:
        """(rows, each entry's row relative to start, the entries' slice) of rows [start, stop)."""
        stop = self.n_rows if stop is None else stop
        if not 0 <= start <= stop <= self.n_rows:
            raise AekitError(f"rows [{start}, {stop}) are outside the {self.n_rows} rows")
        counts = self.offsets[start + 1 : stop + 1] - self.offsets[start:stop]
        rows = torch.repeat_interleave(torch.arange(stop - start), counts)
        return stop - start, rows, slice(int(self.offsets[start]), int(self.offsets[stop]))

    def dense(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The dense coefficient matrix (stop - start, n_features) of rows [start, stop)."""
        n, rows, entries = self._slice(start, stop)
        out = torch.zeros(n, self.n_features)
        out[rows, self.indices[entries]] = self.values[entries]
        return out

    def firing(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Boolean (stop - start, n_features): which features fire on rows [start, stop)
        (a coefficient of exactly 0, possible when magnitude's low is 0, still fired)."""
        n, rows, entries = self._slice(start, stop)
        out = torch.zeros(n, self.n_features, dtype=torch.bool)
        out[rows, self.indices[entries]] = True
        return out


class SparseDictionaryData(NamedTuple):
    """What `make_sparse_data` returns; unpacks as (x, features, codes)."""

    x: torch.Tensor
    """(N, d) float32 rows."""
    features: torch.Tensor
    """(n_features, d) float32 true feature directions, unit rows."""
    codes: SparseCodes
    """The true sparse codes and the firing model's parameters."""


def feature_probabilities(
    n_features: int, active: float, frequency: str = "zipf", zipf_exponent: float = 0.5
) -> torch.Tensor:
    """The firing probabilities p_i (n_features,), float64, summing to `active` (step 2 of
    the module's generative model)."""
    if frequency not in FREQUENCIES:
        raise AekitError(f"unknown frequency {frequency!r}; choose from {FREQUENCIES}")
    if not 0 < active <= n_features:
        raise AekitError(f"active must be in (0, n_features={n_features}] (got {active})")
    if frequency == "uniform":
        return torch.full((n_features,), active / n_features, dtype=torch.float64)
    if zipf_exponent < 0:
        raise AekitError(f"zipf_exponent must be non-negative (got {zipf_exponent})")
    weights = torch.arange(1, n_features + 1, dtype=torch.float64).pow(-zipf_exponent)
    p = active * weights / weights.sum()
    if p[0] > 1:
        raise AekitError(
            f"zipf frequencies with exponent {zipf_exponent} and {active} active features of "
            f"{n_features} give the most frequent feature probability {float(p[0]):.3g} > 1; "
            "lower active or zipf_exponent"
        )
    return p


def _magnitude_range(magnitude: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(magnitude, int | float):
        low = high = float(magnitude)
    else:
        low, high = (float(m) for m in magnitude)
    if not (0 <= low <= high and high > 0 and math.isfinite(high)):
        raise AekitError(
            f"magnitude must be a positive number or a range (low, high) with 0 <= low <= high, "
            f"high > 0 (got {magnitude})"
        )
    return low, high


def data_seed(seed: int) -> int:
    """The generator seed of `make_sparse_data(seed=seed)`: a hash, so that the data's random
    stream never coincides with the global one after `torch.manual_seed(seed)`."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x5AE_DA7A]).generate_state(1)[0])


def make_sparse_data(
    n_rows: int,
    d: int,
    n_features: int,
    *,
    active: float = 8.0,
    correlated: float = 0.0,
    group_size: int = 4,
    magnitude: float | tuple[float, float] = (0.5, 1.5),
    frequency: str = "zipf",
    zipf_exponent: float = 0.5,
    noise: float = 0.0,
    seed: int = 0,
) -> SparseDictionaryData:
    """`n_rows` rows of width `d`, each a sparse non-negative combination of `n_features`
    true unit directions, as the module docstring's generative model describes: `active`
    features per row on average, firing with frequencies `frequency` ("zipf" with
    `zipf_exponent`, or "uniform"), correlated with strength `correlated` = ρ within groups
    of `group_size` consecutive features, coefficients from `magnitude`, plus Gaussian
    `noise` per coordinate. Equal arguments give equal data."""
    for name, value in (("n_rows", n_rows), ("d", d), ("n_features", n_features)):
        if value < 1:
            raise AekitError(f"{name} must be at least 1 (got {value})")
    if group_size < 1:
        raise AekitError(f"group_size must be at least 1 (got {group_size})")
    if not 0.0 <= correlated <= 1.0:
        raise AekitError(f"correlated must be in [0, 1] (got {correlated})")
    if not (noise >= 0 and math.isfinite(noise)):
        raise AekitError(f"noise must be a non-negative standard deviation (got {noise})")
    low, high = _magnitude_range(magnitude)
    p = feature_probabilities(n_features, active, frequency, zipf_exponent)
    p32 = p.float()
    groups = torch.arange(n_features) // group_size
    n_groups = int(groups[-1]) + 1
    shared = math.sqrt(correlated)

    gen = torch.Generator().manual_seed(data_seed(seed))
    features = F.normalize(torch.randn(n_features, d, generator=gen), dim=1)
    xs, offsets, indices, values = [], [torch.zeros(1, dtype=torch.int64)], [], []
    total = 0
    for start in range(0, n_rows, CHUNK_ROWS):
        b = min(CHUNK_ROWS, n_rows - start)
        w = torch.rand(b, n_features, generator=gen)
        if shared > 0:
            u = torch.rand(b, n_groups, generator=gen)[:, groups]
            coin = torch.rand(b, n_features, generator=gen) < shared
            w = torch.where(coin, u, w)
        fire = w < p32
        mags = low + (high - low) * torch.rand(b, n_features, generator=gen)
        code = torch.where(fire, mags, 0.0)
        x = code @ features
        if noise > 0:
            x = x + noise * torch.randn(b, d, generator=gen)
        rows, cols = fire.nonzero(as_tuple=True)  # row-major: CSR order
        counts = fire.sum(1)
        offsets.append(total + counts.cumsum(0))
        total += int(counts.sum())
        indices.append(cols)
        values.append(code[rows, cols])
        xs.append(x)
    codes = SparseCodes(
        offsets=torch.cat(offsets),
        indices=torch.cat(indices),
        values=torch.cat(values),
        probabilities=p,
        groups=groups,
        correlated=float(correlated),
    )
    return SparseDictionaryData(torch.cat(xs), features, codes)
