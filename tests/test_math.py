"""The mathematics: closed forms against Monte-Carlo and torch.distributions, the ELBO as
the sum of its terms, and the schedules of the objectives."""

import math

import pytest
import torch
from torch import distributions as D

import aekit
from aekit.bottlenecks import gaussian_kl
from aekit.components import Dims
from aekit.likelihoods import LIKELIHOODS
from aekit.objectives import ramp

DIMS = Dims((3, 4), latent_dim=2)


def test_gaussian_kl_matches_monte_carlo_and_torch():
    torch.manual_seed(1)
    mu = torch.randn(5, 3)
    logvar = torch.randn(5, 3) * 0.5
    closed = gaussian_kl(mu, logvar)
    q = D.Normal(mu, (0.5 * logvar).exp())
    p = D.Normal(torch.zeros(()), torch.ones(()))
    assert torch.allclose(closed, D.kl_divergence(q, p), atol=1e-6)
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(closed, monte_carlo, atol=0.02)


def test_gaussian_kl_is_zero_only_at_the_prior():
    assert gaussian_kl(torch.zeros(4), torch.zeros(4)).abs().max() == 0
    assert (gaussian_kl(torch.tensor([0.1]), torch.tensor([0.0])) > 0).all()


def test_bernoulli_log_prob_matches_torch():
    logits = torch.randn(4, 3, 4)
    x = torch.bernoulli(torch.full((4, 3, 4), 0.3))
    head = LIKELIHOODS["bernoulli"](LIKELIHOODS["bernoulli"].Options(), DIMS)
    expected = D.Bernoulli(logits=logits).log_prob(x).sum((1, 2))
    assert torch.allclose(head.log_prob(logits, x), expected, atol=1e-5)
    assert torch.allclose(head.mean(logits), torch.sigmoid(logits))


def test_bernoulli_log_prob_of_many_draws_against_one_target_is_the_plain_formula():
    # The estimator's case: (S, B, ...) logits, one binary x (B, ...) broadcast across draws.
    logits = torch.randn(6, 4, 3, 4, dtype=torch.float64) * 4
    x = torch.bernoulli(torch.full((4, 3, 4), 0.3, dtype=torch.float64))
    head = LIKELIHOODS["bernoulli"](LIKELIHOODS["bernoulli"].Options(), DIMS)
    p = torch.sigmoid(logits)
    plain = (x * p.log() + (1 - x) * (1 - p).log()).sum((2, 3))
    torch.testing.assert_close(head.log_prob(logits, x), plain)
    assert head.log_prob(logits, x).shape == (6, 4)


@pytest.mark.parametrize("variance", ["fixed", "global", "pixel"])
@pytest.mark.parametrize("kind, dist", [("gaussian", D.Normal), ("laplace", D.Laplace)])
def test_location_scale_log_prob_matches_torch(kind, dist, variance):
    cls = LIKELIHOODS[kind]
    head = cls(cls.Options(variance=variance, sigma=0.3), DIMS)
    if variance == "pixel":
        with torch.no_grad():
            head.log_scale.copy_(torch.randn(3, 4) * 0.2 + math.log(0.3))
    mean = torch.randn(4, 3, 4)
    x = torch.randn(4, 3, 4)
    expected = dist(mean, head.scale().expand_as(mean)).log_prob(x).sum((1, 2))
    assert torch.allclose(head.log_prob(mean, x), expected, atol=1e-4)
    learned = [n for n, _ in head.named_parameters()]
    assert learned == ([] if variance == "fixed" else ["log_scale"])


def test_elbo_of_a_tiny_model_equals_the_sum_of_its_terms():
    model = aekit.build("vae", input_shape=(6,), latent_dim=3, hidden=(8,))
    x = torch.rand(10, 6).round()
    torch.manual_seed(3)
    out = model(x)
    b = out.bottleneck
    # Recompute every term by hand from the same sample z.
    logits = model.decoder(b.z)
    log_px = D.Bernoulli(logits=logits).log_prob(x).sum(1)
    q = D.Normal(b.params["mu"], (0.5 * b.params["logvar"]).exp())
    kl = D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(out.terms["nll"], -log_px.mean(), atol=1e-5)
    assert torch.allclose(out.terms["kl"], kl.mean(), atol=1e-5)
    assert torch.allclose(out.terms["elbo"], (log_px - kl).mean(), atol=1e-5)
    assert torch.allclose(out.loss, -out.terms["elbo"], atol=1e-5)


