"""The sparse bottlenecks (`aekit.bottlenecks.sparse`): which latents TopK, AbsTopK, BatchTopK
and JumpReLU keep and with what values, the dead-latent counter, sparse codes as (values,
indices), JumpReLU's straight-through gradients, TopK's k schedule and its linear units."""

from __future__ import annotations

import pytest
import torch

import aekit
from aekit.bottlenecks.sparse import heaviside, jumprelu
from aekit.data.tensor_data import Batch
from aekit.errors import AekitError
from aekit.registry import model_config
from sae_helpers import data, make, pre_of


# ---------------------------------------------------------------- options
def test_bottleneck_options_are_checked_at_build_time():
    with pytest.raises(AekitError, match=r"k=5000 is larger than the number of latents \(4096\)"):
        aekit.build("sae-topk", (256,), k=5000)
    config = model_config("sae-topk", (256,), k=5000)  # a saved config is checked when built
    with pytest.raises(AekitError, match=r"k=5000 is larger than the number of latents \(4096\)"):
        aekit.build(config)
    with pytest.raises(AekitError, match="unknown bottleneck 'gelu'"):
        make(bottleneck="gelu")
    # The kernels are a k-sparse bottleneck's option; JumpReLU does not have it.
    with pytest.raises(AekitError, match="has no option 'sparse_decode'"):
        make("sae-jumprelu", sparse_decode="sparse")


# ---------------------------------------------------------------- topk and abstopk
def test_topk_keeps_exactly_k_nonnegative_largest():
    model = make(k=5)
    x = data(16)
    model.initialise(x)
    with torch.no_grad():
        model.encoder.b_enc.fill_(3.0)  # every pre-activation positive: exactly k non-zeros
    z = model.encode(x)
    pre = pre_of(model, x)
    assert ((z != 0).sum(1) == 5).all() and (z >= 0).all()
    assert torch.equal(z != 0, pre >= pre.topk(5, dim=1).values[:, -1:])
    out = model(x)
    values, indices = out.bottleneck.sparse.per_row(5)
    assert values.shape == indices.shape == (16, 5)
    torch.testing.assert_close(values, pre.gather(1, indices))
    model.eval()
    torch.testing.assert_close(model.reconstruct(x), model.decode(z), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(x).reconstruction, model.reconstruct(x), rtol=1e-5, atol=1e-6)


def test_abstopk_selects_by_magnitude_and_keeps_signs():
    model = make("sae-abstopk", k=6)
    x = data(16)
    model.initialise(x)
    z = model.encode(x)
    pre = pre_of(model, x)
    assert ((z != 0).sum(1) == 6).all()
    assert (z < 0).any()  # bidirectional features keep their sign
    chosen = z != 0
    torch.testing.assert_close(z[chosen], pre[chosen])
    assert torch.equal(chosen, pre.abs() >= pre.abs().topk(6, dim=1).values[:, -1:])


# ---------------------------------------------------------------- batchtopk
def test_batchtopk_budget_threshold_and_inference():
    model = make("sae-batchtopk", k=3, normalize=False, b_dec_init="zeros")
    with torch.no_grad():
        model.encoder.b_enc.normal_().add_(2.0)  # all positive, unequal across latents
    x1, x2 = data(16, seed=1), data(16, seed=2)
    out = model(x1)
    selected = pre_of(model, x1).detach().flatten().topk(16 * 3).values
    assert out.terms["l0"] == 3.0  # exactly B k non-zeros over the batch
    threshold = model.bottleneck.threshold
    torch.testing.assert_close(threshold, selected.min())
    theta1 = threshold.clone()
    model(x2)
    smallest2 = pre_of(model, x2).detach().flatten().topk(48).values.min()
    torch.testing.assert_close(threshold, 0.99 * theta1 + 0.01 * smallest2)
    model.eval()
    pre = pre_of(model, x2)
    torch.testing.assert_close(model.encode(x2), torch.where(pre > threshold, pre, 0.0))
    counts = (model.encode(x2) != 0).sum(1)
    assert counts.min() != counts.max()  # per example, not k per example


def test_batchtopk_calibration_is_the_mean_smallest_kept_value_over_batches():
    model = make("sae-batchtopk", k=3, normalize=False, b_dec_init="zeros")
    batches = [data(16, seed=s) for s in range(3)]
    expected = torch.stack([
        torch.relu(pre_of(model, x)).detach().flatten().topk(16 * 3).values.min()
        for x in batches
    ]).mean()  # fmt: skip
    model.train()
    model.calibrate(Batch(x, None) for x in batches)
    torch.testing.assert_close(model.bottleneck.threshold, expected)
    assert model.training  # the mode is restored


@pytest.mark.parametrize("k", [4, 16])
def test_batchtopk_held_out_l0_is_k_after_a_short_run(k):
    """Bussmann et al. 2024: the inference threshold keeps k latents per example on average.
    A moving average alone lags a short run (4.9 at k = 4 in the quick suite); the threshold
    calibrated from each epoch's final weights is within 10 % of k."""
    from aekit.data import TensorData
    from aekit.data.activations.synthetic import make_sparse_data
    from aekit.eval import evaluate
    from aekit.train import TrainConfig, Trainer

    x, _, _ = make_sparse_data(6144, 16, 64, active=4.0, seed=0)
    model = make("sae-batchtopk", d_in=16, latent_dim=128, k=k)
    config = TrainConfig(epochs=2, batch_size=512, lr=1e-3, progress=False, nll_k=0)
    Trainer(model, TensorData(x[:4096]), None, config).fit()
    l0 = evaluate(model, TensorData(x[4096:]))["l0"]
    assert abs(l0 - k) < 0.1 * k


