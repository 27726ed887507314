"""Shapes of every body on every data shape, gradients reaching every parameter, save/load,
custom networks, corruptions and the errors of model building."""

import pytest
import torch
from torch import nn

import aekit
from aekit.bottlenecks import BOTTLENECKS
from aekit.components import Dims
from aekit.corruption import CORRUPTIONS
from aekit.registry import RECIPES
from aekit.train.checkpoint import load_weights, save_weights, write_config
from conftest import TINY_NET, forward_kwargs, recipe_setup

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (10,)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("body", ["mlp", "conv"])
@pytest.mark.parametrize("upsample", ["transpose", "nearest"])
def test_every_body_fits_every_data_shape(shape, body, upsample):
    if body == "conv" and len(shape) != 3:
        with pytest.raises(aekit.AekitError, match="conv body needs images"):
            aekit.build("vae", shape, 4, body=body)
        return
    model = aekit.build("vae", shape, 4, body=body, upsample=upsample, **TINY_NET)
    x = torch.rand(3, *shape)
    out = model(x)
    assert out.reconstruction.shape == x.shape and out.params.shape == x.shape
    assert out.latents.shape == (3, 4) and out.code.shape == (3, 4)
    assert out.loss.shape == ()
    assert model.encode(x).shape == (3, 4)
    assert model.decode(torch.randn(5, 4)).shape == (5, *shape)
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(7).shape == (7, *shape)


def test_auto_body_is_conv_for_images_and_mlp_otherwise():
    from aekit.nets.conv import ConvEncoder
    from aekit.nets.mlp import MLPEncoder

    assert isinstance(aekit.build("ae", (1, 28, 28)).encoder, ConvEncoder)
    assert isinstance(aekit.build("ae", (3, 32, 32)).encoder, ConvEncoder)
    assert isinstance(aekit.build("ae", (1, 8, 8)).encoder, MLPEncoder)
    assert isinstance(aekit.build("ae", (64,)).encoder, MLPEncoder)


def recipe_variants():
    for name in RECIPES:
        yield name, {}
    yield "vae", {"prior": "mixture"}
    yield "wae-mmd", {"prior": "uniform"}
    yield "swae", {"prior": "ring"}
    yield "rae", {"regulariser": "l2"}
    yield "vae", {"likelihood": "gaussian", "variance": "pixel"}
    yield "vae", {"likelihood": "laplace", "variance": "global"}
    yield "dae", {"corruption": "salt-pepper"}
    yield "vae", {"corruption": "gaussian", "noise": 0.1, "free_bits": 0.1}
    for option in ("kmeans_init", "rotation", "cosine"):
        yield "vqvae", {option: 2 if option == "kmeans_init" else True}
    yield "vqvae", {"restart": False}  # the paper's setting
    yield "vqvae", {"simvq": True, "restart": False}
    yield "vqvae-ema", {"restart": True, "cosine": True}
    yield "rqvae", {"shared_codebook": True, "quantizer_dropout": 0.5, "rotation": True}
    yield "vqvae", {"bottleneck": "pvq", "groups": 4}
    yield "ae", {"bottleneck": "fsq", "levels": (16, 15), "body": "mlp"}


@pytest.mark.parametrize("name, options", list(recipe_variants()))
def test_every_parameter_receives_a_gradient(name, options):
    model = aekit.build(name, (1, 8, 8), **{**recipe_setup(name, (1, 8, 8), 4), **options})
    x = torch.rand(6, 1, 8, 8)
    condition = torch.arange(6) % 3 if model.conditional else None
    if options.get("kmeans_init"):  # k-means centres are a stationary point of the codebook loss
        with torch.no_grad():
            model(torch.rand(6, 1, 8, 8), step=0)
    model.backward(model(x, step=10, condition=condition, **forward_kwargs(model, x)))
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not silent, f"parameters without gradient: {silent}"


