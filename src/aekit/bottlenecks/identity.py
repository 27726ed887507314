"""The plain autoencoder's bottleneck: the encoder output is the code."""

from __future__ import annotations

import torch

from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput


@BOTTLENECKS.register("identity")
class Identity(Bottleneck):
    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        return BottleneckOutput(z=h, code=h)
