"""Codebook health of a quantizer: how many of its codes the data uses, and how evenly.

A quantizer names each latent vector by one index per slot (VQ and FSQ: one slot; residual
VQ: one per stage; product VQ: one per group). Over an evaluation set, slot s with K_s codes
has counts c_k and the empirical code distribution p_k = c_k / sum(c):

- usage = |{k : c_k > 0}| / K_s, the fraction of codes used at least once;
- dead codes = K_s - |{k : c_k > 0}|;
- perplexity = exp(-sum_k p_k log p_k): K_s for a uniform use of all codes, 1 when every
  vector gets the same code (the entropy is in nats, so exp undoes it exactly).

Aggregates over slots: usage and perplexity are means, dead codes a sum. Collapse (few codes
doing all the work) wastes capacity and is the common failure of VQ training, so these go
into every epoch's validation metrics.

With N vectors counted, usage can be at most N / K_s: on a small evaluation set a large
implicit codebook (LFQ with 18 bits has 262,144 codes) is necessarily sparsely used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from aekit import distributed
from aekit.bottlenecks.base import BottleneckOutput
from aekit.data.tensor_data import TensorData
from aekit.errors import AekitError
from aekit.models.autoencoder import Autoencoder

MAX_COUNTED_CODES = 2**24
"""Largest codebook (per slot) whose codes are counted: one int64 counter per code, 128 MiB
at this size. Larger implicit codebooks (LFQ/BSQ with more than 24 bits) are refused."""
MAX_LISTED_CODES = 2**16
"""Largest total number of codes (over the slots) whose counts `evaluate` writes to
eval.json as `code_counts`; beyond it the file would grow by megabytes of mostly zeros."""


def check_countable(sizes: Sequence[int]) -> None:
    """A clear error when some slot's codebook is too large to count code by code."""
    for s, size in enumerate(sizes):
        if size > MAX_COUNTED_CODES:
            raise AekitError(
                f"slot {s} has {size:,} codes: codebook health counts each code and stops at "
                f"{MAX_COUNTED_CODES:,} (2^24) per slot"
            )


def countable(sizes: Sequence[int]) -> bool:
    """Whether every slot's codebook is small enough to count (see MAX_COUNTED_CODES)."""
    return all(size <= MAX_COUNTED_CODES for size in sizes)


