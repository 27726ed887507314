"""The model config: input (and target) shape, latent size, and one kind + options per slot:
the body (encoder/decoder networks), bottleneck, likelihood, corruption and objective."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from typing import Any

from aekit.bottlenecks import BOTTLENECKS
from aekit.components import (
    Dims,
    Registry,
    fits,
    make_options,
    options_class,
    options_to_dict,
    type_name,
)
from aekit.corruption import CORRUPTIONS
from aekit.data.tensor_data import MAX_LABEL_CLASSES
from aekit.errors import AekitError
from aekit.likelihoods import LIKELIHOODS
from aekit.nets import NETS, latent_grid
from aekit.objectives import OBJECTIVES

SLOTS: dict[str, Registry] = {
    "body": NETS,
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

    @classmethod
    def saved(cls, slot: str, kind: str, values: dict[str, Any]) -> Component:
        """The component a saved config describes: a field the config lacks takes the value it
        had when the config was written (the options' `SAVED_WITHOUT`), not today's default."""
        written = getattr(options_class(SLOTS[slot][kind]), "SAVED_WITHOUT", {})
        return cls.create(slot, kind, {**written, **values})

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
    output_shape: tuple[int, ...] | None = None
    """The shape of a paired target the model predicts instead of reconstructing its input
    (a transcoder: one site in, another out); None: an autoencoder."""
    body: Component = field(default_factory=lambda: Component.create("body", "auto"))
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
        if self.output_shape is not None:
            self.output_shape = tuple(int(s) for s in self.output_shape)
            if not self.output_shape or any(s < 1 for s in self.output_shape):
                raise AekitError(f"output_shape must be positive sizes (got {self.output_shape})")
        if int(self.latent_dim) < 1:
            raise AekitError(f"latent_dim must be at least 1 (got {self.latent_dim})")
        self.latent_dim = int(self.latent_dim)
        if self.condition_classes < 0 or self.condition_dim < 0:
            raise AekitError("condition_classes and condition_dim must be non-negative")
        if self.condition_classes > MAX_LABEL_CLASSES:
            raise AekitError(
                f"condition_classes is {self.condition_classes:,}; at most {MAX_LABEL_CLASSES:,}"
            )
        if self.condition_classes and self.condition_dim:
            raise AekitError("condition on labels (condition_classes) or vectors, not both")

    @property
    def condition_width(self) -> int:
        """Width of the conditioning vector the networks take (0: unconditional)."""
        return self.condition_classes or self.condition_dim

    @property
    def dims(self) -> Dims:
        grid = None
        if len(self.input_shape) == 3 and self.body.kind != "custom":
            grid = latent_grid(self.body.kind, self.body.options, self.input_shape)
        return Dims(self.input_shape, self.latent_dim, self.output_shape, grid)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "recipe": self.recipe,
            "input_shape": list(self.input_shape),
            "latent_dim": self.latent_dim,
            "condition_classes": self.condition_classes,
            "condition_dim": self.condition_dim,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
        }
        for slot in SLOTS:
            d[slot] = getattr(self, slot).to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        if "net" in d and "body" not in d:  # written before bodies had a registry (0.1)
            net = dict(d.pop("net"))
            d["body"] = {"kind": net.pop("body", "auto"), **net}
        try:
            slots = {}
            for slot in SLOTS:
                values = d.pop(slot)
                if not isinstance(values, dict):
                    raise AekitError(f"model config: {slot} must be a mapping (got {values!r})")
                values = dict(values)
                slots[slot] = Component.saved(slot, values.pop("kind"), values)
            known = {f.name for f in fields(cls)}
            unknown = set(d) - known
            if unknown:
                raise AekitError(f"model config has unknown fields: {', '.join(sorted(unknown))}")
            hints = typing.get_type_hints(cls)
            for name, value in d.items():
                if not fits(value, hints[name]):
                    raise AekitError(
                        f"model config: {name} must be {type_name(hints[name])} (got {value!r})"
                    )
            return cls(**d, **slots)
        except (KeyError, TypeError) as e:
            raise AekitError(f"model config is incomplete or malformed ({e})") from None
