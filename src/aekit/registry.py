"""From a recipe to a model: a family is a choice of body, bottleneck, likelihood, corruption
and objective plus paper defaults (the table is `aekit.recipes`); `build` resolves the
options to the parts that own them and builds the networks."""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from typing import Any

import torch
from torch import nn

from aekit.bottlenecks import BOTTLENECKS, KSparse
from aekit.components import Dims, options_class
from aekit.errors import AekitError, one_line
from aekit.models.autoencoder import Autoencoder
from aekit.models.config import SLOTS, Component, ModelConfig
from aekit.nets import NETS, build_networks, grid_positions, latent_grid, resolve_body
from aekit.nets.dictionary import KSPARSE_ENCODER_INIT_NORM
from aekit.recipes import (  # noqa: F401  (imported from here before the table moved)
    DEFAULT_KINDS,
    RECIPES,
    Recipe,
    get_recipe,
    sae_learning_rate,
)


def option_owners(kinds: dict[str, str]) -> dict[str, str]:
    """Which part (body, bottleneck, ...) owns each option name, for the chosen kinds."""
    owners: dict[str, str] = {}
    for slot, registry in SLOTS.items():
        for f in fields(options_class(registry[kinds[slot]])):
            if f.name in owners:
                raise AekitError(
                    f"option {f.name!r} is claimed by both {owners[f.name]} and {slot}"
                )
            owners[f.name] = slot
    return owners


MODEL_FIELDS = ("condition_classes", "condition_dim")


def recipe_kinds(recipe: Recipe, chosen: dict[str, str | None] | None = None) -> dict[str, str]:
    """The kind of every slot: the defaults, the recipe's, then the ones chosen."""
    kinds = {**DEFAULT_KINDS, **recipe.kinds}
    kinds.update({slot: kind for slot, kind in (chosen or {}).items() if kind is not None})
    for slot, kind in kinds.items():
        SLOTS[slot][kind]  # an unknown kind is reported here, by name
    return kinds


def model_config(
    name: str,
    input_shape: tuple[int, ...],
    latent_dim: int | None = None,
    *,
    output_shape: tuple[int, ...] | None = None,
    **options: Any,
) -> ModelConfig:
    """The config of recipe `name` with `options` overriding its defaults.

    Options are flat names (`beta=4`, `noise=0.3`, `channels=(32, 64)`, `k=32`) routed to the
    part that owns them; `body=`, `bottleneck=`, `likelihood=`, `corruption=`, `objective=`
    change a kind. `output_shape` makes the model predict a paired target of that shape
    (transcoders) instead of reconstructing its input.
    """
    recipe = get_recipe(name)
    condition = {k: int(options.pop(k)) for k in MODEL_FIELDS if options.get(k)}
    for k in MODEL_FIELDS:
        options.pop(k, None)
    if recipe.conditional and not condition:
        raise AekitError(
            f"{name} is conditional: pass condition_classes (labels) or condition_dim (vectors)"
        )
    if recipe.paired and output_shape is None:
        raise AekitError(
            f"{name} predicts one site from another: give the target with --target-site "
            "(output_shape= from Python)"
        )
    kinds = recipe_kinds(recipe, {slot: options.pop(slot, None) for slot in SLOTS})
    owners = option_owners(kinds)
    values: dict[str, dict[str, Any]] = {slot: {} for slot in SLOTS}
    for key, value in recipe.options.items():
        if key in owners:  # a recipe default for a kind the user replaced no longer applies
            values[owners[key]][key] = value
    for key, value in options.items():
        if key not in owners:
            raise AekitError(
                f"model {name!r} has no option {key!r} (valid: latent_dim, "
                f"{', '.join(sorted(owners))}, {', '.join(SLOTS)})"
            )
        values[owners[key]][key] = value
    components = {slot: Component.create(slot, kinds[slot], values[slot]) for slot in SLOTS}
    input_shape = tuple(input_shape)
    bottleneck = components["bottleneck"]
    cls = BOTTLENECKS[bottleneck.kind]
    if cls.codes_positions:
        components["body"], latent_dim = grid_layout(
            components["body"], input_shape, latent_dim, bottleneck
        )
    latent_dim = resolve_latent_dim(recipe, components, input_shape, latent_dim)
    resolve_encoder_init(components)
    grid = latent_grid(components["body"].kind, components["body"].options, input_shape)
    paired = None if output_shape is None else tuple(output_shape)
    dims = Dims(input_shape, latent_dim, paired, grid if len(input_shape) == 3 else None)
    for component in components.values():
        resolve = getattr(component.options, "resolved", None)
        if resolve is not None:
            component.options = resolve(dims)
    return ModelConfig(
        recipe=name,
        input_shape=input_shape,
        latent_dim=latent_dim,
        **condition,
        output_shape=dims.output_shape,
        **components,
    )


def resolve_latent_dim(
    recipe: Recipe,
    components: dict[str, Component],
    input_shape: tuple[int, ...],
    latent_dim: int | None,
) -> int:
    """The latent width: given, or fixed by the bottleneck (a categorical's variables x
    categories), or the body's default (the dictionary's expansion x inputs), the recipe's,
    else 16."""
    bottleneck = components["bottleneck"]
    width = getattr(bottleneck.options, "latent_width", None)
    if width is not None:
        if latent_dim is not None and latent_dim != width():
            raise AekitError(
                f"the {bottleneck.kind} bottleneck's latent is {width()} wide "
                f"({bottleneck.options.width_note()}); latent_dim {latent_dim} does not match "
                "(leave it unset)"
            )
        return width()
    if latent_dim is not None:
        return latent_dim
    body = components["body"]
    default = NETS[body.kind].default_latent_dim(body.options, input_shape)
    return default or recipe.latent_dim or 16