@pytest.mark.parametrize("name", list(RECIPES))
def test_save_then_load_gives_identical_outputs(tmp_path, name):
    options = recipe_setup(name, (1, 8, 8), 3)
    if RECIPES[name].conditional:
        options.pop("condition_classes")
        options["condition_dim"] = 2
    # Sparse coding measures the raw output's error: its Gaussian keeps a fixed scale.
    sparse_coding = RECIPES[name].kinds.get("objective") == "sparse-coding"
    variance = "fixed" if sparse_coding else "pixel"
    model = aekit.build(name, (1, 8, 8), likelihood="gaussian", variance=variance, **options)
    with torch.no_grad():  # make the learned scale differ from its initial value
        model.likelihood.log_scale.add_(torch.randn_like(model.likelihood.log_scale))
    write_config(tmp_path, {"model": model.config.to_dict()})
    save_weights(tmp_path / "model.safetensors", model)
    loaded = aekit.load(tmp_path)
    assert loaded.config == model.config
    x = torch.rand(5, 1, 8, 8)
    c = torch.randn(5, 2) if model.conditional else None
    model.eval()
    assert torch.equal(loaded.encode(x, c), model.encode(x, c))
    assert torch.equal(loaded.reconstruct(x, c), model.reconstruct(x, c))
    extra = forward_kwargs(model, x)
    torch.manual_seed(4)
    a = model(x, step=None, condition=c, **extra)
    torch.manual_seed(4)
    b = loaded(x, step=None, condition=c, **extra)
    assert torch.equal(a.loss, b.loss)


def test_loading_weights_of_another_model_names_the_problem(tmp_path):
    save_weights(tmp_path / "w.safetensors", aekit.build("vae", (10,), 3, hidden=(8,)))
    with pytest.raises(aekit.AekitError, match="shape"):
        load_weights(tmp_path / "w.safetensors", aekit.build("vae", (10,), 4, hidden=(8,)))
    with pytest.raises(aekit.AekitError, match="missing"):
        load_weights(tmp_path / "w.safetensors", aekit.build("vae", (10,), 3, hidden=(8, 8)))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(aekit.AekitError, match="corrupt"):
        load_weights(tmp_path / "bad.safetensors", aekit.build("vae", (10,), 3, hidden=(8,)))


class FlatEncoder(nn.Module):
    def __init__(self, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, out))

    def forward(self, x):
        return self.net(x)


class FlatDecoder(nn.Module):
    def __init__(self, latent: int) -> None:
        super().__init__()
        self.net = nn.Linear(latent, 64)

    def forward(self, z):
        return self.net(z).view(-1, 1, 8, 8)


def test_custom_networks(tmp_path):
    model = aekit.build("vae", (1, 8, 8), 3, encoder=FlatEncoder(6), decoder=FlatDecoder(3))
    assert model.config.body.kind == "custom"
    assert model(torch.rand(2, 1, 8, 8)).reconstruction.shape == (2, 1, 8, 8)
    with pytest.raises(aekit.AekitError, match=r"encoder must map .* to \(N, 6\)"):
        aekit.build("vae", (1, 8, 8), 3, encoder=FlatEncoder(3), decoder=FlatDecoder(3))
    with pytest.raises(
        aekit.AekitError, match=r"custom decoder fails on an input of shape \(2, 3\)"
    ):
        aekit.build("vae", (1, 8, 8), 3, encoder=FlatEncoder(6), decoder=FlatDecoder(4))
    write_config(tmp_path, {"model": model.config.to_dict()})
    save_weights(tmp_path / "model.safetensors", model)
    with pytest.raises(aekit.AekitError, match="custom encoder"):
        aekit.load(tmp_path)
    loaded = aekit.load(tmp_path, encoder=FlatEncoder(6), decoder=FlatDecoder(3))
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(loaded.encode(x), model.eval().encode(x))


def corruption(kind, noise):
    cls = CORRUPTIONS[kind]
    return cls(cls.Options(noise=noise), Dims((1000,), 2))


