"""The model config: input shape, latent size, networks, and one kind + options per slot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aekit.bottlenecks import BOTTLENECKS
from aekit.components import Registry, make_options, options_class, options_to_dict
from aekit.corruption import CORRUPTIONS
from aekit.errors import AekitError
from aekit.likelihoods import LIKELIHOODS
from aekit.nets import NetConfig
from aekit.objectives import OBJECTIVES

SLOTS: dict[str, Registry] = {
    "bottleneck": BOTTLENECKS,
    "likelihood": LIKELIHOODS,
    "corruption": CORRUPTIONS,
    "objective": OBJECTIVES,
}


@dataclass
class Component:
    """A registered kind and its options dataclass."""

    kind: str
    options: Any

    @classmethod
    def create(cls, slot: str, kind: str, values: dict[str, Any] | None = None) -> Component:
        component_cls = SLOTS[slot][kind]
        options = make_options(options_class(component_cls), values or {}, f"{slot} {kind!r}")
        return cls(kind, options)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **options_to_dict(self.options)}


@dataclass
class ModelConfig:
    recipe: str
    input_shape: tuple[int, ...]
    latent_dim: int = 16
    condition_classes: int = 0
    """Conditional models: labels 0..classes-1, fed one-hot to encoder and decoder (CVAE)."""
    condition_dim: int = 0
    """Conditional models on real vectors of this width (0 with condition_classes)."""
    net: NetConfig = field(default_factory=NetConfig)
    bottleneck: Component = field(
        default_factory=lambda: Component.create("bottleneck", "identity")
    )
    likelihood: Component = field(
        default_factory=lambda: Component.create("likelihood", "bernoulli")
    )
    corruption: Component = field(default_factory=lambda: Component.create("corruption", "none"))
    objective: Component = field(
        default_factory=lambda: Component.create("objective", "reconstruction")
    )

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise AekitError(f"input_shape must be positive sizes (got {self.input_shape})")
        if int(self.latent_dim) < 1:
            raise AekitError(f"latent_dim must be at least 1 (got {self.latent_dim})")
        self.latent_dim = int(self.latent_dim)
        if self.condition_classes < 0 or self.condition_dim < 0:
            raise AekitError("condition_classes and condition_dim must be non-negative")
        if self.condition_classes and self.condition_dim:
            raise AekitError("condition on labels (condition_classes) or vectors, not both")

    @property
    def condition_width(self) -> int:
        """Width of the conditioning vector the networks take (0: unconditional)."""
        return self.condition_classes or self.condition_dim

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "recipe": self.recipe,
            "input_shape": list(self.input_shape),
            "latent_dim": self.latent_dim,
            "condition_classes": self.condition_classes,
            "condition_dim": self.condition_dim,
            "net": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.net).items()},
        }
        for slot in SLOTS:
            d[slot] = getattr(self, slot).to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        try:
            net_values = d.pop("net", {})
            slots = {}
            for slot in SLOTS:
                values = dict(d.pop(slot))
                slots[slot] = Component.create(slot, values.pop("kind"), values)
            known = {f.name for f in fields(cls)}
            unknown = set(d) - known
            if unknown:
                raise AekitError(f"model config has unknown fields: {', '.join(sorted(unknown))}")
            return cls(**d, net=make_options(NetConfig, net_values, "net"), **slots)
        except (KeyError, TypeError) as e:
            raise AekitError(f"model config is incomplete or malformed ({e})") from None