class CodeCounter:
    """Per-slot code counts and the summed quantisation error over batches of indices.

    The counts live on `device` (the model's) and grow by `index_add_`, a bincount of fixed
    length, so no batch waits for the device: CUDA's `torch.bincount` reads the largest index
    back to the host to size its output. Indices are trusted to lie in their codebooks, as a
    quantizer's do."""

    def __init__(
        self,
        sizes: Sequence[int],
        latent_dim: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.sizes = tuple(int(size) for size in sizes)
        if not self.sizes or min(self.sizes) < 1:
            raise AekitError(f"codebook sizes must be positive, one per slot (got {self.sizes})")
        check_countable(self.sizes)
        self.latent_dim = latent_dim
        self.counts = [torch.zeros(size, dtype=torch.long, device=device) for size in self.sizes]
        self.error: torch.Tensor | None = None
        """Summed |h - z_q|^2 of the examples, once `update` is given errors."""
        self.examples = 0

    def add(self, b: BottleneckOutput) -> None:
        """Count the codes of a quantizer's forward pass and its quantisation errors
        |h - z_q|^2 per example (h: the encoder output it kept)."""
        error = (b.params["features"] - b.code).detach().pow(2).sum(1)
        self.update(b.params["indices"], error)

    def merge_ranks(self) -> None:
        """Within a distributed evaluation: every rank's counts, errors and examples summed."""
        if not distributed.splitting_evaluation():
            return
        self.counts = [distributed.evaluation_sum(c) for c in self.counts]
        totals = distributed.evaluation_sums(
            {"examples": self.examples, "errors": int(self.error is not None),
             "error": 0.0 if self.error is None else float(self.error)}
        )  # fmt: skip
        self.examples = int(totals["examples"])
        device = self.counts[0].device
        self.error = torch.tensor(totals["error"], device=device) if totals["errors"] else None

    def update(self, indices: torch.Tensor, quantization_error: torch.Tensor | None = None) -> None:
        """Count indices (B, positions, slots) (int, each within its slot's codebook) and add
        the examples' quantisation errors |h - z_q|^2, (B,), when given."""
        if indices.ndim != 3 or indices.shape[2] != len(self.sizes):
            raise AekitError(
                f"indices have shape {tuple(indices.shape)}; expected "
                f"(B, positions, {len(self.sizes)})"
            )
        for s, counts in enumerate(self.counts):
            column = indices[..., s].reshape(-1).to(counts.device, torch.long)
            counts.index_add_(0, column, torch.ones_like(column))
        if quantization_error is not None:
            total = quantization_error.detach().sum()
            self.error = total if self.error is None else self.error + total
        self.examples += indices.shape[0]

    def health(self, detailed: bool = False) -> dict[str, Any]:
        """`codebook_health` of what was counted."""
        return codebook_health(
            self.counts,
            error_sum=None if self.error is None else float(self.error),
            examples=self.examples,
            latent_dim=self.latent_dim,
            detailed=detailed,
        )


def perplexity(counts: torch.Tensor) -> float:
    """exp of the entropy (nats) of the distribution proportional to `counts`."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def codebook_health(
    counts: Sequence[torch.Tensor | Sequence[int]],
    *,
    error_sum: float | None = None,
    examples: int = 0,
    latent_dim: int | None = None,
    detailed: bool = False,
) -> dict[str, Any]:
    """Usage, perplexity and dead codes from per-slot code counts (one vector of length K_s
    per slot), aggregated over slots; with `error_sum` over `examples`, the mean quantisation
    error |h - z_q|^2 per example and (given `latent_dim`) per latent dimension. `detailed`
    adds the sizes and the per-slot lists."""
    counts = [torch.as_tensor(c).reshape(-1) for c in counts]
    if not counts:
        raise AekitError("no slots: codebook health needs the counts of at least one codebook")
    totals = [int(c.sum()) for c in counts]
    if min(totals) <= 0:
        raise AekitError("no codes counted: codebook health needs at least one example")
    used = [int((c > 0).sum()) for c in counts]
    sizes = [len(c) for c in counts]
    usage = [u / k for u, k in zip(used, sizes, strict=True)]
    perplexities = [perplexity(c) for c in counts]
    results: dict[str, Any] = {
        "codebook_usage": sum(usage) / len(usage),
        "codebook_perplexity": sum(perplexities) / len(perplexities),
        "dead_codes": sum(k - u for k, u in zip(sizes, used, strict=True)),
    }
    if error_sum is not None and examples > 0:
        results["quantization_error"] = error_sum / examples
        if latent_dim:
            results["quantization_error_per_dim"] = error_sum / (examples * latent_dim)
    if detailed:
        results["codebook_size"] = sizes
        results["codebook_usage_per_slot"] = usage
        results["codebook_perplexity_per_slot"] = perplexities
        results["dead_codes_per_slot"] = [k - u for k, u in zip(sizes, used, strict=True)]
    return results


@torch.no_grad()
def count_codes(model: Autoencoder, data: TensorData, batch_size: int = 1000) -> CodeCounter:
    """A CodeCounter filled with the codes of every example of `data` (a TensorData), from
    the model's forward pass in eval mode (which gives each example's quantisation error with
    its indices), in batches; the model's training mode is restored afterwards."""
    if batch_size < 1:
        raise AekitError(f"batch size must be at least 1 (got {batch_size})")
    quantizer = model.quantizer  # a clear error for continuous bottlenecks
    device = model.device
    counter = CodeCounter(quantizer.codebook_sizes, model.latent_dim, device)
    was_training = model.training
    model.eval()
    try:
        for batch in data.batches(batch_size):
            c = batch.y if model.conditional else None
            out = model(batch.x.to(device), step=None, corrupt=False, condition=c)
            counter.add(out.bottleneck)
    finally:
        model.train(was_training)
    return counter


def codebook_health_of(
    model: Autoencoder, data: TensorData, batch_size: int = 1000
) -> dict[str, Any]:
    """The detailed codebook health of a quantizer model on `data` (a TensorData), with
    `code_counts` (one list of counts per slot) for figures."""
    counter = count_codes(model, data, batch_size)
    results = counter.health(detailed=True)
    results["code_counts"] = [c.tolist() for c in counter.counts]
    return results
