"""Interchangeable bottlenecks; importing this package registers them all."""

from aekit.bottlenecks import gaussian, hierarchical, identity  # noqa: F401  (registration)
from aekit.bottlenecks.base import BOTTLENECKS, Bottleneck, BottleneckOutput
from aekit.bottlenecks.gaussian import gaussian_kl

__all__ = ["BOTTLENECKS", "Bottleneck", "BottleneckOutput", "gaussian_kl"]
