"""The signal-to-noise ratio of gradient estimates, per parameter group and number of
importance samples: the diagnostic of Rainforth et al. (2018), who show that the encoder's
SNR falls like 1/sqrt(k) under the IWAE bound while the decoder's grows like sqrt(k).

SNR_i = |E[g_i]| / std(g_i) over `repeats` gradient draws on the same batch (only the
latent draws differ), summarised by its mean and median over the parameters of the group.
Running sums keep memory at two copies of the parameters, whatever the number of repeats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from aekit.errors import AekitError
from aekit.eval.likelihood import check_has_density
from aekit.models.autoencoder import Autoencoder
from aekit.objectives.base import Objective
from aekit.objectives.importance import IWAE, IWAEOptions


def objective_with_k(objective: Objective, k: int) -> Objective:
    """The model's own objective with k importance samples (an IWAE if it has no k)."""
    if hasattr(objective.options, "k"):
        return type(objective)(dataclasses.replace(objective.options, k=k), objective.dims)
    return IWAE(IWAEOptions(k=k), objective.dims)


def gradient_snr(
    model: Autoencoder,
    x: torch.Tensor,
    ks: Sequence[int] = (1, 5, 50),
    *,
    repeats: int = 100,
    condition: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """{"k": [...], "encoder_snr": [...], "decoder_snr": [...], ...} for each k."""
    check_has_density(model)
    if repeats < 2:
        raise AekitError(f"gradient SNR needs at least 2 repeats (got {repeats})")
    original, was_training = model.objective, model.training
    generative, inference = model.parameter_groups()
    rows: dict[str, list[Any]] = {
        "k": [], "encoder_snr": [], "encoder_snr_median": [],
        "decoder_snr": [], "decoder_snr_median": [],
    }  # fmt: skip
    model.eval()  # no dropout/corruption: only the latent draws vary between repeats
    try:
        torch.manual_seed(seed)
        for k in ks:
            model.objective = objective_with_k(original, k)
            stats = {"encoder": [0.0, 0.0], "decoder": [0.0, 0.0]}
            for _ in range(repeats):
                model.zero_grad(set_to_none=True)
                model.backward(model(x, step=None, corrupt=False, condition=condition))
                for name, params in (("decoder", generative), ("encoder", inference)):
                    g = torch.cat([_grad(p) for p in params]).double()
                    stats[name][0] = stats[name][0] + g
                    stats[name][1] = stats[name][1] + g * g
            rows["k"].append(k)
            for name, (s, s2) in stats.items():
                mean = s / repeats
                std = ((s2 / repeats - mean**2).clamp_min(0) * repeats / (repeats - 1)).sqrt()
                moving = std > 0  # parameters the objective does not touch have no SNR
                snr = mean[moving].abs() / std[moving]
                rows[f"{name}_snr"].append(float(snr.mean()) if snr.numel() else float("nan"))
                rows[f"{name}_snr_median"].append(
                    float(snr.median()) if snr.numel() else float("nan")
                )
    finally:
        model.objective = original
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {**rows, "repeats": repeats, "objective": original.kind, "batch": int(x.shape[0])}


def _grad(p: torch.nn.Parameter) -> torch.Tensor:
    return p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), device=p.device)
