"""Training objectives: how one forward pass (reconstruction NLL, the bottleneck's densities
and draws) becomes the loss. Importing this package registers them all (every module in it:
a new objective is one file with its `@OBJECTIVES.register` line)."""

import importlib
import pkgutil

from aekit.objectives.base import (
    OBJECTIVES,
    ForwardPass,
    Objective,
    ObjectiveOutput,
    TrainsAuxiliary,
    auxiliary,
    ramp,
)

__all__ = [
    "OBJECTIVES", "ForwardPass", "Objective", "ObjectiveOutput", "TrainsAuxiliary", "auxiliary",
    "ramp",
]  # fmt: skip

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
