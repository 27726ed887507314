"""What follows training, shared by `aekit train`, `aekit eval` and `aekit bench`: a sampling
density for models without a prior, the test metrics, and for models of a network's
activations the held-out metrics and the effect of splicing them back into the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aekit.bottlenecks.quantizer import Quantizer
from aekit.data import Splits, TensorData
from aekit.data.activations.source import OpenedSource
from aekit.eval import evaluate
from aekit.models.autoencoder import Autoencoder
from aekit.models.group import ModelGroup


def fit_sampling_density(
    model: Autoencoder, splits: Splits, device: torch.device, run: Path | None
) -> None:
    """Give a model without a prior something to sample (and compress) with, fitted on its
    training codes and saved in `run`: a quantizer gets a categorical per position (which
    `aekit compress` also entropy-codes with), a deterministic code a density (as RAE)."""
    if model.has_prior or model.bottleneck.is_sparse or model.decodes_tokens:
        # A mixture over sparse codes would be meaningless (and huge); a decoder of patch
        # tokens decodes no pooled code drawn from a density.
        return
    if model.bottleneck.has_rate:
        return  # it compresses under its own learned density
    train = splits.train
    if train.binarize:
        train = TensorData.binarized_once(train, seed=splits.spec.split_seed + 4)
    if isinstance(model.bottleneck, Quantizer):
        from aekit.compress.index_prior import INDEX_PRIOR, fit_index_prior

        model.latent_density = fit_index_prior(model, train.to(device))
        if run is not None:
            model.latent_density.save(run / INDEX_PRIOR)
    else:
        from aekit.latent_density import LATENT_DENSITY, fit_for_model

        model.latent_density = fit_for_model(model, train.to(device))
        if run is not None:
            model.latent_density.save(run / LATENT_DENSITY)


def evaluate_trained(
    model: Autoencoder,
    data: TensorData,
    *,
    batch_size: int = 1000,
    nll_k: int = 0,
    nll_examples: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """`evaluate(detailed=True)` plus, for a quantizer with a fitted index prior on images,
    the ideal rate of the data's indices under that prior in bits per pixel (what
    `aekit compress` approaches)."""
    from aekit.compress.index_prior import IndexPrior, ideal_bits_per_pixel

    metrics = evaluate(
        model,
        data,
        batch_size=batch_size,
        seed=seed,
        detailed=True,
        nll_k=nll_k,
        nll_examples=nll_examples,
    )
    if isinstance(model.latent_density, IndexPrior) and len(model.input_shape) == 3:
        metrics["index_prior_bits_per_pixel"] = ideal_bits_per_pixel(
            model, model.latent_density, data
        )
    return metrics


def evaluate_on_activations(
    model: Autoencoder | ModelGroup,
    opened: OpenedSource,
    data: Any = None,
    *,
    source_model: Any = None,
    batch_size: int = 4096,
    seed: int = 0,
) -> dict[str, Any]:
    """`evaluate(detailed=True)` of a model (or each member of a group) on activation rows
    (default: the source's held-out rows), and with `source_model` (the network, or the note
    of why it is missing) the downstream effect of splicing it in, under "splice"
    ("NAME/splice" for a group's members)."""
    from aekit.eval.splice import splice_metrics

    rows = opened.val if data is None else data
    metrics = evaluate(model, rows, batch_size=batch_size, seed=seed, detailed=True)
    if source_model is None:
        return metrics
    if isinstance(model, ModelGroup):
        for m in model.members:
            site = m.sites if m.target_site else m.site  # a transcoder's pair
            metrics[f"{m.name}/splice"] = splice_metrics(
                model[m.name], opened, source_model, site=site, seed=seed
            )
    else:
        metrics["splice"] = splice_metrics(model, opened, source_model, seed=seed)
    return metrics
