"""The sparse autoencoder's mathematics: activations, penalties, AuxK, the unit-norm constraint,
normalisation folding, and the sparse kernels against plain autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn import functional as F

from aekit.data.tensor_data import Batch
from aekit.errors import AekitError
from aekit.sae.activations import heaviside, jumprelu, warmup
from aekit.sae.config import SAEConfig
from aekit.sae.kernels import Pattern, sparse_decode, sparse_preacts
from aekit.sae.model import SparseAutoencoder, geometric_median


def make(seed: int = 0, **options) -> SparseAutoencoder:
    options = {"d_in": 8, "n_latents": 32, "k": 4, **options}
    torch.manual_seed(seed)
    return SparseAutoencoder(SAEConfig(**options))


def data(b: int = 64, d: int = 8, seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * (torch.randn(b, d, generator=g) + 0.5)


def pre_of(model: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """Pre-activations by the formula, independently of the model's code path."""
    x_n = x * model.input_scale
    enc_in = x_n if model.config.transcoder else x_n - model.b_dec
    return enc_in @ model.W_enc.T + model.b_enc


# ---------------------------------------------------------------- configuration
def test_config_defaults_validation_and_round_trip():
    assert SAEConfig(activation="relu").unit_norm_decoder is False
    assert SAEConfig(activation="topk").unit_norm_decoder is True
    resolved = SAEConfig(expansion=4).resolved(d_in=10)
    assert (resolved.n_latents, resolved.d_out, resolved.aux_k) == (40, 10, 5)
    config = SAEConfig(d_in=8, n_latents=32, matryoshka=[4, 16])
    assert SAEConfig.from_dict(config.to_dict()) == config
    with pytest.raises(AekitError, match=r"k=5000 is larger than the number of latents \(4096\)"):
        SAEConfig(d_in=256, k=5000)
    with pytest.raises(AekitError, match=r"k=5000 is larger than the number of latents \(4096\)"):
        SparseAutoencoder(SAEConfig(k=5000).resolved(d_in=256))
    with pytest.raises(AekitError, match="d_in is 0"):
        SparseAutoencoder(SAEConfig())
    with pytest.raises(AekitError, match="unknown SAE activation 'gelu'"):
        SAEConfig(activation="gelu")
    with pytest.raises(AekitError, match="matryoshka prefixes must increase"):
        SAEConfig(matryoshka=(8, 4))
    with pytest.raises(AekitError, match="matryoshka prefix 32 must be smaller"):
        SAEConfig(d_in=8, n_latents=32, matryoshka=(4, 32))
    with pytest.raises(AekitError, match="transcoder option"):
        SAEConfig(skip=True)
    with pytest.raises(AekitError, match="k-sparse activation"):
        SAEConfig(activation="jumprelu", sparse_decode="sparse")


def test_bad_inputs_are_named():
    model = make()
    with pytest.raises(AekitError, match=r"shape \(4, 5\); expected \(batch, 8\)"):
        model(torch.zeros(4, 5))
    with pytest.raises(AekitError, match=r"shape \(8,\)"):
        model.encode(torch.zeros(8))
    with pytest.raises(AekitError, match=r"dtype torch\.int64"):
        model.check_input(torch.zeros(4, 8, dtype=torch.long))
    bad = data(4)
    bad[1, 2] = math.nan
    with pytest.raises(AekitError, match="NaN"):
        model(bad)
    with pytest.raises(AekitError, match="reconstructs its input"):
        model(data(4), data(4))
    transcoder = make(transcoder=True, d_out=6)
    with pytest.raises(AekitError, match="needs target"):
        transcoder(data(4))
    with pytest.raises(AekitError, match=r"target has shape \(4, 5\); expected \(4, 6\)"):
        transcoder(data(4), torch.zeros(4, 5))


# ---------------------------------------------------------------- activations
def test_topk_keeps_exactly_k_nonnegative_largest():
    model = make(k=5)
    x = data(16)
    model.initialise(x)
    with torch.no_grad():
        model.b_enc.fill_(3.0)  # every pre-activation positive: exactly k non-zeros
    z = model.encode(x)
    pre = pre_of(model, x)
    assert ((z != 0).sum(1) == 5).all() and (z >= 0).all()
    assert torch.equal(z != 0, pre >= pre.topk(5, dim=1).values[:, -1:])
    out = model(x)
    assert out.values.shape == out.indices.shape == (16, 5)
    torch.testing.assert_close(out.values, pre.gather(1, out.indices))
    model.eval()
    torch.testing.assert_close(model.reconstruct(x), model.decode(z), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(x).reconstruction, model.reconstruct(x), rtol=1e-5, atol=1e-6)