def resolve_encoder_init(components: dict[str, Component]) -> None:
    """A dictionary's initial encoder norm when left to the model: 1/sqrt(3) for a k-sparse
    bottleneck over unit-norm decoder rows (KSPARSE_ENCODER_INIT_NORM), else the exact
    transpose of the decoder (0). It depends on two parts, so the recipe table sets it."""
    body = components["body"]
    if getattr(body.options, "encoder_init_norm", 0.0) is not None:
        return
    k_sparse = issubclass(BOTTLENECKS[components["bottleneck"].kind], KSparse)
    norm = KSPARSE_ENCODER_INIT_NORM if k_sparse and body.options.unit_norm_decoder else 0.0
    body.options = dataclasses.replace(body.options, encoder_init_norm=norm)


FLAT_POSITIONS = 4
"""Code vectors per example of a quantizer on flat data, unless latent_dim says otherwise."""


def grid_layout(
    body: Component,
    input_shape: tuple[int, ...],
    latent_dim: int | None,
    bottleneck: Component,
) -> tuple[Component, int]:
    """Bottlenecks that code position by position (quantizers, entropy-coded latents) take a
    grid of vectors on images (one per position of the last feature map, as in VQ-VAE and the
    learned image codecs) and FLAT_POSITIONS vectors otherwise; latent_dim follows from that."""
    width = bottleneck.options.vector_width
    if body.kind == "auto" and len(input_shape) == 3:
        body = Component("grid", body.options)
    if body.kind != "grid":
        return body, FLAT_POSITIONS * width if latent_dim is None else latent_dim
    resolve_body(body.kind, body.options, input_shape)
    positions = grid_positions(input_shape, len(body.options.channels))
    size = positions * width
    if latent_dim is not None and latent_dim != size:
        raise AekitError(
            f"with the grid body the latent is {positions} positions x {width} = {size} wide; "
            f"latent_dim {latent_dim} does not match (leave it unset, or change code_dim / "
            "channels)"
        )
    return body, size


def build_from_config(
    config: ModelConfig, encoder: nn.Module | None = None, decoder: nn.Module | None = None
) -> Autoencoder:
    dims = config.dims
    if encoder is None:
        NETS[config.body.kind].check_size(config.body.options, dims, config.condition_width)
    # The parts before the networks: the order in which they draw their initial weights.
    parts = {
        slot: SLOTS[slot][getattr(config, slot).kind](getattr(config, slot).options, dims)
        for slot in SLOTS
        if slot != "body"
    }
    in_features = parts["bottleneck"].in_features
    if (encoder is None) != (decoder is None):
        raise AekitError("pass both a custom encoder and a custom decoder, or neither")
    if encoder is None:
        body = config.body
        encoder, decoder = build_networks(
            body.kind, body.options, dims, in_features, config.condition_width
        )
    else:
        if config.condition_width:
            raise AekitError(
                "conditional models use aekit's own networks; custom encoder/decoder modules "
                "are not supported with a condition"
            )
        config = dataclasses.replace(config, body=Component("custom", config.body.options))
        check_custom_networks(encoder, decoder, config, in_features)
    return Autoencoder(
        encoder,
        parts["bottleneck"],
        decoder,
        parts["likelihood"],
        parts["objective"],
        parts["corruption"],
        config,
    )


def check_custom_networks(
    encoder: nn.Module, decoder: nn.Module, config: ModelConfig, in_features: int
) -> None:
    """Run both modules once on zeros so a shape mistake is reported now, by name."""
    with torch.no_grad():
        h = run_custom(encoder, "encoder", torch.zeros(2, *config.input_shape))
        if tuple(h.shape) != (2, in_features):
            raise AekitError(
                f"the encoder must map (N, {', '.join(map(str, config.input_shape))}) to "
                f"(N, {in_features}) for the {config.bottleneck.kind!r} bottleneck; it gave "
                f"{tuple(h.shape)} for N=2"
            )
        out = run_custom(decoder, "decoder", torch.zeros(2, config.latent_dim))
        target = config.dims.target_shape
        if tuple(out.shape) != (2, *target):
            raise AekitError(
                f"the decoder must map (N, {config.latent_dim}) to (N, "
                f"{', '.join(map(str, target))}); it gave {tuple(out.shape)} for N=2"
            )


def run_custom(module: nn.Module, role: str, x: torch.Tensor) -> torch.Tensor:
    try:
        return module(x)
    except (RuntimeError, ValueError, TypeError) as e:
        raise AekitError(
            f"the custom {role} fails on an input of shape {tuple(x.shape)}: {one_line(e)}"
        ) from None


def build(
    name: str | ModelConfig,
    input_shape: tuple[int, ...] | None = None,
    latent_dim: int | None = None,
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    **options: Any,
) -> Autoencoder:
    """Build a model by recipe name (`aekit.build("vae", input_shape=(1, 28, 28), latent_dim=16,
    beta=2)`) or from a ModelConfig. Pass `encoder`/`decoder` modules to use your own bodies:
    the encoder maps x to the bottleneck's `in_features` (2 * latent_dim for Gaussian), the
    decoder maps z to the likelihood's parameters, shaped like x."""
    if isinstance(name, ModelConfig):
        if input_shape is not None or latent_dim is not None or options:
            raise AekitError("pass either a ModelConfig or a recipe name with options, not both")
        return build_from_config(name, encoder, decoder)
    if input_shape is None:
        raise AekitError("build needs input_shape, e.g. input_shape=(1, 28, 28)")
    return build_from_config(
        model_config(name, input_shape, latent_dim, **options), encoder, decoder
    )
