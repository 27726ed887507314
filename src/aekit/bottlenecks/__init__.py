"""Interchangeable bottlenecks; importing this package registers them all."""

from aekit.bottlenecks import (  # noqa: F401  (registration)
    binary,
    fsq,
    gaussian,
    hierarchical,
    identity,
    residual,
    vq,
)
from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.bottlenecks.gaussian import gaussian_kl
from aekit.bottlenecks.quantizer import Quantized, Quantizer

__all__ = [
    "BOTTLENECKS",
    "Bottleneck",
    "BottleneckOutput",
    "Quantized",
    "Quantizer",
    "gaussian_kl",
]
