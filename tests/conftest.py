import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


TINY_NET = {"channels": (4, 8), "hidden": (16,)}
"""Small enough that a test trains in well under a second."""


def recipe_setup(name: str, shape: tuple[int, ...], latent: int) -> dict:
    """Options that build recipe `name` small on data of `shape` (about `latent` latents): the
    layered bodies get TINY_NET (a vit one block of width 8); quantizers on images derive
    their width from the grid, entropy-coded latents get `latent` channels a position;
    categorical latents are variables x categories; dictionaries get their latent count and a
    transcoder a paired target of 5 values."""
    from aekit.bottlenecks import BOTTLENECKS
    from aekit.registry import DEFAULT_KINDS, RECIPES

    recipe = RECIPES[name]
    kinds = {**DEFAULT_KINDS, **recipe.kinds}
    options: dict = {}
    if kinds["body"] == "vit":
        options.update(patch=2, depth=1, width=8, heads=2, decoder_width=8, decoder_depth=1)
    elif kinds["body"] != "dictionary":
        options.update(TINY_NET)
    bottleneck = kinds["bottleneck"]
    if bottleneck == "categorical":
        options.update(variables=2, categories=3)
    elif bottleneck == "joint":
        options.update(continuous_dim=2, variables=1, categories=3)
    elif BOTTLENECKS[bottleneck].has_rate:  # entropy-coded: channels a grid position
        options["latent_channels"] = latent
        if bottleneck == "hyperprior":
            options["hyper_channels"] = 3
    elif not BOTTLENECKS[bottleneck].codes_positions:
        options["latent_dim"] = latent
    if bottleneck in ("topk", "batchtopk", "abstopk"):
        options["k"] = 2
    if bottleneck == "jumprelu":  # a wide kernel: the thresholds' pseudo-gradient is non-zero
        options["bandwidth"] = 1.0
    if kinds["objective"] == "beta-tcvae":  # the Trainer takes it from the data
        options["dataset_size"] = 100
    if kinds["objective"] == "factor-vae":
        options.update(discriminator_width=8, discriminator_layers=1)
    if recipe.paired:
        options["output_shape"] = (5,)
    if recipe.conditional:
        options["condition_classes"] = 3
    return options


def forward_kwargs(model, x, **kwargs) -> dict:
    """What a forward of `model` on x needs besides x: a paired target, a condition."""
    if model.paired:
        kwargs["target"] = torch.rand(len(x), *model.target_shape)
    return kwargs
