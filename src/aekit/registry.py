"""Named recipes: a family is a choice of bottleneck, likelihood, corruption and objective
plus paper defaults. `aekit models` lists them; `build` turns one into a model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from aekit.bottlenecks import BOTTLENECKS, Quantizer
from aekit.components import Dims, make_options, options_class
from aekit.errors import AekitError
from aekit.models.autoencoder import Autoencoder
from aekit.models.config import SLOTS, Component, ModelConfig
from aekit.nets import NetConfig, build_networks, grid_positions, resolve_body


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    paper: str
    kinds: dict[str, str] = field(default_factory=dict)
    """Kind per slot (bottleneck, likelihood, corruption, objective) where not the default."""
    options: dict[str, Any] = field(default_factory=dict)
    """Option defaults of the recipe (routed to whichever part owns each name)."""
    data: dict[str, Any] = field(default_factory=dict)
    """Data defaults, e.g. dynamic binarisation for a likelihood bound."""
    conditional: bool = False
    """Whether the model needs a condition (labels or vectors) for every example."""


DEFAULT_KINDS = {
    "bottleneck": "identity",
    "likelihood": "bernoulli",
    "corruption": "none",
    "objective": "reconstruction",
}

RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise AekitError(f"unknown model {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]


register_recipe(
    Recipe(
        "ae",
        "Autoencoder: deterministic code, reconstruction loss",
        "Hinton & Salakhutdinov 2006, Reducing the dimensionality of data with neural networks",
    )
)
register_recipe(
    Recipe(
        "dae",
        "Denoising autoencoder: corrupted input (masking, gaussian, salt-pepper), clean target",
        "Vincent et al. 2008, Extracting and composing robust features with denoising autoencoders",
        kinds={"corruption": "masking"},
    )
)
register_recipe(
    Recipe(
        "vae",
        "Variational autoencoder: Gaussian posterior, analytic KL to N(0, I), ELBO in nats",
        "Kingma & Welling 2014, Auto-encoding variational Bayes",
        kinds={"bottleneck": "gaussian", "objective": "elbo"},
        data={"binarize": True},
    )
)
register_recipe(
    Recipe(
        "beta-vae",
        "beta-VAE: the KL weighted by beta (default 4) for disentangling",
        "Higgins et al. 2017, beta-VAE: learning basic visual concepts with a constrained "
        "variational framework",
        kinds={"bottleneck": "gaussian", "objective": "elbo"},
        options={"beta": 4.0},
        data={"binarize": True},
    )
)
register_recipe(
    Recipe(
        "beta-vae-capacity",
        "Capacity-annealed beta-VAE: gamma * |KL - C|, C raised linearly to C_max",
        "Burgess et al. 2018, Understanding disentangling in beta-VAE",
        kinds={"bottleneck": "gaussian", "objective": "capacity"},
        data={"binarize": True},
    )
)


GAUSSIAN_BOUND = {"bottleneck": "gaussian"}
TIGHTER = "Rainforth et al. 2018, Tighter variational bounds are not necessarily better"
for recipe in (
    Recipe(
        "iwae",
        "Importance weighted autoencoder: log-mean-exp of k importance weights (k=5)",
        "Burda, Grosse & Salakhutdinov 2016, Importance weighted autoencoders",
        kinds={**GAUSSIAN_BOUND, "objective": "iwae"},
        data={"binarize": True},
    ),
    Recipe(
        "miwae",
        "Multiply importance weighted AE: the mean of M IWAE bounds of K draws (8 x 8)",
        TIGHTER,
        kinds={**GAUSSIAN_BOUND, "objective": "miwae"},
        data={"binarize": True},
    ),
    Recipe(
        "ciwae",
        "Combination IWAE: beta * ELBO + (1 - beta) * IWAE over the same draws",
        TIGHTER,
        kinds={**GAUSSIAN_BOUND, "objective": "ciwae"},
        data={"binarize": True},
    ),
    Recipe(
        "piwae",
        "Partially IWAE: decoder on the IWAE bound, encoder on MIWAE (two backward passes)",
        TIGHTER,
        kinds={**GAUSSIAN_BOUND, "objective": "piwae"},
        data={"binarize": True},
    ),
    Recipe(
        "cvae",
        "Conditional VAE: encoder and decoder see a label (one-hot) or a conditioning vector",
        "Sohn, Lee & Yan 2015, Learning structured output representation using deep "
        "conditional generative models",
        kinds={**GAUSSIAN_BOUND, "objective": "elbo"},
        data={"binarize": True},
        conditional=True,
    ),
    Recipe(
        "hvae",
        "Two-level VAE: p(z2) p(z1|z2) p(x|z1), learned conditional prior, bottom-up q",
        "Burda et al. 2016 (two stochastic layers); Rezende et al. 2014, Stochastic "
        "backpropagation and approximate inference in deep generative models",
        kinds={"bottleneck": "hierarchical", "objective": "elbo"},
        data={"binarize": True},
    ),
    Recipe(
        "vamp",
        "VampPrior VAE: p(z) is a mixture of posteriors at 500 learned pseudo-inputs",
        "Tomczak & Welling 2018, VAE with a VampPrior",
        kinds={**GAUSSIAN_BOUND, "objective": "elbo"},
        options={"prior": "vamp"},
        data={"binarize": True},
    ),
    Recipe(
        "rae",
        "Regularised AE: |z|^2 penalty + decoder gradient penalty; samples from a fitted GMM",
        "Ghosh et al. 2020, From variational to deterministic autoencoders",
        kinds={"objective": "rae"},
    ),
    Recipe(
        "wae-mmd",
        "Wasserstein AE: deterministic code, MMD (IMQ kernel, U-statistic) to the prior",
        "Tolstikhin et al. 2018, Wasserstein auto-encoders",
        kinds={"objective": "wae-mmd"},
        options={"prior": "normal"},
    ),
    Recipe(
        "swae",
        "Sliced-Wasserstein AE: sliced Wasserstein distance to any samplable prior",
        "Kolouri et al. 2019, Sliced-Wasserstein autoencoders",
        kinds={"objective": "swae"},
        options={"prior": "normal"},
    ),
):
    register_recipe(recipe)


VQ_PAPER = "van den Oord, Vinyals & Kavukcuoglu 2017, Neural discrete representation learning"
for recipe in (
    Recipe(
        "vqvae",
        "VQ-VAE: nearest of K=512 codes per grid position, straight-through, commitment loss",
        VQ_PAPER,
        kinds={"bottleneck": "vq"},
    ),
    Recipe(
        "vqvae-ema",
        "VQ-VAE with the codebook learned by exponential moving averages (decay 0.99)",
        VQ_PAPER + " (appendix A.1)",
        kinds={"bottleneck": "vq"},
        options={"ema": True},
    ),
    Recipe(
        "rqvae",
        "Residual VQ: 4 stages quantize successive residuals; quantizer dropout optional",
        "Lee et al. 2022, Autoregressive image generation using residual quantization; "
        "Zeghidour et al. 2021, SoundStream",
        kinds={"bottleneck": "rvq"},
    ),
    Recipe(
        "fsq",
        "Finite scalar quantization: tanh-bounded, rounded dims (levels 8,5,5,5), no aux loss",
        "Mentzer et al. 2024, Finite scalar quantization: VQ-VAE made simple",
        kinds={"bottleneck": "fsq"},
    ),
    Recipe(
        "lfq",
        "Lookup-free quantization: sign of each of 10 dims, entropy penalty",
        "Yu et al. 2024, Language model beats diffusion: tokenizer is key to visual generation",
        kinds={"bottleneck": "lfq"},
    ),
    Recipe(
        "bsq",
        "Binary spherical quantization: unit-sphere projection, then sign; entropy penalty",
        "Zhao, Xiong & Krahenbuhl 2024, Image and video tokenization with binary spherical "
        "quantization",
        kinds={"bottleneck": "bsq"},
    ),
):
    register_recipe(recipe)


def option_owners(kinds: dict[str, str]) -> dict[str, str]:
    """Which part (net, or a slot) owns each option name, for the chosen kinds."""
    owners = {f.name: "net" for f in fields(NetConfig)}
    for slot, registry in SLOTS.items():
        for f in fields(options_class(registry[kinds[slot]])):
            if f.name in owners:
                raise AekitError(
                    f"option {f.name!r} is claimed by both {owners[f.name]} and {slot}"
                )
            owners[f.name] = slot
    return owners


MODEL_FIELDS = ("condition_classes", "condition_dim")


def model_config(
    name: str, input_shape: tuple[int, ...], latent_dim: int | None = None, **options: Any
) -> ModelConfig:
    """The config of recipe `name` with `options` overriding its defaults.

    Options are flat names (`beta=4`, `noise=0.3`, `channels=(32, 64)`) routed to the part
    that owns them; `bottleneck=`, `likelihood=`, `corruption=`, `objective=` change a kind.
    """
    recipe = get_recipe(name)
    condition = {k: int(options.pop(k)) for k in MODEL_FIELDS if options.get(k)}
    for k in MODEL_FIELDS:
        options.pop(k, None)
    if recipe.conditional and not condition:
        raise AekitError(
            f"{name} is conditional: pass condition_classes (labels) or condition_dim (vectors)"
        )
    kinds = {**DEFAULT_KINDS, **recipe.kinds}
    for slot in SLOTS:
        if options.get(slot) is not None:
            kinds[slot] = options.pop(slot)
        options.pop(slot, None)
    owners = option_owners(kinds)
    values: dict[str, dict[str, Any]] = {"net": {}, **{slot: {} for slot in SLOTS}}
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
    net = make_options(NetConfig, values["net"], "net")
    if issubclass(BOTTLENECKS[kinds["bottleneck"]], Quantizer):
        net, latent_dim = quantizer_layout(net, tuple(input_shape), latent_dim, components)
    return ModelConfig(
        recipe=name,
        input_shape=tuple(input_shape),
        latent_dim=16 if latent_dim is None else latent_dim,
        **condition,
        net=net,
        **components,
    )


FLAT_POSITIONS = 4
"""Code vectors per example of a quantizer on flat data, unless latent_dim says otherwise."""


def quantizer_layout(
    net: NetConfig,
    input_shape: tuple[int, ...],
    latent_dim: int | None,
    components: dict[str, Component],
) -> tuple[NetConfig, int]:
    """Quantizers code a grid of vectors on images (one per position of the last feature map,
    as in VQ-VAE) and FLAT_POSITIONS vectors otherwise; latent_dim follows from that."""
    width = components["bottleneck"].options.vector_width
    if net.body == "auto" and len(input_shape) == 3:
        net = dataclasses.replace(net, body="grid")
    if net.body != "grid":
        return net, FLAT_POSITIONS * width if latent_dim is None else latent_dim
    resolve_body(net, input_shape)
    size = grid_positions(input_shape, len(net.channels)) * width
    if latent_dim is not None and latent_dim != size:
        raise AekitError(
            f"with the grid body the latent is {grid_positions(input_shape, len(net.channels))} "
            f"positions x {width} = {size} wide; latent_dim {latent_dim} does not match (leave "
            "it unset, or change code_dim / channels)"
        )
    return net, size


def build_from_config(
    config: ModelConfig, encoder: nn.Module | None = None, decoder: nn.Module | None = None
) -> Autoencoder:
    dims = Dims(config.input_shape, config.latent_dim)
    parts = {
        slot: SLOTS[slot][getattr(config, slot).kind](getattr(config, slot).options, dims)
        for slot in SLOTS
    }
    objective, bottleneck = parts["objective"], parts["bottleneck"]
    if objective.needs_density and not bottleneck.has_density:
        raise AekitError(
            f"objective {config.objective.kind!r} needs a stochastic bottleneck with densities "
            f"q(z|x) and p(z) (gaussian, hierarchical); {config.bottleneck.kind!r} has none"
        )
    if objective.needs_prior and not bottleneck.has_prior:
        raise AekitError(
            f"objective {config.objective.kind!r} matches the codes to a prior: pass --prior "
            "(normal, uniform, ring, mixture, ...)"
        )
    if (encoder is None) != (decoder is None):
        raise AekitError("pass both a custom encoder and a custom decoder, or neither")
    if encoder is None:
        if config.net.body == "custom":
            raise AekitError(
                "this model was built with a custom encoder/decoder: pass them again, "
                "e.g. aekit.load(run, encoder=..., decoder=...)"
            )
        encoder, decoder = build_networks(
            config.net,
            config.input_shape,
            parts["bottleneck"].in_features,
            config.latent_dim,
            config.condition_width,
        )
    else:
        if config.condition_width:
            raise AekitError(
                "conditional models use aekit's own networks; custom encoder/decoder modules "
                "are not supported with a condition"
            )
        config = dataclasses.replace(config, net=dataclasses.replace(config.net, body="custom"))
        check_custom_networks(encoder, decoder, config, parts["bottleneck"].in_features)
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
        if tuple(out.shape) != (2, *config.input_shape):
            raise AekitError(
                f"the decoder must map (N, {config.latent_dim}) to (N, "
                f"{', '.join(map(str, config.input_shape))}); it gave {tuple(out.shape)} for N=2"
            )


def run_custom(module: nn.Module, role: str, x: torch.Tensor) -> torch.Tensor:
    try:
        return module(x)
    except (RuntimeError, ValueError, TypeError) as e:
        raise AekitError(
            f"the custom {role} fails on an input of shape {tuple(x.shape)}: "
            f"{' '.join(str(e).split())}"
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
