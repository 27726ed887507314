"""The dictionary body (`aekit.nets.dictionary`) of the SAE recipes: their defaults and saved
configs, input checks, the unit-norm decoder, the data-dependent initialisation (scales,
b_dec, the geometric median) and the encoder's initial norms, gradients to every parameter,
and the normalisation folded into the saved weights."""

from __future__ import annotations

import math

import pytest
import torch

import aekit
from aekit.data.tensor_data import Batch
from aekit.errors import AekitError
from aekit.nets.dictionary import geometric_median
from sae_helpers import data, make


# ---------------------------------------------------------------- configuration
def test_recipe_defaults_validation_and_round_trip():
    assert make("sae-relu").decoder.options.unit_norm_decoder is False
    assert make("sae-topk").decoder.options.unit_norm_decoder is True
    model = aekit.build("sae-topk", (10,), expansion=4)
    assert (model.latent_dim, model.d_out, model.objective.options.aux_k) == (40, 10, 5)
    assert aekit.ModelConfig.from_dict(model.config.to_dict()) == model.config
    for recipe, options in [
        ("sae-relu", {}),
        ("sae-jumprelu", {}),
        ("sae-batchtopk", {"matryoshka": (4, 16)}),
        ("transcoder", {"output_shape": (6,), "skip": True}),
    ]:
        config = make(recipe, **options).config
        assert aekit.ModelConfig.from_dict(config.to_dict()) == config, recipe
    with pytest.raises(AekitError, match="build needs input_shape"):
        aekit.build("sae-topk")
    with pytest.raises(AekitError, match="skip is a transcoder option"):
        make(skip=True)


def test_bad_inputs_are_named():
    model = make()
    with pytest.raises(AekitError, match=r"shape \(5,\) per example but the model expects \(8,\)"):
        model(torch.zeros(4, 5))
    with pytest.raises(AekitError, match=r"shape \(\) per example but the model expects \(8,\)"):
        model.encode(torch.zeros(8))
    with pytest.raises(AekitError, match=r"dtype torch\.int64"):
        model.check_input(torch.zeros(4, 8, dtype=torch.long))
    bad = data(4)
    bad[1, 2] = math.nan
    with pytest.raises(AekitError, match="NaN"):
        model(bad)
    with pytest.raises(AekitError, match="a target was given but this model reconstructs"):
        model(data(4), target=data(4))
    transcoder = make("transcoder", output_shape=(6,))
    with pytest.raises(AekitError, match="this model predicts a paired target"):
        transcoder(data(4))
    with pytest.raises(AekitError, match=r"target has shape \(4, 5\); expected \(4, 6\)"):
        transcoder(data(4), target=torch.zeros(4, 5))


