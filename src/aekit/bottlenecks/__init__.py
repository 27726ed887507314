"""Interchangeable bottlenecks; importing this package registers them all."""

from aekit.bottlenecks import (  # noqa: F401  (registration)
    binary,
    categorical,
    fsq,
    gaussian,
    hierarchical,
    identity,
    joint,
    residual,
    sparse,
    vq,
)
from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.bottlenecks.gaussian import gaussian_kl
from aekit.bottlenecks.quantizer import Quantized, Quantizer
from aekit.bottlenecks.sparse import KSparse, SparseBottleneck

__all__ = [
    "BOTTLENECKS",
    "Bottleneck",
    "BottleneckOutput",
    "KSparse",
    "Quantized",
    "Quantizer",
    "SparseBottleneck",
    "gaussian_kl",
]
