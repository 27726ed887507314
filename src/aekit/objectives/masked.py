"""The masked autoencoder's loss (He et al. 2022, *Masked autoencoders are scalable vision
learners*): the mean squared error of the predicted pixels on the hidden patches only,

    loss = sum_i sum_{n hidden in i} ||x̂_in - t_in||^2 / (P * number of hidden patches),

P = C p^2 values per patch, against targets t = the patches of x, or with `norm_pix` each
patch normalised by its own mean and standard deviation (MAE's `norm_pix_loss`, which its
Table 1c finds better for fine-tuning and linear probing).

Two references, computed on the same hidden patches, say what a value is worth:
`loss_predict_zero` (predict 0 everywhere; with normalised targets, also predicting each
patch's mean) and `loss_patch_mean` (predict each hidden patch's own mean: an oracle for the
flat part of the image, so beating it means the model predicts structure within patches).
`masked_mse` is the error on the hidden patches in the data's units, un-normalising a
normalised prediction with each true patch's statistics, as the report shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aekit.bottlenecks.base import Bottleneck
from aekit.errors import AekitError
from aekit.objectives.base import OBJECTIVES, ForwardPass, Objective, ObjectiveOutput
from aekit.patches import Tokens, patch_statistics, patchify, unpatchify


@dataclass
class MaskedPatchesOptions:
    norm_pix: bool = False
    """Targets are the patches normalised to mean 0 and variance 1 each (He et al. 2022,
    Table 1c: +0.5 % fine-tuning, +5.3 % linear probing on ImageNet for ViT-L)."""


@OBJECTIVES.register("masked-patches")
class MaskedPatches(Objective):
    """Squared error on the patches hidden from the encoder (a masked autoencoder)."""

    Options = MaskedPatchesOptions

    def attach(self, bottleneck: Bottleneck, decoder: nn.Module, likelihood: Any = None) -> None:
        super().attach(bottleneck, decoder, likelihood)
        if not getattr(decoder, "reads_tokens", False):
            raise AekitError(
                "the masked-patches objective needs a decoder of patch tokens: --body vit "
                "with --token-decoder (the mae recipe)"
            )
        self.patch, self.grid = decoder.patch, decoder.grid

    def as_data(self, prediction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A normalised prediction scaled back by the true patches' statistics (what MAE's
        own visualisation does); the prediction itself otherwise."""
        if not self.options.norm_pix:
            return prediction
        mean, std = patch_statistics(patchify(x, self.patch))
        return unpatchify(patchify(prediction, self.patch) * std + mean, self.grid, self.patch)

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        tokens = f.bottleneck.z
        if not isinstance(tokens, Tokens):
            raise AekitError(
                "the masked-patches objective needs the encoder's patch tokens: train with "
                "the patches corruption (--corruption patches)"
            )
        hidden = tokens.hidden()
        count = hidden.sum().clamp(min=1)
        patches = patchify(f.x, self.patch)
        predicted = patchify(f.params, self.patch)
        target, pixels = patches, predicted  # the targets, and the prediction in pixels
        if self.options.norm_pix:
            mean, std = patch_statistics(patches)
            target, pixels = (patches - mean) / std, predicted.detach() * std + mean

        def on_hidden(per_patch: torch.Tensor) -> torch.Tensor:
            return (per_patch * hidden).sum() / count

        loss = on_hidden((predicted - target).pow(2).mean(-1))
        with torch.no_grad():
            terms = {
                "loss": loss.detach(),
                "masked_mse": on_hidden((pixels - patches).pow(2).mean(-1)),
                "loss_predict_zero": on_hidden(target.pow(2).mean(-1)),
                "loss_patch_mean": on_hidden(target.var(-1, unbiased=False)),
                "mask_ratio": hidden.mean(),
            }
        return ObjectiveOutput(loss, terms)
