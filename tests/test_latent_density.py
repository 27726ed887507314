import logging

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from aekit.data import TensorData
from aekit.errors import AekitError
from aekit.eval import encode_all
from aekit.latent_density import (
    LATENT_DENSITY,
    LatentGMM,
    fit_for_model,
    fit_latent_gmm,
)
from aekit.registry import build
from conftest import TINY_NET


def correlated(n=4000, seed=0):
    """Codes from N(mean, cov) with a strong correlation, so a diagonal fit would show."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    factor = torch.tensor([[1.0, 0, 0], [0.8, 0.6, 0], [0.3, -0.2, 0.5]], dtype=torch.float64)
    return mean + torch.randn(n, 3, generator=g, dtype=torch.float64) @ factor.T


def two_clusters(n=400):
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])
    return centres[torch.arange(n) % 2] + 0.3 * torch.randn(n, 2, generator=g)


def test_samples_of_a_one_component_fit_match_the_data_moments():
    codes = correlated()
    gmm = fit_latent_gmm(codes, components=1)
    assert gmm.components == 1 and gmm.fitted_on == len(codes)
    z = gmm.sample(20000, torch.Generator().manual_seed(0))
    assert z.shape == (20000, 3) and z.dtype == torch.float32
    np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.03)
    np.testing.assert_allclose(np.cov(z.T.numpy()), np.cov(codes.T.numpy()), atol=0.04)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_log_prob_agrees_with_sklearn(covariance_type):
    codes = correlated(600)
    sk = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(codes.numpy())
    gmm = LatentGMM(
        torch.from_numpy(sk.weights_),
        torch.from_numpy(sk.means_),
        torch.from_numpy(sk.covariances_),
        covariance_type=covariance_type,
    )
    z = correlated(50, seed=3) * 1.5  # also points in the tails
    np.testing.assert_allclose(gmm.log_prob(z), sk.score_samples(z.numpy()), rtol=1e-10)
    assert gmm.log_prob(z.float()).shape == (50,)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_save_load_round_trip_is_exact(tmp_path, covariance_type):
    gmm = fit_latent_gmm(correlated(300), components=2, covariance_type=covariance_type)
    path = gmm.save(tmp_path / LATENT_DENSITY)
    loaded = LatentGMM.load(path)
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(loaded, name), getattr(gmm, name))
    assert (loaded.covariance_type, loaded.fitted_on) == (covariance_type, 300)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(loaded.sample(10, g1), gmm.sample(10, g2))
    assert not list(tmp_path.glob(".*.tmp"))


def test_loading_missing_corrupt_or_foreign_files_names_the_path(tmp_path):
    with pytest.raises(AekitError, match=r"not found: .*gone"):
        LatentGMM.load(tmp_path / "gone.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(AekitError, match=r"bad\.safetensors is unreadable or corrupt") as e:
        LatentGMM.load(bad)
    assert "\n" not in str(e.value)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AekitError, match=r"other\.safetensors is not an aekit latent density"):
        LatentGMM.load(tmp_path / "other.safetensors")


def test_sampler_is_deterministic_under_a_seeded_generator():
    gmm = fit_latent_gmm(two_clusters(), components=2)
    a = gmm.sample(100, torch.Generator().manual_seed(7))
    b = gmm.sample(100, torch.Generator().manual_seed(7))
    c = gmm.sample(100, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_two_clusters_are_recovered():
    codes = two_clusters()
    gmm = fit_latent_gmm(codes, components=2, seed=0)
    np.testing.assert_allclose(gmm.weights, [0.5, 0.5], atol=0.02)
    np.testing.assert_allclose(gmm.means[:, 0].sort().values, [-5.0, 5.0], atol=0.1)
    z = gmm.sample(2000, torch.Generator().manual_seed(0))
    assert ((z[:, 0] > 0).float().mean() - 0.5).abs() < 0.05
    assert (z[:, 0].abs() > 3).all()  # nothing drawn between the clusters


def test_fewer_codes_than_components_reduces_them_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="aekit.latent_density"):
        gmm = fit_latent_gmm(two_clusters(4), components=10)
    assert gmm.components == 4 and "fitting 4" in caplog.text


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (torch.zeros(0, 2), "at least 2 codes"),
        (torch.zeros(1, 2), "at least 2 codes"),
        (torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), "NaN or infinite"),
        (torch.zeros(5), r"must be \(N, D\)"),
    ],
)
def test_bad_codes_raise(codes, message):
    with pytest.raises(AekitError, match=message):
        fit_latent_gmm(codes, components=2)


def test_bad_parameters_raise():
    with pytest.raises(AekitError, match="covariance_type"):
        fit_latent_gmm(two_clusters(), covariance_type="tied")
    with pytest.raises(AekitError, match="covariances"):
        LatentGMM(torch.ones(2) / 2, torch.zeros(2, 3), torch.ones(2, 3))  # diag shape as full
    with pytest.raises(AekitError, match="expected"):
        LatentGMM(torch.ones(1), torch.zeros(1, 3), torch.ones(1, 3), "diag").log_prob(
            torch.zeros(4, 2)
        )


def test_fit_for_model_encodes_in_batches_and_keeps_the_training_mode():
    model = build("ae", input_shape=(6,), latent_dim=2, **TINY_NET).train()
    data = TensorData(torch.rand(50, 6))
    codes = encode_all(model, data, batch_size=16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(codes, model.encode(data.x))
    model.train()
    gmm = fit_for_model(model, data, components=3, batch_size=16)
    assert model.training
    assert (gmm.components, gmm.dim, gmm.fitted_on) == (3, 2, 50)
    assert gmm.sample(5).shape == (5, 2)
