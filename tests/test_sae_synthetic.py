"""The synthetic ground-truth data (aekit.data.activations.synthetic) and the feature-recovery
score (aekit.eval.recovery)."""

from __future__ import annotations

import math

import pytest
import torch

import aekit
from aekit.data.activations.synthetic import feature_probabilities, make_sparse_data
from aekit.errors import AekitError
from aekit.eval.recovery import feature_recovery


def firing_correlations(fire: torch.Tensor, groups: torch.Tensor) -> tuple[float, float]:
    """Mean Pearson correlation of the firing indicators over pairs of distinct features in
    the same group, and over pairs in different groups."""
    corr = torch.corrcoef(fire.double().T)
    same = groups[:, None] == groups[None, :]
    off_diagonal = ~torch.eye(len(groups), dtype=torch.bool)
    return float(corr[same & off_diagonal].mean()), float(corr[~same].mean())


# ---------------------------------------------------------------- feature_recovery


def test_recovery_is_perfect_for_the_true_features_permuted_and_scaled():
    _, features, _ = make_sparse_data(10, 16, 48, active=4, seed=1)
    gen = torch.Generator().manual_seed(0)
    decoder = features[torch.randperm(48, generator=gen)] * (
        0.01 + 10 * torch.rand(48, 1, generator=gen)
    )
    rec = feature_recovery(decoder, features)
    assert rec["mmcs"] == pytest.approx(1.0, abs=1e-6)
    assert rec["recovered_fraction"] == 1.0 and rec["recovered"] == 48
    assert rec["matched_latents"] == 48 and rec["duplicate_latents"] == 0
    assert rec["latent_mmcs"] == pytest.approx(1.0, abs=1e-6)
    # best_latent points each feature at its own (permuted) row
    assert torch.allclose(
        torch.nn.functional.normalize(decoder[rec["best_latent"]], dim=1), features, atol=1e-5
    )


def test_duplicated_and_dead_latents_are_visible():
    _, features, _ = make_sparse_data(10, 16, 32, active=4, seed=2)
    decoder = torch.cat([features, 3 * features[:8], torch.zeros(8, 16)])
    rec = feature_recovery(decoder, features)
    assert rec["mmcs"] == pytest.approx(1.0, abs=1e-6)
    assert rec["recovered_fraction"] == 1.0
    assert rec["matched_latents"] == 40 and rec["duplicate_latents"] == 8
    # zero rows score 0 from the latents' side: (40 * 1 + 8 * 0) / 48
    assert rec["latent_mmcs"] == pytest.approx(40 / 48, abs=1e-6)


def test_half_the_features_found_gives_half_recovered():
    _, features, _ = make_sparse_data(10, 64, 128, active=4, seed=3)
    rec = feature_recovery(features[:64], features)
    assert rec["recovered_fraction"] == 0.5
    assert 0.5 < rec["mmcs"] < 1.0


def test_a_random_decoder_scores_low():
    _, features, _ = make_sparse_data(10, 32, 128, active=4, seed=4)
    random = torch.randn(256, 32, generator=torch.Generator().manual_seed(5))
    rec = feature_recovery(random, features)
    assert rec["mmcs"] < 0.7
    assert rec["recovered_fraction"] == 0.0 and rec["matched_latents"] == 0


def test_flipped_directions_count_only_with_absolute():
    _, features, _ = make_sparse_data(10, 16, 32, active=4, seed=6)
    assert feature_recovery(-features, features)["recovered_fraction"] == 0.0
    rec = feature_recovery(-features, features, absolute=True)
    assert rec["mmcs"] == pytest.approx(1.0, abs=1e-6) and rec["recovered_fraction"] == 1.0


def test_recovery_rejects_mismatched_widths():
    with pytest.raises(AekitError, match="width"):
        feature_recovery(torch.randn(8, 5), torch.randn(4, 6))
    with pytest.raises(AekitError, match="threshold"):
        feature_recovery(torch.randn(8, 5), torch.randn(4, 5), threshold=1.5)


# ---------------------------------------------------------------- make_sparse_data


@pytest.mark.parametrize("frequency", ["zipf", "uniform"])
def test_rows_are_sparse_nonnegative_combinations_with_the_stated_sparsity(frequency):
    n, d, m, active = 20_000, 24, 96, 6.0
    x, features, codes = make_sparse_data(
        n, d, m, active=active, frequency=frequency, magnitude=(0.5, 1.5), seed=7
    )
    assert x.shape == (n, d) and x.dtype == torch.float32
    assert features.shape == (m, d)
    assert torch.allclose(features.norm(dim=1), torch.ones(m), atol=1e-5)
    assert float(codes.probabilities.sum()) == pytest.approx(active, rel=1e-12)
    # noiseless rows are exactly the codes times the features
    assert torch.allclose(codes.dense() @ features, x, atol=1e-5)
    assert codes.values.min() >= 0.5 and codes.values.max() <= 1.5
    counts = codes.active_counts().double()
    # the mean active count is sum_i p_i; its standard error is sqrt(sum p(1-p) / n)
    p = codes.probabilities
    se = math.sqrt(float((p * (1 - p)).sum()) / n)
    assert abs(float(counts.mean()) - active) < 4 * se
    # every feature fires at its own rate
    rates = codes.firing().double().mean(0)
    assert torch.all((rates - p).abs() < 5 * (p * (1 - p) / n).sqrt() + 1e-3)
    if frequency == "zipf":
        assert p[0] > p[-1] and torch.all(p[:-1] >= p[1:])
    else:
        assert torch.allclose(p, torch.full((m,), active / m, dtype=torch.float64))


