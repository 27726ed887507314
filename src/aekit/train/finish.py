"""What follows training, shared by `aekit train` and `aekit bench`: a sampling density for
models without a prior, and the test metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aekit.bottlenecks.quantizer import Quantizer
from aekit.data import Splits, TensorData
from aekit.eval import evaluate
from aekit.models.autoencoder import Autoencoder


def fit_sampling_density(
    model: Autoencoder, splits: Splits, device: torch.device, run: Path | None
) -> None:
    """Give a model without a prior something to sample (and compress) with, fitted on its
    training codes and saved in `run`: a quantizer gets a categorical per position (which
    `aekit compress` also entropy-codes with), a deterministic code a density (as RAE)."""
    if model.has_prior:
        return
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
    seed: int = 0,
) -> dict[str, Any]:
    """`evaluate(detailed=True)` plus, for a quantizer with a fitted index prior on images,
    the ideal rate of the data's indices under that prior in bits per pixel (what
    `aekit compress` approaches)."""
    from aekit.compress.index_prior import IndexPrior, ideal_bits_per_pixel

    metrics = evaluate(model, data, batch_size=batch_size, seed=seed, detailed=True, nll_k=nll_k)
    if isinstance(model.latent_density, IndexPrior) and len(model.input_shape) == 3:
        metrics["index_prior_bits_per_pixel"] = ideal_bits_per_pixel(
            model, model.latent_density, data
        )
    return metrics
