"""A prior over the code indices of a quantized autoencoder, fitted by counting.

A quantizer names each example by an index array (positions, slots). To entropy-code those
indices, and to sample from a model that learns no p(z), we need a distribution over them.
The simplest honest one is a categorical per (position, slot), independent of the others:
p(k) for each code k of that slot's codebook, estimated from the training indices.

Estimation uses additive smoothing with alpha = 1/2 per code (the Krichevsky–Trofimov
estimator): p(k) = (count(k) + 1/2) / (n + K/2). A code never seen in training still gets a
positive probability, so any valid index array can be coded (at a cost of roughly
log2(2n + K) bits), and the KT estimator's extra code length over the best categorical in
hindsight grows only as (K - 1)/2 · log2 n bits per (position, slot).

Counts are kept in float64 on the CPU, padded to the largest codebook (the padding is zero
and never used), so a save/load round trip is exact and encoder and decoder of a compressed
file see bit-identical probabilities.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from aekit.bottlenecks.quantizer import validate_indices
from aekit.errors import AekitError
from aekit.eval.metrics import encode_all
from aekit.io import read_aekit_safetensors, write_safetensors

if TYPE_CHECKING:
    from aekit.data.tensor_data import TensorData
    from aekit.models.autoencoder import Autoencoder

INDEX_PRIOR = "index_prior.safetensors"
"""File name of a fitted index prior in a run directory."""
FORMAT = "aekit-index-prior"
"""The `format` entry of the safetensors metadata, to recognise our files."""
KT_ALPHA = 0.5
"""Pseudo-count added to every code (Krichevsky–Trofimov)."""
MAX_CODES = 2**20
"""Largest codebook the table holds: a dense (positions, slots, codes) table beyond this is
too large, and the range coder's 24-bit probabilities need K well below 2^24."""