def test_masking_noise_zeroes_the_requested_fraction():
    x = torch.rand(200, 1000) + 0.5
    y = corruption("masking", 0.25)(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert torch.equal(y[y != 0], x[y != 0])


def test_salt_and_pepper_sets_extremes():
    x = torch.full((200, 1000), 0.5)
    y = corruption("salt-pepper", 0.3)(x)
    changed = y != 0.5
    assert changed.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert set(y[changed].unique().tolist()) == {0.0, 1.0}
    assert (y[changed] == 1).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_gaussian_noise_has_the_requested_std():
    x = torch.zeros(200, 1000)
    assert corruption("gaussian", 0.2)(x).std().item() == pytest.approx(0.2, abs=0.005)


def test_denoising_compares_with_the_clean_input_and_only_corrupts_in_training():
    model = aekit.build("dae", (1, 8, 8), 4, **TINY_NET, noise=0.5)
    x = torch.rand(4, 1, 8, 8)
    seen = []
    model.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    out = model.train()(x)
    assert (seen[-1] == 0).float().mean() > 0.3  # the encoder saw a corrupted input
    expected = -model.likelihood.log_prob(out.params, x).mean()
    assert torch.allclose(out.loss, expected)  # ... but the loss compares with the clean x
    model.eval()(x)
    assert torch.equal(seen[-1], x)
    model.encode(x)
    assert torch.equal(seen[-1], x)


def test_bad_model_requests_give_clear_errors():
    with pytest.raises(aekit.AekitError, match="unknown model 'vea'; choose from"):
        aekit.build("vea", (10,))
    with pytest.raises(aekit.AekitError, match="has no option 'betta'"):
        aekit.build("vae", (10,), betta=2)
    with pytest.raises(aekit.AekitError, match="unknown likelihood 'poisson'"):
        aekit.build("vae", (10,), likelihood="poisson")
    with pytest.raises(aekit.AekitError, match="needs a stochastic bottleneck with densities"):
        aekit.build("ae", (10,), objective="elbo")
    with pytest.raises(aekit.AekitError, match="noise must be a fraction"):
        aekit.build("dae", (10,), noise=1.5)
    with pytest.raises(aekit.AekitError, match="latent_dim must be at least 1"):
        aekit.build("vae", (10,), 0)
    model = aekit.build("ae", (10,), 3)
    with pytest.raises(aekit.AekitError, match="no prior"):
        model.sample(4)
    with pytest.raises(aekit.AekitError, match=r"shape \(12,\) per example but the model expects"):
        model.encode(torch.rand(2, 12))
    with pytest.raises(aekit.AekitError, match="latents have shape"):
        model.decode(torch.rand(2, 4))


def test_recipes_list_their_papers():
    for recipe in RECIPES.values():
        assert recipe.summary and recipe.paper
    assert {"ae", "dae", "vae", "beta-vae", "beta-vae-capacity"} <= set(RECIPES)


def test_component_bases_are_abstract_and_every_registered_kind_is_complete():
    from aekit.bottlenecks import Bottleneck
    from aekit.components import options_class
    from aekit.likelihoods import LIKELIHOODS, Likelihood
    from aekit.objectives import OBJECTIVES, Objective

    dims = Dims((1, 8, 8), 3)
    for base in (Bottleneck, Likelihood, Objective):
        with pytest.raises(TypeError, match="abstract"):
            base(options_class(base)(), dims)
    for registry in (BOTTLENECKS, LIKELIHOODS, OBJECTIVES, CORRUPTIONS):
        for kind in registry.names():
            cls = registry[kind]
            options = options_class(cls)()
            width = getattr(options, "vector_width", dims.latent_dim)  # quantizers: one vector
            if hasattr(options, "latent_width"):  # categorical latents: variables x categories
                width = options.latent_width()
            width = max(width, getattr(options, "k", 0))  # k-sparse: at least k latents
            cls(options, Dims(dims.input_shape, width))  # TypeError if a method is left abstract
    from aekit.nets import NETS, Body

    with pytest.raises(TypeError, match="abstract"):
        type("Incomplete", (Body,), {})()  # a body must define build
    for kind in NETS.names():
        if kind != "custom":  # the user's own modules, which must be passed again
            options = options_class(NETS[kind])()
            width = 32  # the grid body: 16 positions of 2
            encoder, decoder = NETS[kind].build(options, Dims((1, 16, 16), width), width, 0)
            h = encoder(torch.rand(2, 1, 16, 16))
            assert tuple(h.shape) == (2, width)  # a tensor, or the dictionary's pre-activations
            assert decoder(torch.randn(2, width)).shape == (2, 1, 16, 16)