def test_abstopk_selects_by_magnitude_and_keeps_signs():
    model = make(activation="abstopk", k=6)
    x = data(16)
    model.initialise(x)
    z = model.encode(x)
    pre = pre_of(model, x)
    assert ((z != 0).sum(1) == 6).all()
    assert (z < 0).any()  # bidirectional features keep their sign
    chosen = z != 0
    torch.testing.assert_close(z[chosen], pre[chosen])
    assert torch.equal(chosen, pre.abs() >= pre.abs().topk(6, dim=1).values[:, -1:])


def test_batchtopk_budget_threshold_and_inference():
    model = make(activation="batchtopk", k=3, normalize=False, b_dec_init="zeros")
    with torch.no_grad():
        model.b_enc.normal_().add_(2.0)  # all positive, unequal across latents
    x1, x2 = data(16, seed=1), data(16, seed=2)
    out = model(x1)
    selected = pre_of(model, x1).detach().flatten().topk(16 * 3).values
    assert out.terms["l0"] == 3.0  # exactly B k non-zeros over the batch
    torch.testing.assert_close(model.threshold, selected.min())
    theta1 = model.threshold.clone()
    model(x2)
    smallest2 = pre_of(model, x2).detach().flatten().topk(48).values.min()
    torch.testing.assert_close(model.threshold, 0.99 * theta1 + 0.01 * smallest2)
    model.eval()
    pre = pre_of(model, x2)
    torch.testing.assert_close(model.encode(x2), torch.where(pre > model.threshold, pre, 0.0))
    counts = (model.encode(x2) != 0).sum(1)
    assert counts.min() != counts.max()  # per example, not k per example


def test_batchtopk_training_rows_differ_in_count():
    model = make(activation="batchtopk", k=3, sparse_decode="dense")
    with torch.no_grad():
        model.b_enc.copy_(torch.linspace(0.5, 4.0, 32))  # all positive
    out = model(data(32))
    per_row = (out.latents != 0).sum(1)
    assert per_row.sum() == 32 * 3 and per_row.min() != per_row.max()


def test_jumprelu_straight_through_gradients_by_hand():
    theta, eps = torch.tensor([1.0], requires_grad=True), 0.5
    pre = torch.tensor([[0.9], [1.1], [1.3], [3.0], [0.5]], requires_grad=True)
    out = jumprelu(pre, theta, eps)
    torch.testing.assert_close(out.detach(), torch.tensor([[0.0], [1.1], [1.3], [3.0], [0.0]]))
    out.sum().backward()
    # |pre - theta| < eps / 2 for 0.9 and 1.1: d/dtheta = -(theta / eps) * 2
    torch.testing.assert_close(theta.grad, torch.tensor([-(1.0 / 0.5) * 2]))
    torch.testing.assert_close(pre.grad, torch.tensor([[0.0], [1.0], [1.0], [1.0], [0.0]]))
    theta.grad, pre.grad = None, None
    heaviside(pre, theta, eps).sum().backward()
    torch.testing.assert_close(theta.grad, torch.tensor([-(1 / 0.5) * 2]))
    assert pre.grad is None  # no gradient to the pre-activations through H


def test_jumprelu_model_threshold_gradient_matches_rectangle_kernel():
    lam, eps = 0.3, 0.5
    model = make(
        d_in=1,
        n_latents=1,
        activation="jumprelu",
        threshold_init=1.0,
        bandwidth=eps,
        l0_coefficient=lam,
        l0_warmup_steps=0,
        normalize=False,
        b_dec_init="zeros",
        unit_norm_decoder=False,
    )
    with torch.no_grad():
        model.W_enc.fill_(1.0)
        model.W_dec.fill_(2.0)
    x = torch.tensor([[0.9], [1.1], [1.3], [3.0], [0.5]])
    model.initialise(x)  # scales stay 1, b_dec zeros
    out = model(x)
    model.backward(out)
    b, theta = 5, 1.0
    z = x * (x > theta)
    dl_dz = 2 * (2 * z - x) * 2 / b  # mse = sum_b (x - 2 z)^2 / B
    window = ((x - theta).abs() < eps / 2).float()
    dl_dtheta = (dl_dz * -(theta / eps) * window).sum() + lam / b * (-(1 / eps) * window).sum()
    torch.testing.assert_close(model.log_threshold.grad, torch.tensor([theta * dl_dtheta]))
    assert out.terms["l0_penalty"] == pytest.approx(lam * 3 / 5)