@dataclass
class IndexPrior:
    """Independent categoricals over the codes of each (position, slot).

    `counts` is (positions, slots, max codebook size) float64: how often each code occurred
    in the training indices (entries past a slot's codebook size are zero). `alpha` is the
    pseudo-count added to each code of the slot's codebook.
    """

    counts: torch.Tensor
    codebook_sizes: tuple[int, ...]
    alpha: float = KT_ALPHA

    discrete: ClassVar[bool] = True
    """Tells `Autoencoder.sample_latents` that draws are code indices, not latents."""

    def __post_init__(self) -> None:
        self.counts = torch.as_tensor(self.counts, dtype=torch.float64).cpu().contiguous()
        self.codebook_sizes = tuple(int(k) for k in self.codebook_sizes)
        self.alpha = float(self.alpha)
        self._check()

    def _check(self) -> None:
        c, sizes = self.counts, self.codebook_sizes
        if c.ndim != 3 or c.shape[0] < 1 or c.shape[1] < 1:
            raise AekitError(
                f"index prior counts must be (positions, slots, codes); got {tuple(c.shape)}"
            )
        if len(sizes) != c.shape[1] or any(k < 1 for k in sizes) or max(sizes) != c.shape[2]:
            raise AekitError(
                f"index prior: codebook sizes {sizes} do not fit counts of shape {tuple(c.shape)}"
            )
        if max(sizes) > MAX_CODES:
            raise AekitError(
                f"index prior: codebooks of more than {MAX_CODES} codes are not supported "
                f"(got {max(sizes)}); split the code into slots"
            )
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise AekitError(f"index prior: alpha must be positive (got {self.alpha})")
        if not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
            raise AekitError("index prior: counts must be finite and non-negative")
        for s, k in enumerate(sizes):
            if bool(c[:, s, k:].any()):
                raise AekitError(f"index prior: slot {s} has counts past its {k} codes")

    @property
    def positions(self) -> int:
        return self.counts.shape[0]

    @property
    def slots(self) -> int:
        return self.counts.shape[1]

    @property
    def fitted_on(self) -> int:
        """Number of examples counted (the same for every position and slot)."""
        return round(float(self.counts[0, 0].sum()))

    def _probability_table(self) -> torch.Tensor:
        """(positions, slots, max codes) float64, each row normalised over its slot's codes
        and zero past them."""
        sizes = torch.tensor(self.codebook_sizes)
        valid = torch.arange(self.counts.shape[2]) < sizes[:, None]  # (slots, max codes)
        smoothed = torch.where(valid, self.counts + self.alpha, torch.zeros(()).double())
        return smoothed / smoothed.sum(-1, keepdim=True)

    def fewest_bits(self, slots: int) -> float:
        """The shortest code of one example under the prior: -log2 of the likeliest index at
        each position, over the first `slots` slots."""
        likeliest = self._probability_table()[:, :slots].amax(-1)
        return float(-torch.log2(likeliest).sum())

    def probabilities(self, position: int, slot: int) -> np.ndarray:
        """p(k) for the codes k = 0..K-1 of one (position, slot), float64, summing to 1."""
        if not (0 <= position < self.positions and 0 <= slot < self.slots):
            raise AekitError(
                f"index prior has {self.positions} positions and {self.slots} slots; "
                f"got position {position}, slot {slot}"
            )
        k = self.codebook_sizes[slot]
        row = self.counts[position, slot, :k] + self.alpha
        return (row / row.sum()).numpy()

    def check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """`indices` as int64 (N, positions, slots') on the CPU with 1 <= slots' <= slots (a
        prefix of the slots, as residual VQ's coarser codes), or a clear error."""
        idx = torch.as_tensor(indices).detach().cpu()
        return validate_indices(
            idx, self.positions, self.codebook_sizes, prefix=True, owner="the index prior"
        )

    def log2_prob(self, indices: torch.Tensor) -> torch.Tensor:
        """log2 p(indices) of each example, (N,) float64: minus its ideal code length in bits.
        A prefix of the slots is scored by those slots alone."""
        idx = self.check_indices(indices)
        slots = idx.shape[2]
        log2p = self._probability_table()[:, :slots].log2()  # (positions, slots', max codes)
        n = idx.shape[0]
        picked = log2p.unsqueeze(0).expand(n, -1, -1, -1).gather(3, idx.unsqueeze(-1))
        return picked.reshape(n, -1).sum(1)

    def cross_entropy_bits(self, indices: torch.Tensor) -> float:
        """Mean ideal code length of `indices` under the prior, in bits per example."""
        return float(-self.log2_prob(indices).mean())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n independent draws (n, positions, slots) int64 on the CPU; a seeded CPU
        generator gives the same draws every time."""
        if n < 1:
            raise AekitError(f"number of samples must be at least 1 (got {n})")
        table = self._probability_table().reshape(self.positions * self.slots, -1)
        draws = torch.multinomial(table, n, replacement=True, generator=generator)
        return draws.reshape(self.positions, self.slots, n).permute(2, 0, 1).contiguous()

    @property
    def identity(self) -> str:
        """SHA-256 (hex) of everything that determines the probabilities: a compressed file
        records it, because decoding under any other prior would give wrong indices."""
        h = hashlib.sha256()
        h.update(FORMAT.encode())
        h.update(np.asarray(self.codebook_sizes, dtype="<i8").tobytes())
        h.update(np.asarray([self.alpha], dtype="<f8").tobytes())
        h.update(np.asarray(self.counts.shape, dtype="<i8").tobytes())
        h.update(self.counts.numpy().astype("<f8").tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the prior as safetensors (counts as a tensor, the rest as metadata),
        atomically; return the path."""
        return write_safetensors(
            path,
            {"counts": self.counts},
            FORMAT,
            codebook_sizes=",".join(map(str, self.codebook_sizes)),
            alpha=repr(self.alpha),
            fitted_on=str(self.fitted_on),
        )

    @classmethod
    def load(cls, path: str | Path) -> IndexPrior:
        """Read a prior written by `save`; a missing, corrupt or foreign file raises
        AekitError naming the path."""
        path = Path(path)
        tensors, metadata = read_aekit_safetensors(
            path,
            "index prior",
            FORMAT,
            tensors=("counts",),
            metadata=("codebook_sizes",),
            written_by="IndexPrior.save",
        )
        try:
            sizes = tuple(int(k) for k in metadata["codebook_sizes"].split(","))
            return cls(tensors["counts"], sizes, alpha=float(metadata.get("alpha", KT_ALPHA)))
        except (AekitError, ValueError) as e:
            raise AekitError(f"index prior {path} is invalid: {e}") from None

    @classmethod
    def fit(
        cls, indices: torch.Tensor, codebook_sizes: tuple[int, ...], alpha: float = KT_ALPHA
    ) -> IndexPrior:
        """Count the codes of training indices (N, positions, slots) per (position, slot)."""
        idx = torch.as_tensor(indices)
        sizes = tuple(int(k) for k in codebook_sizes)
        if idx.ndim != 3 or idx.shape[0] < 1 or idx.shape[2] != len(sizes) or not sizes:
            raise AekitError(
                f"index prior: indices must be (N >= 1, positions, {len(sizes)}); "
                f"got {tuple(idx.shape)}"
            )
        empty = cls(torch.zeros(idx.shape[1], len(sizes), max(sizes)), sizes, alpha)
        idx = empty.check_indices(idx)
        positions, slots, width = empty.counts.shape
        # One bincount over flat (position, slot, code) cells counts everything at once.
        cell = (torch.arange(positions)[:, None] * slots + torch.arange(slots)) * width
        flat = (idx + cell).reshape(-1)
        counts = torch.bincount(flat, minlength=positions * slots * width).double()
        return cls(counts.reshape(positions, slots, width), sizes, alpha)

    def fits(self, model: Autoencoder) -> bool:
        """Whether this prior was made for `model`'s quantizer (same positions and codebooks)."""
        q = model.quantizer
        return self.positions == q.positions and self.codebook_sizes == tuple(q.codebook_sizes)


def encode_all_indices(
    model: Autoencoder, data: TensorData, batch_size: int = 1000
) -> torch.Tensor:
    """The indices (N, positions, slots) of every example of `data`, on the CPU."""
    return encode_all(model, data, batch_size, indices=True)


def fit_index_prior(
    model: Autoencoder, data: TensorData, batch_size: int = 1000, alpha: float = KT_ALPHA
) -> IndexPrior:
    """Fit the prior to the indices of `data.x` (normally the training set) under `model`."""
    indices = encode_all_indices(model, data, batch_size)
    if len(indices) == 0:
        raise AekitError("index prior: no examples to fit on")
    return IndexPrior.fit(indices, model.quantizer.codebook_sizes, alpha)


def ideal_bits_per_pixel(
    model: Autoencoder, prior: IndexPrior, data: TensorData, batch_size: int = 1000
) -> float:
    """The cross-entropy of `data`'s indices under `prior`, in bits per pixel (bits per
    example / (H·W); channels are not counted, as for image codecs): the rate an ideal
    entropy coder would reach with this prior, which `aekit compress` approaches."""
    shape = model.input_shape
    if len(shape) != 3:
        raise AekitError(f"bits per pixel needs image data (C, H, W); the model takes {shape}")
    bits = prior.cross_entropy_bits(encode_all_indices(model, data, batch_size))
    return bits / (shape[1] * shape[2])
