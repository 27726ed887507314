"""The vit body: fixed sine-cosine positions, the shapes it refuses, forward shapes, gradients
to every parameter, the kept-patches hook of a masked autoencoder, and a CLI run."""

from __future__ import annotations

import math

import pytest
import torch

import aekit
from aekit.cli import main
from aekit.nets.vit import ViTEncoder, ViTOptions, sincos_2d

TINY = {"body": "vit", "patch": 2, "depth": 1, "width": 16, "heads": 2}
SMALL = {**TINY, "decoder_depth": 1, "decoder_width": 8}


def test_sincos_2d_is_the_fixed_formula():
    pos = sincos_2d(3, 4, 8)
    assert pos.shape == (12, 8) and torch.equal(pos, sincos_2d(3, 4, 8))
    assert len({tuple(row.tolist()) for row in pos}) == 12  # every position differs
    # Token r * 4 + c: channels 0-3 encode the row r, 4-7 the column c, at w_i = 1e4^(-i/2).
    r, c = 2, 3
    expected = [math.sin(r), math.sin(r / 100), math.cos(r), math.cos(r / 100)]
    expected += [math.sin(c), math.sin(c / 100), math.cos(c), math.cos(c / 100)]
    assert torch.allclose(pos[r * 4 + c], torch.tensor(expected), atol=1e-6)
    assert torch.equal(pos[4:8, :4], pos[5:6, :4].expand(4, 4))  # one row, one row code


def test_positions_are_buffers_not_parameters_and_not_saved():
    model = aekit.build("vae", (1, 8, 8), 4, **SMALL)
    names = [n for n, _ in model.named_parameters()]
    assert not any("position" in n for n in names)
    assert not any("position" in k for k in model.state_dict())
    assert torch.equal(model.encoder.position, sincos_2d(4, 4, 16))


@pytest.mark.parametrize(
    "shape, patch, words",
    [
        ((64,), 2, ["(C, H, W)", "(64,)"]),
        ((1, 8, 8), 3, ["patch 3", "8x8"]),
        ((1, 8, 6), 4, ["patch 4", "8x6"]),
        ((1, 8, 8), 8, ["patch 8", "8x8", "at least 2"]),
    ],
)
def test_refused_shapes_name_the_numbers(shape, patch, words):
    with pytest.raises(aekit.AekitError) as error:
        aekit.build("vae", shape, 4, **{**SMALL, "patch": patch})
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize(
    "options, words",
    [
        ({"width": 18, "heads": 4}, ["width (18)", "heads (4)"]),
        ({"width": 6, "heads": 1}, ["width (6)", "4"]),
        ({"depth": 0}, ["depth", "0"]),
        ({"patch": 2.5}, ["patch", "2.5"]),
        ({"mlp_ratio": 0.0}, ["mlp_ratio", "0.0"]),
        ({"decoder_width": 10, "heads": 2}, ["decoder_width (10)"]),
    ],
)
def test_refused_options_name_the_value(options, words):
    with pytest.raises(aekit.AekitError) as error:
        ViTOptions(**options)
    assert all(w in str(error.value) for w in words), str(error.value)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 4, 6)])
def test_forward_shapes(shape):
    model = aekit.build("vae", shape, 4, **SMALL)
    x = torch.rand(3, *shape)
    out = model(x)
    assert out.params.shape == x.shape and out.latents.shape == (3, 4)
    assert model.encoder(x).shape == (3, 8)  # mean and log-variance of 4 latents
    assert model.decode(torch.randn(5, 4)).shape == (5, *shape)


def test_every_parameter_receives_a_gradient():
    model = aekit.build("vae", (1, 8, 8), 4, **TINY)
    model.backward(model(torch.rand(6, 1, 8, 8).round(), step=0))
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not silent, f"parameters without gradient: {silent}"


def test_tokens_of_kept_patches_alone():
    torch.manual_seed(0)
    encoder = ViTEncoder((1, 8, 8), ViTOptions(patch=2, depth=1, width=16, heads=2), 4).eval()
    x = torch.rand(2, 1, 8, 8)
    seen = []
    encoder.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    assert encoder.tokens(x).shape == (2, 16, 16) and seen == [16]
    keep = torch.tensor([[0, 5, 9], [15, 2, 7]])
    kept = encoder.tokens(x, keep)
    assert kept.shape == (2, 3, 16) and seen == [16, 3]
    order = torch.tensor([2, 0, 1])
    assert torch.allclose(encoder.tokens(x, keep[:, order]), kept[:, order], atol=1e-6)
    with pytest.raises(aekit.AekitError, match="keep must be"):
        encoder.tokens(x, keep[0])


def test_encode_is_deterministic_in_eval_mode():
    model = aekit.build("vae", (1, 8, 8), 4, **SMALL).eval()
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model.encode(x), model.encode(x))


def test_trains_from_the_command_line(tmp_path):
    argv = ["train", "vae", "--body", "vit", "--patch", "2", "--depth", "1", "--width", "16",
            "--heads", "2", "--decoder-width", "8", "--decoder-depth", "1", "--epochs", "1",
            "--no-progress", "--no-eval", "--no-report", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0
    loaded = aekit.load(tmp_path / "r")
    assert loaded.config.body.kind == "vit" and loaded.config.body.options.patch == 2
