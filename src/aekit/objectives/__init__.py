"""Training objectives: how one forward pass (reconstruction NLL, the bottleneck's densities
and draws) becomes the loss. Importing this package registers them all."""

from aekit.objectives import (  # noqa: F401 (registration)
    elbo,
    importance,
    matching,
    regularised,
    sparse,
)
from aekit.objectives.base import (
    OBJECTIVES,
    ForwardPass,
    Objective,
    ObjectiveOutput,
    auxiliary,
    ramp,
)

__all__ = ["OBJECTIVES", "ForwardPass", "Objective", "ObjectiveOutput", "auxiliary", "ramp"]