def test_correlated_firing_gives_the_stated_correlation_within_groups_only():
    n, m, group = 20_000, 64, 4
    kwargs = {"active": 8.0, "frequency": "uniform", "group_size": group, "seed": 8}
    _, _, independent = make_sparse_data(n, 16, m, correlated=0.0, **kwargs)
    _, _, correlated = make_sparse_data(n, 16, m, correlated=0.6, **kwargs)
    assert torch.equal(correlated.groups, torch.arange(m) // group)
    same, other = firing_correlations(independent.firing(), independent.groups)
    assert abs(same) < 0.02 and abs(other) < 0.02
    same, other = firing_correlations(correlated.firing(), correlated.groups)
    assert same == pytest.approx(0.6, abs=0.03)  # equal frequencies: the correlation is rho
    assert abs(other) < 0.02
    # the marginals (and so the expected active count) do not depend on rho
    p = 8.0 / m
    se = math.sqrt(m * p * (1 - p) / n)
    for codes in (independent, correlated):
        assert abs(float(codes.active_counts().double().mean()) - 8.0) < 5 * se * math.sqrt(
            1 + 3 * 0.6
        )


def test_correlated_zipf_pairs_cofire_as_the_docstring_says():
    n, rho = 40_000, 0.8
    _, _, codes = make_sparse_data(n, 16, 64, active=6.0, correlated=rho, group_size=4, seed=9)
    fire = codes.firing().double()
    p = codes.probabilities
    for i, j in ((0, 1), (0, 3), (4, 6)):  # same group, different frequencies
        expected = rho * min(p[i], p[j]) + (1 - rho) * p[i] * p[j]
        observed = float((fire[:, i] * fire[:, j]).mean())
        assert observed == pytest.approx(float(expected), abs=4 * math.sqrt(expected / n))
    observed = float((fire[:, 0] * fire[:, 4]).mean())  # different groups: independent
    assert observed == pytest.approx(float(p[0] * p[4]), abs=4 * math.sqrt(p[0] * p[4] / n))


def test_seeds_reproduce_and_differ():
    a = make_sparse_data(3000, 8, 20, active=3, correlated=0.5, noise=0.01, seed=11)
    b = make_sparse_data(3000, 8, 20, active=3, correlated=0.5, noise=0.01, seed=11)
    c = make_sparse_data(3000, 8, 20, active=3, correlated=0.5, noise=0.01, seed=12)
    assert torch.equal(a.x, b.x) and torch.equal(a.features, b.features)
    assert torch.equal(a.codes.indices, b.codes.indices)
    assert torch.equal(a.codes.offsets, b.codes.offsets)
    assert not torch.equal(a.x, c.x) and not torch.equal(a.features, c.features)


def test_rows_beyond_one_chunk_and_slices_of_the_codes():
    x, features, codes = make_sparse_data(9000, 8, 24, active=3, seed=13)  # two chunks
    assert codes.n_rows == 9000 and int(codes.offsets[-1]) == len(codes.indices)
    assert torch.allclose(codes.dense(8000, 8500) @ features, x[8000:8500], atol=1e-5)
    assert torch.equal(codes.firing(10, 20), codes.dense(10, 20) > 0)


def test_noise_has_the_stated_standard_deviation():
    clean = make_sparse_data(20_000, 16, 32, active=3, seed=14)
    noisy = make_sparse_data(20_000, 16, 32, active=3, noise=0.05, seed=14)
    residual = noisy.x - noisy.codes.dense() @ noisy.features
    assert float(residual.std()) == pytest.approx(0.05, rel=0.02)
    assert torch.equal(clean.features, noisy.features)


def test_fixed_magnitude():
    _, _, codes = make_sparse_data(500, 8, 16, active=2, magnitude=1.0, seed=15)
    assert torch.all(codes.values == 1.0)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(AekitError, match="zipf"):
        feature_probabilities(64, 20.0, "zipf", zipf_exponent=1.0)  # p_0 > 1
    with pytest.raises(AekitError, match="correlated"):
        make_sparse_data(10, 4, 8, active=2, correlated=1.5)
    with pytest.raises(AekitError, match="frequency"):
        make_sparse_data(10, 4, 8, active=2, frequency="pareto")
    with pytest.raises(AekitError, match="magnitude"):
        make_sparse_data(10, 4, 8, active=2, magnitude=(1.0, 0.5))
    with pytest.raises(AekitError, match="active"):
        make_sparse_data(10, 4, 8, active=9)


def test_data_stream_never_coincides_with_a_model_seeded_alike():
    """With the data drawn from a generator seeded like the model's initialisation, random
    initial decoder rows would equal the true features (MMCS 1 before training)."""
    for seed in (0, 1, 5):
        _, features, _ = make_sparse_data(10, 32, 128, active=4, seed=seed)
        torch.manual_seed(seed)
        sae = aekit.build("sae-topk", (32,), latent_dim=256, k=4)
        assert feature_recovery(sae.decoder_directions(), features)["mmcs"] < 0.7
