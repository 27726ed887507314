"""The rate-distortion objective of learned compression (Ballé, Laparra & Simoncelli 2017;
Ballé et al. 2018): loss = lambda * D + R, minimised over the transforms and the entropy
model together.

R is the bottleneck's code length in bits per pixel (H * W; channels are not counted, as for
image codecs), D the mean squared error of the likelihood's mean on the 0-255 scale, per
pixel and channel, which is how the papers and CompressAI state lambda (their lambda =
0.0018 .. 0.0932 for 8-bit photographs), or `--distortion nll`: -log2 p(x|z) in bits per
pixel under the likelihood, a rate-rate trade-off (lossless coding of x given z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aekit.errors import AekitError
from aekit.objectives.base import OBJECTIVES, ForwardPass, Objective, ObjectiveOutput, auxiliary

DISTORTIONS = ("mse", "nll")


@dataclass
class RateDistortionOptions:
    rate_lambda: float = 0.01
    """lambda in lambda * D + R (D: MSE on the 0-255 scale, R: bits per pixel)."""
    distortion: str = "mse"
    """mse (on the 0-255 scale) or nll (-log2 p(x|z), bits per pixel)."""

    def __post_init__(self) -> None:
        if not self.rate_lambda > 0 or not math.isfinite(self.rate_lambda):
            raise AekitError(f"rate_lambda must be positive (got {self.rate_lambda})")
        if self.distortion not in DISTORTIONS:
            raise AekitError(
                f"unknown distortion {self.distortion!r}; choose from {', '.join(DISTORTIONS)}"
            )


@OBJECTIVES.register("rd")
class RateDistortion(Objective):
    Options = RateDistortionOptions

    def attach(self, bottleneck, decoder, likelihood=None) -> None:
        super().attach(bottleneck, decoder, likelihood)
        if not bottleneck.has_rate:
            raise AekitError(
                f"objective 'rd' needs an entropy-coded bottleneck that reports its rate "
                f"(factorized, hyperprior); {bottleneck.kind!r} has none"
            )
        self.likelihood = likelihood

    @property
    def pixels(self) -> int:
        shape = self.dims.input_shape
        return shape[-1] * shape[-2] if len(shape) == 3 else math.prod(shape)

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        b = f.bottleneck
        bpp = b.bits / self.pixels
        x_hat = self.likelihood.mean(f.params.reshape(-1, *f.x.shape)).mean(0)
        mse = (x_hat - f.x).pow(2).flatten(1).mean(1)
        mse_255 = 255.0**2 * mse
        if self.options.distortion == "mse":
            distortion = mse_255
        else:
            distortion = f.nll / (math.log(2) * self.pixels)
        loss = (self.options.rate_lambda * distortion + bpp).mean() + auxiliary(b)
        psnr = 10 * torch.log10(1 / mse.clamp_min(1e-10))
        return ObjectiveOutput(
            loss, self.report(f, loss, bpp=bpp.mean(), mse_255=mse_255.mean(), psnr=psnr.mean())
        )
