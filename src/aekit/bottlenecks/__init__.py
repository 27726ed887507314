"""Interchangeable bottlenecks; importing this package registers them all (every module in
it: a new bottleneck is one file with its `@BOTTLENECKS.register` line)."""

import importlib
import pkgutil

from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.bottlenecks.gaussian import gaussian_kl
from aekit.bottlenecks.quantizer import Quantized, Quantizer
from aekit.bottlenecks.sparse import KSparse, SparseBottleneck

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

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