def test_batchtopk_training_rows_differ_in_count():
    model = make("sae-batchtopk", k=3, sparse_decode="dense")
    with torch.no_grad():
        model.encoder.b_enc.copy_(torch.linspace(0.5, 4.0, 32))  # all positive
    out = model(data(32))
    z = out.bottleneck.z
    assert z is not None  # the dense path gives the (B, n) latents
    per_row = (z != 0).sum(1)
    assert per_row.sum() == 32 * 3 and per_row.min() != per_row.max()


# ---------------------------------------------------------------- jumprelu
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
        "sae-jumprelu",
        d_in=1,
        latent_dim=1,
        threshold_init=1.0,
        bandwidth=eps,
        l0_coefficient=lam,
        l0_warmup_steps=0,
        normalize=False,
        b_dec_init="zeros",
        unit_norm_decoder=False,
    )
    with torch.no_grad():
        model.encoder.W_enc.fill_(1.0)
        model.decoder.W_dec.fill_(2.0)
    x = torch.tensor([[0.9], [1.1], [1.3], [3.0], [0.5]])
    model.initialise(x)  # scales stay 1, b_dec zeros
    out = model(x)
    model.backward(out)
    b, theta = 5, 1.0
    z = x * (x > theta)
    dl_dz = 2 * (2 * z - x) * 2 / b  # mse = sum_b (x - 2 z)^2 / B
    window = ((x - theta).abs() < eps / 2).float()
    dl_dtheta = (dl_dz * -(theta / eps) * window).sum() + lam / b * (-(1 / eps) * window).sum()
    grad = model.bottleneck.log_threshold.grad
    torch.testing.assert_close(grad, torch.tensor([theta * dl_dtheta]))
    assert out.terms["l0_penalty"] == pytest.approx(lam * 3 / 5)


# ---------------------------------------------------------------- codes and the dead counter
def test_encode_sparse_pads_variable_counts():
    model = make("sae-jumprelu", threshold_init=0.1)
    x = data(16)
    code = model.encode_sparse(x)
    torch.testing.assert_close(model.decode_sparse(*code), model.decode(model.encode(x)))


def test_dead_counter_counts_rows_since_a_latent_last_fired():
    model = make(d_in=4, latent_dim=16, k=1, dead_tokens=5, normalize=False, b_dec_init="zeros")
    with torch.no_grad():
        model.encoder.b_enc[0] = 100.0  # latent 0 wins every row; the others never fire
    since = model.bottleneck.tokens_since_fired
    assert model(data(3, d=4)).terms["dead"] == 0  # 3 rows < 5
    assert since[0] == 0 and (since[1:] == 3).all()
    assert model(data(3, d=4, seed=2)).terms["dead"] == 15 / 16  # 6 rows >= 5
    with torch.no_grad():
        model.encoder.b_enc[5] = 200.0  # latent 5 takes over
    model(data(2, d=4, seed=3))
    assert since[5] == 0 and since[0] == 2 and since[1] == 8
    model.eval()
    model(data(4, d=4))  # inference does not count
    assert since[5] == 0 and since[1] == 8


# ---------------------------------------------------------------- topk's k schedule, linear units
def test_topk_k_falls_linearly_from_k_start():
    model = make(k=4, k_start=16, k_steps=10)
    x = data(8)
    model.initialise(x)
    with torch.no_grad():
        model.encoder.b_enc.fill_(3.0)  # every pre-activation positive: l0 is k
    for step in range(13):
        assert model(x, step=step).terms["l0"] == max(4, round(16 - 12 * step / 10)), step
    assert model(x, step=None).terms["l0"] == 4  # the schedule's end
    assert model.bottleneck.schedule_end() == model.schedule_end() == 10
    model.eval()
    assert model(x, step=0).terms["l0"] == 4  # inference keeps k
    assert ((model.encode(x) != 0).sum(1) == 4).all()
    assert make(k=4).schedule_end() == 0
    with pytest.raises(AekitError, match=r"k_start \(2\) must be at least k \(4\)"):
        make(k=4, k_start=2, k_steps=10)
    with pytest.raises(AekitError, match=r"k=40 is larger than the number of latents \(32\)"):
        make(k=4, k_start=40, k_steps=10)


def test_topk_without_rectify_keeps_negative_values():
    """Makhzani & Frey's k-sparse autoencoder: linear units, the k largest kept as they are."""
    x = data(16)
    for rectify in (True, False):
        model = make(k=4, rectify=rectify)
        model.initialise(x)
        with torch.no_grad():
            model.encoder.b_enc.fill_(-5.0)  # every pre-activation negative
        pre = pre_of(model, x)
        z = model.encode(x)
        values, _ = model(x).bottleneck.sparse.per_row(4)
        if rectify:
            assert (z == 0).all() and (values == 0).all()
            continue
        assert ((z != 0).sum(1) == 4).all() and (z[z != 0] < 0).all() and (values < 0).all()
        assert torch.equal(z != 0, pre >= pre.topk(4, dim=1).values[:, -1:])
        torch.testing.assert_close(z[z != 0], pre[z != 0])


def test_topk_runs_on_an_image_mlp_body():
    model = aekit.build("ksae", (1, 8, 8), k=5, latent_dim=40)
    x = torch.rand(16, 1, 8, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    out = model(x, step=0)
    optimizer.zero_grad()
    model.backward(out)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    optimizer.step()
    model.after_step()
    for name, p in model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name
    z = model.encode(x)
    assert z.shape == (16, 40) and ((z != 0).sum(1) == 5).all()
    assert model.reconstruct(x).shape == x.shape