# ---------------------------------------------------------------- constraint and init
def test_unit_norm_decoder_projection_and_renormalisation():
    model = make(k=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(5):
        out = model(data(32, seed=step), step=step)
        optimizer.zero_grad()
        model.backward(out)
        w_dec = model.decoder.W_dec
        radial = (w_dec.grad * w_dec.detach()).sum(1)
        assert radial.abs().max() < 1e-6 * w_dec.grad.norm()
        optimizer.step()
        model.after_step()
        torch.testing.assert_close(w_dec.norm(dim=1), torch.ones(32))
    # The projection is the decoder's own hook.
    out = model(data(32, seed=9))
    optimizer.zero_grad()
    out.loss.backward()
    w_dec = model.decoder.W_dec
    assert (w_dec.grad * w_dec.detach()).sum(1).abs().max() > 1e-4 * w_dec.grad.norm()
    model.decoder.after_backward()
    assert (w_dec.grad * w_dec.detach()).sum(1).abs().max() < 1e-6 * w_dec.grad.norm()


def test_geometric_median_is_robust_and_is_the_median_in_1d():
    g = torch.Generator().manual_seed(0)
    line = torch.randn(101, 1, generator=g)
    assert geometric_median(line).item() == pytest.approx(line.median().item(), abs=1e-4)
    centre = torch.tensor([1.0, -2.0, 0.5])
    points = centre + 0.1 * torch.randn(200, 3, generator=g)
    points[:20] += 50.0  # 10% outliers
    median = geometric_median(points).float()
    assert (median - centre).norm() < 0.1 < (points.mean(0) - centre).norm()


def test_initialise_scales_to_unit_mean_squared_norm_and_sets_b_dec():
    model = make(b_dec_init="mean")
    x = data(256, scale=40.0)
    model.initialise(x)
    x_n = x * model.decoder.input_scale
    assert x_n.pow(2).sum(1).mean().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(model.decoder.b_dec.detach(), x_n.mean(0))
    tied = make(encoder_init_norm=0.0)  # an exact transpose
    torch.testing.assert_close(tied.encoder.W_enc, tied.decoder.W_dec)
    scaled = make(encoder_init_norm=0.5)  # the transpose's directions at another norm
    w_dec = scaled.decoder.W_dec
    torch.testing.assert_close(scaled.encoder.W_enc, 0.5 * w_dec / w_dec.norm(dim=1)[:, None])


def test_default_encoder_init_norm():
    """k-sparse SAEs start their (tied) encoder rows at 1/sqrt(3), as Gao et al.'s reference
    code and sparsify; relu and jumprelu keep an exact transpose. The resolved config (the
    one saved) records the value used."""
    topk = make()
    assert topk.config.body.options.encoder_init_norm == pytest.approx(1 / math.sqrt(3))
    torch.testing.assert_close(topk.encoder.W_enc, topk.decoder.W_dec / math.sqrt(3))
    for recipe in ("sae-batchtopk", "sae-abstopk"):
        assert make(recipe).config.body.options.encoder_init_norm == pytest.approx(1 / math.sqrt(3))
    for recipe in ("sae-relu", "sae-jumprelu"):
        model = make(recipe)
        assert model.config.body.options.encoder_init_norm == 0.0
        torch.testing.assert_close(model.encoder.W_enc, model.decoder.W_dec)


def test_topk_without_the_unit_norm_decoder_starts_from_an_exact_transpose():
    """The 1/sqrt(3) encoder rows go with unit-norm decoder rows; without the constraint the
    encoder is the transpose of the (norm 0.1) decoder, as in the old SAEConfig."""
    unconstrained = make(unit_norm_decoder=False)
    torch.testing.assert_close(unconstrained.encoder.W_enc, unconstrained.decoder.W_dec)


# ---------------------------------------------------------------- gradients everywhere
GRADIENT_CASES = {
    "relu": ("sae-relu", {}),
    "topk-sparse": ("sae-topk", {"dead_tokens": 1}),
    "topk-dense": ("sae-topk", {"sparse_decode": "dense", "dead_tokens": 1}),
    "abstopk": ("sae-abstopk", {}),
    "batchtopk-matryoshka": ("sae-batchtopk", {"matryoshka": (4, 16)}),
    "jumprelu": ("sae-jumprelu", {"bandwidth": 2.0}),
    "skip": ("sae-topk", {"output_shape": (6,), "skip": True}),
    "transcoder-skip": ("transcoder", {"output_shape": (6,), "skip": True}),
}


@pytest.mark.parametrize(("recipe", "options"), GRADIENT_CASES.values(), ids=GRADIENT_CASES)
def test_every_parameter_gets_a_gradient(recipe, options):
    model = make(recipe, **options)
    x = data(32)
    target = data(32, d=6, seed=3) if model.paired else None
    out = model(x, target=target)
    model.backward(out)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert set(out.terms) >= {"loss", "fvu", "mse", "l0"}
    assert all(not t.requires_grad and t.dim() == 0 for t in out.terms.values())


def test_step_forward_takes_a_batch():
    model = make(output_shape=(6,))
    out = model.step_forward(Batch(data(8), data(8, d=6)), step=3)
    assert out.reconstruction.shape == (8, 6)
    plain = make()
    assert plain.step_forward(Batch(data(8), None), step=0).reconstruction.shape == (8, 8)


# ---------------------------------------------------------------- folding
FOLDING_CASES = {
    "topk": ("sae-topk", {}),
    "relu": ("sae-relu", {}),
    "jumprelu": ("sae-jumprelu", {"threshold_init": 0.02}),
    "batchtopk": ("sae-batchtopk", {}),
    "topk-transcoder-skip": ("sae-topk", {"output_shape": (6,), "skip": True}),
    "transcoder-skip": ("transcoder", {"output_shape": (6,), "skip": True}),
}


@pytest.mark.parametrize(("recipe", "options"), FOLDING_CASES.values(), ids=FOLDING_CASES)
def test_folded_weights_give_identical_outputs_on_raw_activations(recipe, options):
    model = make(recipe, **options)
    x = data(128, scale=30.0)
    target = 7.0 * data(128, d=6, seed=5) + 3.0 if model.paired else None
    model.initialise(x, target)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(3):  # move every weight away from its initial value
        out = model(x, step=step, target=target)
        optimizer.zero_grad()
        model.backward(out)
        optimizer.step()
        model.after_step()
    model.eval()
    assert model.decoder.input_scale.item() != pytest.approx(1.0)
    folded = make(recipe, **options)
    folded.load_state_dict(model.folded_state_dict())
    folded.eval()
    assert folded.decoder.input_scale.item() == folded.decoder.target_scale.item() == 1.0
    with torch.no_grad():
        for a, b in [
            (model.reconstruct(x), folded.reconstruct(x)),
            (model.encode(x), folded.encode(x)),
            (model(x, target=target).reconstruction, folded(x, target=target).reconstruction),
        ]:
            assert (a - b).abs().max() <= 1e-5 * a.abs().max()
