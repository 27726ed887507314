"""Test metrics of a trained model, read through its public methods only.

All likelihood figures are nats per example. The ELBO here is the single-sample Monte-Carlo
estimate of E_q[log p(x|z)] - KL (the KL is analytic); it is a lower bound on log p(x), not
an estimate of it. Sparse codes (SAEs, k-sparse autoencoders) add their reconstruction and
sparsity figures (`eval/sparse.py`); a group of models is evaluated member by member, each on
its own site.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from aekit import distributed
from aekit.bottlenecks.quantizer import Quantizer
from aekit.data.activations.source import SiteView
from aekit.data.protocol import DataSource
from aekit.data.tensor_data import TensorData
from aekit.errors import AekitError
from aekit.eval.codebook import MAX_COUNTED_CODES, MAX_LISTED_CODES, CodeCounter, countable
from aekit.eval.likelihood import importance_sampled_nll
from aekit.models.autoencoder import Autoencoder
from aekit.models.group import ModelGroup

ACTIVE_UNIT_THRESHOLD = 0.01
"""A latent is active when Cov_x(E_q[z_j|x]) exceeds this (Burda et al. 2016)."""


@torch.no_grad()
def evaluate(
    model: Autoencoder | ModelGroup,
    data: DataSource,
    *,
    batch_size: int = 1000,
    seed: int = 0,
    detailed: bool = False,
    nll_k: int = 0,
    nll_examples: int = 0,
) -> dict[str, Any]:
    """Mean of the objective's terms over `data` (schedules at their end), reconstruction
    MSE, and with `detailed`: bits/dim, KL per latent dimension, active units, and the
    denoising error for corrupting models.

    Quantizer models add their codebook health (`aekit.eval.codebook`) from the same forward
    passes: usage, perplexity, dead codes and quantisation error always (so every epoch's
    validation record tracks collapse), and with `detailed` the per-slot lists and the code
    counts. Sparse models give the terms and `sae_metrics` (FVU, L0, dead and dense latents;
    with `detailed` the per-latent densities too); a group gives each member's as NAME/...
    and the summed loss."""
    if isinstance(model, ModelGroup):
        return evaluate_group(model, data, batch_size=batch_size, seed=seed, detailed=detailed)
    if model.bottleneck.is_sparse:
        return evaluate_sparse(model, data, batch_size=batch_size, detailed=detailed)
    device = model.device
    sums: dict[str, torch.Tensor] = {}
    sq_err = torch.zeros((), device=device)
    denoise_err = torch.zeros((), device=device)
    kl_dims: torch.Tensor | float = 0.0  # per KL unit: a dimension, or a categorical variable
    codes = []
    analytic_kl = False
    # A masked autoencoder's loss is already its error on what the corruption hides.
    corrupting = model.config.corruption.kind != "none" and not model.decodes_tokens
    counter = _code_counter(model)
    devices = [device.index or 0] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    if detailed and distributed.splitting_evaluation():
        raise AekitError("a detailed evaluation runs on one rank")
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for batch, counted in distributed.evaluation_batches(data.batches(batch_size)):
                x = model.batch_to_model(batch.x)
                c = batch.y if model.conditional else None
                out = model(x, step=None, corrupt=False, condition=c)
                if not counted:  # another rank's (see evaluation_batches)
                    continue
                n = x.shape[0]
                for name, value in out.terms.items():
                    sums[name] = sums.get(name, 0.0) + value.to(device) * n
                # A masked autoencoder is trained on hidden patches only: its error is the
                # objective's masked_mse, not that of predicting patches it was shown.
                if not model.decodes_tokens:
                    sq_err += (model.decode(out.code, c) - x).pow(2).sum()
                if counter is not None:
                    counter.add(out.bottleneck)
                if detailed:
                    analytic_kl = out.bottleneck.kl is not None
                    if analytic_kl:
                        kl_dims += out.bottleneck.kl.sum(0)
                    # A masked batch's code pools its visible patches; the code is every patch's.
                    codes.append(model.encode(x) if model.decodes_tokens else out.code)
                    if corrupting:
                        denoised = model.reconstruct(model.corruption(x), c)
                        denoise_err += (denoised - x).pow(2).sum()
    finally:
        model.train(was_training)
    sums = distributed.evaluation_sums(sums)
    sq_err = distributed.evaluation_sum(sq_err)
    if counter is not None:
        counter.merge_ranks()
    n = len(data)
    dims = math.prod(model.input_shape)
    results: dict[str, Any] = {name: float(total) / n for name, total in sums.items()}
    if not model.decodes_tokens:
        results["mse"] = float(sq_err) / (n * dims)
    if counter is not None:
        results.update(counter.health(detailed=detailed))
        if detailed and sum(counter.sizes) <= MAX_LISTED_CODES:
            results["code_counts"] = [c.tolist() for c in counter.counts]
    if not detailed:
        return results
    results["n"] = n
    if isinstance(model.bottleneck, Quantizer) and counter is None:
        largest = max(model.bottleneck.codebook_sizes)
        results["codebook_note"] = (
            f"codebook health not computed: {largest:,} codes are more than the "
            f"{MAX_COUNTED_CODES:,} that can be counted code by code"
        )
    if "elbo" in results:
        draws = model.objective.samples
        results["estimator"] = (
            f"ELBO, {draws} posterior draw{'s' if draws > 1 else ''} per example, "
            f"{'analytic' if analytic_kl else 'Monte-Carlo'} KL"
        )
        if model.config.likelihood.kind == "bernoulli":
            results["bits_per_dim"] = -results["elbo"] / (dims * math.log(2))
    if "bound" in results:
        kind = model.config.objective.kind
        results["bound_estimator"] = f"{kind} bound of the training objective"
    if corrupting:
        results["denoise_mse"] = float(denoise_err) / (n * dims)
    z = torch.cat(codes)
    if analytic_kl:
        results["kl_per_dim"] = (kl_dims / n).tolist()
    variance = z.var(0, unbiased=True) if n > 1 else torch.zeros(model.latent_dim)
    results["code_variance"] = variance.tolist()
    results["active_units"] = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
    if nll_k > 0 and model.bottleneck.has_density:
        # The estimator on the first nll_examples (0: all) examples: its cost is k passes each.
        subset = data.subset(slice(0, nll_examples)) if 0 < nll_examples < len(data) else data
        results.update(importance_sampled_nll(model, subset, k=nll_k, seed=seed))
    return results


def mean_terms(model: Autoencoder, data: DataSource, batch_size: int) -> dict[str, float]:
    """The objective's terms at the end of its schedules, averaged over the rows of `data`
    (a paired model against each batch's target)."""
    sums: dict[str, float] = {}
    n = 0
    device = model.device
    for batch, counted in distributed.evaluation_batches(data.batches(batch_size)):
        x = model.batch_to_model(batch.x)
        target = batch.y.to(device) if model.paired else None
        condition = batch.y if model.conditional else None
        out = model(x, step=None, corrupt=False, condition=condition, target=target)
        if not counted:
            continue
        rows = x.shape[0]
        for name, value in out.terms.items():
            sums[name] = sums.get(name, 0.0) + float(value) * rows
        n += rows
    sums = distributed.evaluation_sums({**sums, "": n})
    n = int(sums.pop(""))
    return {name: total / max(n, 1) for name, total in sums.items()}


@torch.no_grad()
def evaluate_sparse(
    model: Autoencoder, data: DataSource, *, batch_size: int = 4096, detailed: bool = False
) -> dict[str, Any]:
    """A sparse model's terms and its reconstruction and sparsity figures (`sae_metrics`,
    scalars only unless `detailed`) over the rows of `data`."""
    from aekit.eval.sparse import sae_metrics

    was_training = model.training
    model.eval()
    try:
        record: dict[str, Any] = mean_terms(model, data, batch_size)
        metrics = sae_metrics(model, data, batch_size=batch_size)
    finally:
        model.train(was_training)
    if not detailed:  # per-latent densities and the histogram only in eval.json
        metrics = {k: v for k, v in metrics.items() if not isinstance(v, list | dict)}
    record.update(metrics)
    return record


@torch.no_grad()
def evaluate_group(
    group: ModelGroup,
    data: DataSource,
    *,
    batch_size: int = 4096,
    seed: int = 0,
    detailed: bool = False,
) -> dict[str, Any]:
    """Each member's `evaluate` on its own site, as NAME/METRIC; `loss` is their sum."""
    record: dict[str, Any] = {}
    for m in group.members:
        metrics = evaluate(
            group[m.name],
            SiteView(data, m.site, m.target_site),
            batch_size=batch_size,
            seed=seed,
            detailed=detailed,
        )
        record.update({f"{m.name}/{k}": v for k, v in metrics.items()})
    record["loss"] = sum(record[f"{m.name}/loss"] for m in group.members)
    return record


def _code_counter(model: Autoencoder) -> CodeCounter | None:
    """A counter for a quantizer's codes, or None (a continuous bottleneck, or a codebook
    too large to count)."""
    if not isinstance(model.bottleneck, Quantizer):
        return None
    sizes = model.bottleneck.codebook_sizes
    if not countable(sizes):
        return None
    return CodeCounter(sizes, model.latent_dim, model.device)


@torch.no_grad()
def encode_all(
    model: Autoencoder, data: TensorData, batch_size: int = 1000, *, indices: bool = False
) -> torch.Tensor:
    """The codes of every example of `data` (N, latent_dim) on the CPU, or with `indices` a
    quantizer's code indices (N, positions, slots), encoded in eval mode in batches
    (conditional models with each example's label); the model's training mode is restored
    afterwards."""
    if batch_size < 1:
        raise AekitError(f"batch size must be at least 1 (got {batch_size})")
    if indices:
        q = model.quantizer  # a clear error for continuous models
        encode, empty = model.encode_indices, torch.empty(0, q.positions, q.slots).long()
    else:
        encode, empty = model.encode, torch.empty(0, model.latent_dim)
    was_training = model.training
    model.eval()
    try:
        device = model.device
        chunks = [
            encode(batch.x.to(device), batch.y if model.conditional else None).cpu()
            for batch in data.batches(batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else empty
