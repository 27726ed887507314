"""The mathematics of the tighter bounds, priors, Wasserstein objectives and the likelihood
estimator: closed forms, known limits and exact identities."""

import math

import pytest
import torch
from torch import nn

import aekit
from aekit.eval import gradient_snr, importance_sampled_nll, log_likelihood
from aekit.objectives.importance import iwae_bound, miwae_bound
from aekit.objectives.matching import imq_mmd, sliced_wasserstein
from aekit.priors import PRIORS, mixture_log_prob, prior_from_sampler
from conftest import TINY_NET

D_X, D_Z, SIGMA = 5, 2, 0.5
SCALES = torch.tensor([2.0, 1.0])


def ppca(perturb: float = 0.0) -> tuple[aekit.Autoencoder, torch.Tensor, torch.Tensor]:
    """Probabilistic PCA as a VAE: p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I) with
    orthogonal columns of W, so that the exact posterior is diagonal; the encoder is that
    posterior, shifted by `perturb` in its mean and log-variance. Returns the model, W, b."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(D_X, D_X, generator=g))
    w, b = q[:, :D_Z] * SCALES, torch.randn(D_X, generator=g)
    precision = SCALES.pow(2) + SIGMA**2  # diagonal of W^T W + sigma^2 I
    a = w.T / precision[:, None]  # posterior mean = a (x - b)
    encoder, decoder = nn.Linear(D_X, 2 * D_Z), nn.Linear(D_Z, D_X)
    with torch.no_grad():
        encoder.weight.zero_()
        encoder.weight[:D_Z] = a
        encoder.bias[:D_Z] = -a @ b + perturb
        encoder.bias[D_Z:] = torch.log(SIGMA**2 / precision) + perturb
        decoder.weight.copy_(w)
        decoder.bias.copy_(b)
    model = aekit.build(
        "vae", (D_X,), D_Z, likelihood="gaussian", variance="fixed", sigma=SIGMA,
        encoder=encoder, decoder=decoder,
    )  # fmt: skip
    return model.eval(), w, b


def marginal_log_likelihood(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cov = w @ w.T + SIGMA**2 * torch.eye(D_X)
    return torch.distributions.MultivariateNormal(b, cov).log_prob(x)


def ppca_data(n: int = 64) -> torch.Tensor:
    return torch.randn(n, D_X, generator=torch.Generator().manual_seed(2)) * 2


# ---------------------------------------------------------------- the likelihood estimator
def test_importance_sampling_with_the_exact_posterior_is_exact_for_any_k():
    model, w, b = ppca()
    x = ppca_data()
    exact = marginal_log_likelihood(x, w, b)
    for k in (1, 7):
        assert torch.allclose(log_likelihood(model, x, k), exact, atol=1e-4)


def test_importance_sampled_nll_converges_to_the_ppca_marginal_likelihood():
    model, w, b = ppca(perturb=0.4)
    x = ppca_data(32)
    exact = marginal_log_likelihood(x, w, b)
    gaps = [float((exact - log_likelihood(model, x, k)).mean()) for k in (1, 50, 5000)]
    assert gaps[0] > gaps[1] > gaps[2] > -0.01  # a bound in expectation, tightening with k
    assert gaps[0] > 0.2 and gaps[2] < 0.02


def test_chunking_does_not_change_the_estimate():
    model, _, _ = ppca()
    x = ppca_data(16)
    one_pass = log_likelihood(model, x, 300, max_draws=10**6)
    chunked = log_likelihood(model, x, 300, max_draws=50)  # 3 draws per pass, 100 passes
    assert torch.allclose(one_pass, chunked, atol=1e-4)


def test_likelihood_at_k_1_is_the_monte_carlo_elbo():
    model = aekit.build("vae", (1, 8, 8), 3, **TINY_NET).eval()
    x = torch.rand(6, 1, 8, 8).bernoulli()
    torch.manual_seed(5)
    out = model(x, step=None)
    elbo = out.log_px[0] + out.bottleneck.log_prior[0] - out.bottleneck.log_q[0]
    torch.manual_seed(5)
    assert torch.allclose(log_likelihood(model, x, 1), elbo, atol=1e-5)
    # and the Monte-Carlo KL agrees with the analytic one in expectation
    b = model.bottleneck(model.features(x, None), 20_000)
    assert torch.allclose((b.log_q - b.log_prior).mean(0), b.kl.sum(1), rtol=0.05, atol=0.05)


def test_nll_report_states_k_and_units_and_rejects_bad_k():
    model = aekit.build("vae", (10,), 2, hidden=(8,))
    data = aekit.TensorData(torch.rand(20, 10).bernoulli())
    result = importance_sampled_nll(model, data, k=10)
    assert result["marginal_nll_k"] == 10 and result["marginal_nll_n"] == 20
    assert "k=10" in result["marginal_nll_estimator"]
    bits = result["marginal_nll"] / (10 * math.log(2))
    assert result["marginal_nll_bits_per_dim"] == pytest.approx(bits)
    with pytest.raises(aekit.AekitError, match="k must be at least 1 \\(got 0\\)"):
        importance_sampled_nll(model, data, k=0)
    with pytest.raises(aekit.AekitError, match="no posterior density"):
        importance_sampled_nll(aekit.build("ae", (10,), 2, hidden=(8,)), data, k=5)


# ---------------------------------------------------------------- IWAE and its variants
def test_bounds_reduce_to_each_other_in_their_limits():
    log_w = torch.randn(12, 5) * 3
    elbo = log_w.mean(0)
    assert torch.allclose(iwae_bound(log_w[:1]), log_w[0])
    assert torch.allclose(miwae_bound(log_w, m=1), iwae_bound(log_w))
    assert torch.allclose(miwae_bound(log_w, m=12), elbo)
    assert torch.allclose(
        miwae_bound(log_w, m=3), torch.stack([iwae_bound(g) for g in log_w.view(3, 4, 5)]).mean(0)
    )
    # Jensen: ELBO <= MIWAE <= IWAE, and the log-mean-exp survives weights of e^1000
    assert (elbo <= miwae_bound(log_w, 3) + 1e-6).all()
    assert (miwae_bound(log_w, 3) <= iwae_bound(log_w) + 1e-6).all()
    assert torch.isfinite(iwae_bound(log_w + 1000)).all()


@pytest.mark.parametrize(
    "name, options, reference",
    [
        ("iwae", {"k": 1}, "elbo"),
        ("miwae", {"m": 1, "k": 6}, "iwae"),
        ("miwae", {"m": 6, "k": 1}, "elbo"),
        ("ciwae", {"k": 6, "beta": 1.0}, "elbo"),
        ("ciwae", {"k": 6, "beta": 0.0}, "iwae"),
    ],
)
def test_objective_losses_match_their_limits(name, options, reference):
    model = aekit.build(name, (1, 8, 8), 3, **TINY_NET, **options)
    x = torch.rand(4, 1, 8, 8).bernoulli()
    torch.manual_seed(3)
    out = model(x)
    log_w = out.log_px + out.bottleneck.log_prior - out.bottleneck.log_q
    expected = -(log_w.mean(0) if reference == "elbo" else iwae_bound(log_w)).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_piwae_trains_the_decoder_on_iwae_and_the_encoder_on_miwae():
    def grads(name, **options):
        torch.manual_seed(0)
        model = aekit.build(name, (1, 8, 8), 3, **TINY_NET, **options)
        torch.manual_seed(9)
        model.backward(model(torch.rand(5, 1, 8, 8).round()))
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    piwae = grads("piwae", m=3, k=4)
    iwae = grads("iwae", k=12)
    miwae = grads("miwae", m=3, k=4)
    for name, g in piwae.items():
        reference = iwae if name.startswith("decoder") else miwae
        assert torch.allclose(g, reference[name], atol=1e-6), name
    assert not torch.allclose(iwae["encoder.net.0.weight"], miwae["encoder.net.0.weight"])


def test_gradient_snr_of_the_encoder_falls_and_of_the_decoder_rises_with_k():
    torch.manual_seed(0)
    model = aekit.build("iwae", (1, 8, 8), 4, **TINY_NET)
    x = torch.rand(16, 1, 8, 8).round()
    snr = gradient_snr(model, x, ks=(1, 64), repeats=40)
    assert snr["k"] == [1, 64]
    assert snr["encoder_snr"][1] < snr["encoder_snr"][0]
    assert snr["decoder_snr"][1] > snr["decoder_snr"][0]
    assert model.objective.options.k == 5  # the model's own objective is restored


def test_bad_sample_counts_are_named():
    for name, option in (("iwae", "k"), ("miwae", "m"), ("ciwae", "k")):
        with pytest.raises(aekit.AekitError, match=f"{option} must be at least 1 \\(got 0\\)"):
            aekit.build(name, (10,), 2, **{option: 0})


# ---------------------------------------------------------------- priors
def test_prior_densities_match_their_definitions():
    z = torch.randn(50, 3) * 2
    means, logvars = torch.randn(4, 3), torch.randn(4, 3) * 0.3
    brute = torch.logsumexp(
        torch.distributions.Normal(means, (0.5 * logvars).exp()).log_prob(z[:, None]).sum(-1),
        dim=1,
    ) - math.log(4)
    assert torch.allclose(mixture_log_prob(z, means, logvars), brute, atol=1e-4)
    dims = aekit.components.Dims((4,), 3)
    normal = PRIORS["normal"](dims)
    assert torch.allclose(normal.log_prob(z), torch.distributions.Normal(0, 1).log_prob(z).sum(1))
    uniform = PRIORS["uniform"](dims)
    inside = uniform.sample(100)
    assert inside.abs().max() <= 1
    assert torch.allclose(uniform.log_prob(inside), torch.full((100,), -3 * math.log(2)))
    assert uniform.log_prob(torch.full((1, 3), 1.5)).item() == -math.inf
    ring = PRIORS["ring"](aekit.components.Dims((4,), 2)).sample(2000)
    assert ring.norm(dim=1).mean() == pytest.approx(1.0, abs=0.01)


def test_vamp_prior_is_the_mixture_of_posteriors_at_the_pseudo_inputs():
    model = aekit.build("vamp", (1, 8, 8), 3, **TINY_NET, prior_components=7)
    prior = model.bottleneck.prior
    mu, logvar = model.encoder(prior.pseudo_inputs).chunk(2, dim=1)
    z = torch.randn(10, 3)
    brute = torch.logsumexp(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z[:, None]).sum(-1), 1
    ) - math.log(7)
    assert torch.allclose(prior.log_prob(z), brute, atol=1e-4)
    assert model.sample(5).shape == (5, 1, 8, 8)
    x = torch.rand(4, 1, 8, 8).round()
    out = model(x)
    assert out.bottleneck.kl is None and torch.isfinite(out.terms["kl"])
    out.loss.backward()
    assert prior.pseudo_inputs.grad.abs().sum() > 0  # the pseudo-inputs are learned


def test_hierarchical_densities_and_prior_sampling():
    model = aekit.build("hvae", (1, 8, 8), 4, **TINY_NET, top_dim=2)
    bottleneck = model.bottleneck
    x = torch.rand(3, 1, 8, 8).round()
    h = model.features(x, None)
    torch.manual_seed(1)
    out = bottleneck(h, 2)
    # re-derive both densities from the same draws
    torch.manual_seed(1)
    mu1, logvar1 = h.chunk(2, 1)
    eps1 = torch.randn(2, 3, 4)
    z1 = mu1 + (0.5 * logvar1).exp() * eps1
    n = torch.distributions.Normal
    mu2, logvar2 = bottleneck.up(z1).chunk(2, -1)
    z2 = mu2 + (0.5 * logvar2).exp() * torch.randn_like(mu2)
    pm, plv = bottleneck.prior_net(z2).chunk(2, -1)
    log_q = n(mu1, (0.5 * logvar1).exp()).log_prob(z1).sum(-1) + n(
        mu2, (0.5 * logvar2).exp()
    ).log_prob(z2).sum(-1)
    log_p = n(pm, (0.5 * plv).exp()).log_prob(z1).sum(-1) + n(0, 1).log_prob(z2).sum(-1)
    assert torch.allclose(out.z, z1.reshape(6, 4), atol=1e-6)
    assert torch.allclose(out.log_q, log_q, atol=1e-4)
    assert torch.allclose(out.log_prior, log_p, atol=1e-4)
    assert model.sample(7).shape == (7, 1, 8, 8)
    assert torch.isfinite(log_likelihood(model.eval(), x, 20)).all()


def test_unknown_prior_and_priors_without_density_are_refused_by_name():
    with pytest.raises(aekit.AekitError, match="unknown prior 'gauss'; choose from normal"):
        aekit.build("vae", (10,), 2, prior="gauss")
    with pytest.raises(
        aekit.AekitError, match="needs a prior with a density everywhere; got 'ring'"
    ):
        aekit.build("vae", (10,), 2, prior="ring")
    with pytest.raises(aekit.AekitError, match="matches the codes to a prior"):
        aekit.build("swae", (10,), 2, prior="none")
    with pytest.raises(aekit.AekitError, match="vamp prior needs the gaussian bottleneck"):
        aekit.build("swae", (10,), 2, prior="vamp")


def test_a_user_sampler_is_a_prior_for_swae():
    def corners(n, generator):
        return torch.randint(0, 2, (n, 2), generator=generator).float() * 2 - 1

    prior_from_sampler("corners", corners)
    try:
        model = aekit.build("swae", (10,), 2, hidden=(8,), prior="corners")
        assert set(model.sample_latents(50).abs().flatten().tolist()) == {1.0}
        model(torch.rand(8, 10)).loss.backward()
        with pytest.raises(aekit.AekitError, match="with a density everywhere; got 'corners'"):
            aekit.build("vae", (10,), 2, prior="corners")
    finally:  # registries are global: later tests enumerate the built-in priors only
        PRIORS.unregister("corners")
    with pytest.raises(aekit.AekitError, match="got 'uniform'"):
        aekit.build("vae", (10,), 2, prior="uniform")  # a Gaussian posterior leaves the cube


# ---------------------------------------------------------------- Wasserstein objectives
def test_imq_mmd_is_the_unbiased_u_statistic():
    z, p = torch.randn(6, 2), torch.randn(6, 2) + 1
    c = 2 * 2 * 1.0

    def k(a, b, s):
        return (c * s) / (c * s + (a - b).pow(2).sum())

    expected = 0.0
    for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        within = sum(
            k(z[i], z[j], s) + k(p[i], p[j], s) for i in range(6) for j in range(6) if i != j
        )
        across = sum(k(z[i], p[j], s) for i in range(6) for j in range(6))
        expected += within / 30 - 2 * across / 36
    assert imq_mmd(z, p, base=c).item() == pytest.approx(float(expected), abs=1e-5)
    # unbiased: zero on average for two samples of the same distribution
    g = torch.Generator().manual_seed(0)
    same = [
        imq_mmd(torch.randn(20, 2, generator=g), torch.randn(20, 2, generator=g), c)
        for _ in range(400)
    ]
    values = torch.stack(same)
    assert abs(values.mean()) < 3 * values.std() / math.sqrt(len(values))


def test_sliced_wasserstein_in_one_dimension_is_the_exact_wasserstein_distance():
    z, p = torch.randn(50, 1), torch.rand(50, 1) * 3
    exact = (z.sort(0).values - p.sort(0).values).pow(2).mean()
    assert sliced_wasserstein(z, p, projections=5, power=2.0).item() == pytest.approx(exact.item())
    assert sliced_wasserstein(z, z.clone(), 10, 2.0).item() == 0.0


# ---------------------------------------------------------------- conditioning
def test_conditional_model_checks_its_condition():
    model = aekit.build("cvae", (1, 8, 8), 2, **TINY_NET, condition_classes=4)
    x = torch.rand(3, 1, 8, 8)
    assert model(x, condition=torch.tensor([0, 1, 3])).loss.isfinite()
    assert model.sample(5, condition=2).shape == (5, 1, 8, 8)
    with pytest.raises(aekit.AekitError, match=r"label 4 is outside the trained range 0\.\.3"):
        model.sample(2, condition=4)
    with pytest.raises(aekit.AekitError, match=r"pass a condition \(labels 0\.\.3\)"):
        model.encode(x)
    vectors = aekit.build("cvae", (1, 8, 8), 2, **TINY_NET, condition_dim=3)
    with pytest.raises(
        aekit.AekitError, match="width 2; this model was trained on vectors of width 3"
    ):
        vectors.sample(2, condition=torch.zeros(2, 2))
    with pytest.raises(aekit.AekitError, match="not conditional"):
        aekit.build("vae", (10,), 2).sample(2, condition=1)
    with pytest.raises(aekit.AekitError, match="cvae is conditional"):
        aekit.build("cvae", (10,), 2)


def test_the_condition_changes_the_decoding():
    model = aekit.build("cvae", (10,), 2, hidden=(8,), condition_classes=3)
    z = torch.randn(4, 2)
    assert not torch.allclose(model.decode(z, 0), model.decode(z, 1))
