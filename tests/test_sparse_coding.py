"""The sparse-coding objective (`aekit.objectives.sparse`): the L1 penalty weighted by decoder
norms and its warm-up, the L0 penalty's warm-up, AuxK on the dead latents, Matryoshka's nested
prefixes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

import aekit
from aekit.errors import AekitError
from aekit.objectives import ramp
from sae_helpers import data, make, pre_of


# ---------------------------------------------------------------- penalties and their warm-ups
def test_relu_l1_is_weighted_by_decoder_norms_and_warms_up_linearly():
    model = make("sae-relu", normalize=False, l1_coefficient=5.0, l1_warmup_steps=100)
    assert model.decoder.options.unit_norm_decoder is False
    with torch.no_grad():
        model.decoder.W_dec.mul_(torch.linspace(0.1, 3.0, 32)[:, None])
    x = data(16)
    model.initialise(x)
    z = F.relu(pre_of(model, x))
    l1 = (z * model.decoder.W_dec.norm(dim=1)).sum(1).mean() * 5.0 / math.sqrt(8)
    full = model(x, step=None).terms["l1"]
    torch.testing.assert_close(full, l1.detach())
    assert model(x, step=0).terms["l1"] == 0
    torch.testing.assert_close(model(x, step=25).terms["l1"], 0.25 * full)
    torch.testing.assert_close(model(x, step=500).terms["l1"], full)
    assert [ramp(s, 10) for s in (0, 5, 10, 20, None)] == [0.0, 0.5, 1.0, 1.0, 1.0]


def test_jumprelu_l0_penalty_warms_up_linearly():
    model = make("sae-jumprelu", l0_warmup_steps=40, threshold_init=0.05)
    x = data(16)
    full = model(x, step=None).terms["l0_penalty"]
    torch.testing.assert_close(model(x, step=10).terms["l0_penalty"], 0.25 * full)


# ---------------------------------------------------------------- AuxK
def test_aux_k_defaults_to_half_the_input_width():
    assert make(d_in=10, latent_dim=40).objective.options.aux_k == 5
    assert make(d_in=10, latent_dim=40, aux_k=3).objective.options.aux_k == 3


def auxk_model(**options):
    options = {"d_in": 4, "latent_dim": 16, "k": 1, "aux_k": 2, "dead_tokens": 1, **options}
    model = make(normalize=False, b_dec_init="zeros", **options)
    with torch.no_grad():
        model.encoder.b_enc.fill_(1.0)  # dead latents with positive pre-activations
        model.decoder.b_dec.copy_(torch.tensor([0.5, -1.0, 2.0, 0.3]))
    model.decoder.initialised.fill_(True)
    return model


def test_auxk_fits_the_residual_without_b_dec():
    model = auxk_model()
    x = data(4, d=4)
    out = model(x)
    pre = pre_of(model, x).detach()
    w_dec, b_dec = model.decoder.W_dec.detach(), model.decoder.b_dec.detach()
    z = torch.zeros_like(pre).scatter(1, pre.argmax(1, keepdim=True), pre.max(1, True).values)
    x_hat = z @ w_dec + b_dec
    dead = (z == 0).all(0)
    aux_pre = pre.masked_fill(~dead, -math.inf)
    top = aux_pre.topk(2, dim=1)
    e_hat = torch.zeros_like(pre).scatter(1, top.indices, F.relu(top.values)) @ w_dec
    e = x - x_hat
    expected = (
        min(int(dead.sum()) / 2, 1.0) * (e - e_hat).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    )
    torch.testing.assert_close(out.terms["auxk"], expected)
    torch.testing.assert_close(out.reconstruction, x_hat)


@pytest.mark.parametrize("sparse_decode", ["sparse", "dense"])
def test_auxk_gradient_reaches_only_dead_latents(sparse_decode):
    x = data(4, d=4)
    grads = []
    for coefficient in (1.0, 0.0):
        model = auxk_model(aux_coefficient=coefficient, sparse_decode=sparse_decode)
        out = model(x)
        model.backward(out)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    aux = {name: grads[0][name] - grads[1][name] for name in grads[0]}
    alive = model.bottleneck.tokens_since_fired == 0
    assert alive.any() and (~alive).any()
    # The residual is detached: nothing flows back through the main reconstruction.
    assert aux["decoder.W_dec"][alive].abs().max() < 1e-6
    assert aux["decoder.W_dec"][~alive].abs().max() > 1e-4


def test_auxk_is_zero_without_dead_latents():
    model = auxk_model(dead_tokens=10_000)
    out = model(data(4, d=4))
    assert out.terms["auxk"] == 0 and out.terms["dead"] == 0


# ---------------------------------------------------------------- matryoshka
def test_matryoshka_prefixes_are_checked_and_saved():
    with pytest.raises(AekitError, match="matryoshka prefixes must increase"):
        make(matryoshka=(8, 4))
    with pytest.raises(AekitError, match="matryoshka prefix 32 must be smaller"):
        make(matryoshka=(4, 32))
    model = make(matryoshka=[4, 16])
    assert model.objective.options.matryoshka == (4, 16)
    assert aekit.ModelConfig.from_dict(model.config.to_dict()) == model.config
    auto = make("sae-matryoshka", latent_dim=512)
    assert auto.objective.options.matryoshka == (64, 256)  # 64, 256, ... below the latents
    assert aekit.ModelConfig.from_dict(auto.config.to_dict()) == auto.config


@pytest.mark.parametrize("sparse_decode", ["sparse", "dense"])
def test_matryoshka_averages_the_fvu_of_each_prefix(sparse_decode):
    model = make(
        "sae-batchtopk", matryoshka=(4, 16), aux_coefficient=0.0, sparse_decode=sparse_decode
    )
    x = data(32)
    model.initialise(x)
    out = model(x)
    assert (out.bottleneck.z is None) == (sparse_decode == "sparse")
    z = out.bottleneck.dense_z().detach()
    w_dec, b_dec = model.decoder.W_dec.detach(), model.decoder.b_dec.detach()
    t = x * model.decoder.target_scale
    variance = (t - t.mean(0)).pow(2).sum()
    fvus = []
    for m in (4, 16, 32):
        fvu = (t - z[:, :m] @ w_dec[:m] - b_dec).pow(2).sum() / variance
        torch.testing.assert_close(out.terms[f"matryoshka_fvu_{m}"], fvu)
        fvus.append(fvu)
    torch.testing.assert_close(out.terms["fvu"], fvus[-1])
    torch.testing.assert_close(out.terms["loss"], torch.stack(fvus).mean())