def test_relu_l1_is_weighted_by_decoder_norms_and_warms_up_linearly():
    model = make(activation="relu", normalize=False, l1_coefficient=5.0, l1_warmup_steps=100)
    assert model.config.unit_norm_decoder is False
    with torch.no_grad():
        model.W_dec.mul_(torch.linspace(0.1, 3.0, 32)[:, None])
    x = data(16)
    model.initialise(x)
    z = F.relu(pre_of(model, x))
    l1 = (z * model.W_dec.norm(dim=1)).sum(1).mean() * 5.0 / math.sqrt(8)
    full = model(x, step=None).terms["l1"]
    torch.testing.assert_close(full, l1.detach())
    assert model(x, step=0).terms["l1"] == 0
    torch.testing.assert_close(model(x, step=25).terms["l1"], 0.25 * full)
    torch.testing.assert_close(model(x, step=500).terms["l1"], full)
    assert [warmup(s, 10) for s in (0, 5, 10, 20, None)] == [0.0, 0.5, 1.0, 1.0, 1.0]


def test_jumprelu_l0_penalty_warms_up_linearly():
    model = make(activation="jumprelu", l0_warmup_steps=40, threshold_init=0.05)
    x = data(16)
    full = model(x, step=None).terms["l0_penalty"]
    torch.testing.assert_close(model(x, step=10).terms["l0_penalty"], 0.25 * full)


# ---------------------------------------------------------------- AuxK
def auxk_model(**options) -> SparseAutoencoder:
    options = {"d_in": 4, "n_latents": 16, "k": 1, "aux_k": 2, "dead_tokens": 1, **options}
    model = make(normalize=False, b_dec_init="zeros", **options)
    with torch.no_grad():
        model.b_enc.fill_(1.0)  # dead latents with positive pre-activations
        model.b_dec.copy_(torch.tensor([0.5, -1.0, 2.0, 0.3]))
    model.initialised.fill_(True)
    return model


def test_auxk_fits_the_residual_without_b_dec():
    model = auxk_model()
    x = data(4, d=4)
    out = model(x)
    pre = pre_of(model, x).detach()
    z = torch.zeros_like(pre).scatter(1, pre.argmax(1, keepdim=True), pre.max(1, True).values)
    x_hat = z @ model.W_dec.detach() + model.b_dec.detach()
    dead = (z == 0).all(0)
    aux_pre = pre.masked_fill(~dead, -math.inf)
    top = aux_pre.topk(2, dim=1)
    e_hat = torch.zeros_like(pre).scatter(1, top.indices, F.relu(top.values)) @ model.W_dec.detach()
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
    alive = model.tokens_since_fired == 0
    assert alive.any() and (~alive).any()
    # The residual is detached: nothing flows back through the main reconstruction.
    assert aux["W_dec"][alive].abs().max() < 1e-6
    assert aux["W_dec"][~alive].abs().max() > 1e-4


def test_auxk_is_zero_without_dead_latents():
    model = auxk_model(dead_tokens=10_000)
    out = model(data(4, d=4))
    assert out.terms["auxk"] == 0 and out.terms["dead"] == 0


