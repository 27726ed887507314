"""The deterministic bottleneck: the encoder output is the code. With a `prior`, the code is
matched to it by WAE/SWAE objectives, and samples are decoded prior draws. Per-patch codes
(`Tokens`, a masked autoencoder's) pass to the decoder as they are; their code is the mean."""

from __future__ import annotations

import torch

from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput, PriorOptions
from aekit.components import Dims
from aekit.errors import AekitError
from aekit.patches import Tokens


@BOTTLENECKS.register("identity")
class Identity(Bottleneck):
    Options = PriorOptions

    def __init__(self, options: PriorOptions, dims: Dims) -> None:
        if options.prior == "vamp":
            raise AekitError("the vamp prior needs the gaussian bottleneck (it mixes posteriors)")
        super().__init__(options, dims)

    def forward(
        self, h: torch.Tensor | Tokens, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        if isinstance(h, Tokens):  # one draw, no prior: the model refuses the others
            return BottleneckOutput(z=h, code=h.pooled(), samples=1)
        z = h if samples == 1 else h.repeat(samples, 1)
        return BottleneckOutput(z=z, code=h, samples=samples, prior=self.prior)