def test_beta_weights_the_kl_but_not_the_reported_elbo():
    model = aekit.build("beta-vae", input_shape=(6,), latent_dim=3, hidden=(8,))
    assert model.objective.options.beta == 4.0
    x = torch.rand(10, 6)
    out = model(x)
    t = out.terms
    assert torch.allclose(out.loss, t["nll"] + 4.0 * t["kl"], atol=1e-5)
    assert torch.allclose(t["elbo"], -(t["nll"] + t["kl"]), atol=1e-5)


def test_kl_warmup_is_driven_by_the_step_and_ends_at_beta():
    model = aekit.build("vae", input_shape=(6,), latent_dim=3, hidden=(8,), kl_warmup_steps=100)
    x = torch.rand(10, 6)
    weights = [float(model(x, step=s).terms["kl_weight"]) for s in (0, 25, 100, 1000)]
    assert weights == [0.0, 0.25, 1.0, 1.0]
    assert float(model(x, step=None).terms["kl_weight"]) == 1.0
    assert ramp(None, 10) == 1.0 and ramp(5, 0) == 1.0


def test_free_bits_clamp_each_dimension_in_the_loss_only():
    model = aekit.build("vae", input_shape=(6,), latent_dim=3, hidden=(8,), free_bits=0.5)
    x = torch.rand(10, 6)
    torch.manual_seed(0)
    out = model(x)
    kl_dims = out.bottleneck.kl.mean(0)
    expected = out.terms["nll"] + kl_dims.clamp(min=0.5).sum()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert torch.allclose(out.terms["kl"], kl_dims.sum(), atol=1e-5)  # reported unclamped


def test_capacity_objective_follows_the_paper():
    model = aekit.build(
        "beta-vae-capacity",
        input_shape=(6,),
        latent_dim=3,
        hidden=(8,),
        gamma=10.0,
        capacity_max=5.0,
        capacity_steps=1000,
    )
    x = torch.rand(10, 6)
    for step, capacity in [(0, 0.0), (500, 2.5), (1000, 5.0), (5000, 5.0), (None, 5.0)]:
        torch.manual_seed(0)
        out = model(x, step=step)
        t = out.terms
        assert float(t["capacity"]) == pytest.approx(capacity)
        expected = t["nll"] + 10.0 * (t["kl"] - capacity).abs()
        assert torch.allclose(out.loss, expected, atol=1e-4)


def test_reparameterised_samples_have_the_posterior_moments():
    model = aekit.build("vae", input_shape=(6,), latent_dim=2, hidden=(8,))
    x = torch.rand(1, 6).expand(50_000, 6)
    b = model.bottleneck(model.encoder(x))
    mu, std = b.params["mu"][0], (0.5 * b.params["logvar"][0]).exp()
    assert torch.allclose(b.z.mean(0), mu, atol=0.02)
    assert torch.allclose(b.z.std(0), std, atol=0.02)
    assert torch.equal(model.encode(x[:1]), mu[None])  # encoding is the mean, not a sample


def test_gradient_flows_through_the_sample_to_the_encoder():
    model = aekit.build("vae", input_shape=(6,), latent_dim=2, hidden=(8,))
    x = torch.rand(4, 6)
    out = model(x)
    nll_only = -model.likelihood.log_prob(model.decoder(out.latents), x).mean()
    nll_only.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "laplace"])
def test_likelihood_samples_have_the_distribution_moments(kind):
    cls = LIKELIHOODS[kind]
    options = cls.Options() if kind == "bernoulli" else cls.Options(variance="fixed", sigma=0.5)
    head = cls(options, Dims((200_000,), 2))
    params = torch.full((1, 200_000), 0.3)
    x = head.sample(params, generator=torch.Generator().manual_seed(0))
    if kind == "bernoulli":
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert x.mean().item() == pytest.approx(torch.sigmoid(torch.tensor(0.3)).item(), abs=0.005)
    elif kind == "gaussian":
        assert x.mean().item() == pytest.approx(0.3, abs=0.005)
        assert x.std().item() == pytest.approx(0.5, abs=0.005)
    else:  # E|x - mu| = b for a Laplace
        assert (x - 0.3).abs().mean().item() == pytest.approx(0.5, abs=0.005)