# ---------------------------------------------------------------- constraint and init
def test_unit_norm_decoder_projection_and_renormalisation():
    model = make(k=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(5):
        out = model(data(32, seed=step), step=step)
        optimizer.zero_grad()
        model.backward(out)
        radial = (model.W_dec.grad * model.W_dec.detach()).sum(1)
        assert radial.abs().max() < 1e-6 * model.W_dec.grad.norm()
        optimizer.step()
        model.after_step()
        torch.testing.assert_close(model.W_dec.norm(dim=1), torch.ones(32))


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
    x_n = x * model.input_scale
    assert x_n.pow(2).sum(1).mean().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(model.b_dec.detach(), x_n.mean(0))
    tied = make(encoder_init_norm=0.0)  # an exact transpose
    torch.testing.assert_close(tied.W_enc, tied.W_dec)
    scaled = make(encoder_init_norm=0.5)  # the transpose's directions at another norm
    torch.testing.assert_close(scaled.W_enc, 0.5 * scaled.W_dec / scaled.W_dec.norm(dim=1)[:, None])


def test_default_encoder_init_norm():
    """k-sparse SAEs start their (tied) encoder rows at 1/sqrt(3), as Gao et al.'s reference
    code and sparsify; relu and jumprelu keep an exact transpose. The resolved config (the
    one saved) records the value used."""
    topk = make()
    assert topk.config.encoder_init_norm == pytest.approx(1 / math.sqrt(3))
    torch.testing.assert_close(topk.W_enc, topk.W_dec / math.sqrt(3))
    for activation in ("batchtopk", "abstopk"):
        assert make(activation=activation).config.encoder_init_norm == pytest.approx(
            1 / math.sqrt(3)
        )
    for activation in ("relu", "jumprelu"):
        model = make(activation=activation)
        assert model.config.encoder_init_norm == 0.0
        torch.testing.assert_close(model.W_enc, model.W_dec)
    unconstrained = make(unit_norm_decoder=False)  # topk without the unit-norm decoder
    torch.testing.assert_close(unconstrained.W_enc, unconstrained.W_dec)


# ---------------------------------------------------------------- gradients everywhere
@pytest.mark.parametrize(
    "options",
    [
        {"activation": "relu"},
        {"activation": "topk", "dead_tokens": 1},
        {"activation": "topk", "sparse_decode": "dense", "dead_tokens": 1},
        {"activation": "abstopk"},
        {"activation": "batchtopk", "matryoshka": (4, 16)},
        {"activation": "jumprelu", "bandwidth": 2.0},
        {"activation": "topk", "transcoder": True, "d_out": 6, "skip": True},
    ],
    ids=[
        "relu",
        "topk-sparse",
        "topk-dense",
        "abstopk",
        "batchtopk-matryoshka",
        "jumprelu",
        "skip",
    ],
)
def test_every_parameter_gets_a_gradient(options):
    model = make(**options)
    x = data(32)
    target = data(32, d=6, seed=3) if options.get("transcoder") else None
    out = model(x, target)
    model.backward(out)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert set(out.terms) >= {"loss", "fvu", "mse", "l0"}
    assert all(not t.requires_grad and t.dim() == 0 for t in out.terms.values())


def test_step_forward_takes_a_batch():
    model = make(transcoder=True, d_out=6)
    out = model.step_forward(Batch(data(8), data(8, d=6)), step=3)
    assert out.reconstruction.shape == (8, 6)
    plain = make()
    assert plain.step_forward(Batch(data(8), None), step=0).reconstruction.shape == (8, 8)


# ---------------------------------------------------------------- folding
@pytest.mark.parametrize(
    "options",
    [
        {"activation": "topk"},
        {"activation": "relu"},
        {"activation": "jumprelu", "threshold_init": 0.02},
        {"activation": "batchtopk"},
        {"activation": "topk", "transcoder": True, "d_out": 6, "skip": True},
    ],
    ids=["topk", "relu", "jumprelu", "batchtopk", "transcoder-skip"],
)
def test_folded_weights_give_identical_outputs_on_raw_activations(options):
    model = make(**options)
    transcoder = options.get("transcoder", False)
    x = data(128, scale=30.0)
    target = 7.0 * data(128, d=6, seed=5) + 3.0 if transcoder else None
    model.initialise(x, target)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(3):  # move every weight away from its initial value
        out = model(x, target, step=step)
        optimizer.zero_grad()
        model.backward(out)
        optimizer.step()
        model.after_step()
    model.eval()
    assert model.input_scale.item() != pytest.approx(1.0)
    folded = make(**options)
    folded.load_state_dict(model.folded_state_dict())
    folded.eval()
    assert folded.input_scale.item() == folded.target_scale.item() == 1.0
    with torch.no_grad():
        for a, b in [
            (model.reconstruct(x), folded.reconstruct(x)),
            (model.encode(x), folded.encode(x)),
            (model(x, target).reconstruction, folded(x, target).reconstruction),
        ]:
            assert (a - b).abs().max() <= 1e-5 * a.abs().max()


# ---------------------------------------------------------------- sparse kernels
def test_kernels_pass_gradcheck_in_float64():
    g = torch.Generator().manual_seed(0)
    b, d, n, k = 5, 4, 9, 3
    x = torch.randn(b, d, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(n, d, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(n, dtype=torch.float64, generator=g, requires_grad=True)
    pre = (x @ w.T + bias).detach()
    per_row = Pattern.from_topk(pre.topk(k, dim=1).indices, n)
    batch = Pattern.from_flat(pre.flatten().topk(b * k).indices, b, n)
    for pattern in (per_row, batch):
        assert gradcheck(lambda x, w, bias, p=pattern: sparse_preacts(x, w, bias, p), (x, w, bias))
        torch.testing.assert_close(
            sparse_preacts(x, w, bias, pattern, pre), sparse_preacts(x, w, bias, pattern)
        )
    values = torch.randn(b * k, dtype=torch.float64, generator=g, requires_grad=True)
    w_dec = torch.randn(n, 6, dtype=torch.float64, generator=g, requires_grad=True)
    grouped = per_row.grouped(torch.tensor([2, 5]))
    for pattern in (per_row, grouped):
        assert gradcheck(lambda v, w, p=pattern: sparse_decode(v, w, p), (values, w_dec))
    parts = sparse_decode(values, w_dec, grouped).view(b, 3, 6)
    dense = per_row.dense(values)
    for i, (lo, hi) in enumerate([(0, 2), (2, 5), (5, 9)]):
        torch.testing.assert_close(parts[:, i], dense[:, lo:hi] @ w_dec[lo:hi])


@pytest.mark.parametrize(
    "options",
    [
        {"activation": "topk"},
        {"activation": "abstopk"},
        {"activation": "batchtopk"},
        {"activation": "topk", "matryoshka": (4, 16)},
        {"activation": "batchtopk", "matryoshka": (8,)},
        {"activation": "topk", "transcoder": True, "d_out": 6, "skip": True},
    ],
    ids=["topk", "abstopk", "batchtopk", "topk-matryoshka", "batchtopk-matryoshka", "skip"],
)
def test_sparse_and_dense_paths_agree(options):
    x = data(48)
    target = data(48, d=6, seed=4) if options.get("transcoder") else None
    outs, grads = [], []
    for mode in ("sparse", "dense"):
        # dead_tokens=1: latents that do not fire in a batch are dead, so AuxK runs too.
        model = make(sparse_decode=mode, dead_tokens=1, n_latents=128, **options)
        model.initialise(x, target)
        out = model(x, target, step=1)
        model.backward(out)
        outs.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert outs[0].terms["auxk"] > 0
    for name in outs[0].terms:
        torch.testing.assert_close(outs[0].terms[name], outs[1].terms[name], rtol=1e-5, atol=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-5)


def test_auto_picks_the_kernels_when_k_is_small():
    assert make(k=8, n_latents=64).uses_sparse_kernels
    assert not make(k=9, n_latents=64).uses_sparse_kernels
    assert make(k=9, n_latents=64, sparse_decode="sparse").uses_sparse_kernels
    assert not make(activation="jumprelu").uses_sparse_kernels


def test_encode_sparse_pads_variable_counts():
    model = make(activation="jumprelu", threshold_init=0.1)
    x = data(16)
    code = model.encode_sparse(x)
    torch.testing.assert_close(model.decode_sparse(*code), model.decode(model.encode(x)))


# ---------------------------------------------------------------- learning
def test_topk_recovers_planted_sparse_features():
    """64 unit features in 16 dimensions, 3 active per example: a TopK SAE with k = 3 finds
    nearly every one (mean over features of the best decoder cosine)."""
    g = torch.Generator().manual_seed(123)
    features = F.normalize(torch.randn(64, 16, generator=g), dim=1)

    def sample(b: int) -> torch.Tensor:
        active = torch.rand(b, 64, generator=g).argsort(1)[:, :3]
        magnitude = torch.rand(b, 3, generator=g) + 0.5
        return torch.zeros(b, 64).scatter(1, active, magnitude) @ features

    model = make(seed=0, d_in=16, n_latents=128, k=3, dead_tokens=1280)
    model.initialise(sample(2048))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = (features @ model.W_dec.detach().T).max(1).values.mean()
    for step in range(300):
        out = model(sample(256), step=step)
        optimizer.zero_grad()
        model.backward(out)
        optimizer.step()
        model.after_step()
    recovered = (features @ model.W_dec.detach().T).max(1).values.mean()
    assert before < 0.7 and recovered > 0.9
