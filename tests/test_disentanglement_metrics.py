"""The disentanglement metrics of aekit.eval.disentanglement on synthetic factor grids: the
sanity bounds of disentanglement_lib's own tests (a code that is the factors scores high,
noise scores low), the closed forms (DCI from exact importances, MIG of binned codes on a
full grid, InfoC of a duplicated code), our mutual information against scikit-learn's, and
the one-line refusals."""

import itertools
import math

import numpy as np
import pytest

from aekit.errors import AekitError
from aekit.eval import disentanglement as dis

SIZES = (5, 6, 7, 8)
"""Four factors of 5-8 values: their full grid has 1,680 rows, enough for DCI's and SAP's
disjoint 1,000 training and 500 test rows."""
K = len(SIZES)
CHANCE = 1 / K
MARGIN = 0.1
"""BetaVAE and FactorVAE of codes independent of the factors: the classifier's predictions
on the evaluation points do not depend on their labels (the features of every factor have
one distribution), so the evaluation accuracy is Binomial(500, 1/4) / 500, whose standard
deviation is sqrt(0.25 * 0.75 / 500) = 0.019; 0.1 is five of them."""
FIT = {"num_train": 1000, "num_test": 500}
BATCHES = {"batch_size": 32, "num_train": 1000, "num_eval": 500}


def grid(sizes=SIZES) -> np.ndarray:
    return np.array(list(itertools.product(*[range(n) for n in sizes])), dtype=np.int64)


@pytest.fixture(scope="module")
def factors():
    return grid()


@pytest.fixture(scope="module")
def exact(factors):
    """A code that is the factors (plus a little noise, so it is continuous)."""
    return factors + 1e-3 * np.random.default_rng(0).standard_normal(factors.shape)


@pytest.fixture(scope="module")
def noise(factors):
    return np.random.default_rng(1).standard_normal(factors.shape)


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- information


@pytest.mark.parametrize("n", [1, 2, 17, 500, 3000])
def test_mutual_information_equals_sklearn(n):
    from sklearn.metrics import mutual_info_score

    g = rng(n)
    for a_values, b_values in [(2, 2), (5, 9), (40, 3), (300, 300)]:
        a = g.integers(a_values, size=n)
        b = (a + g.integers(b_values, size=n)) % b_values  # dependent on a
        c = g.integers(-7, 50, size=n) * 3  # non-contiguous and negative values
        for x, y in [(a, b), (b, a), (a, c), (a, a)]:
            assert abs(dis.mutual_information(x, y) - mutual_info_score(x, y)) < 1e-10
        assert abs(dis.entropy(a) - mutual_info_score(a, a)) < 1e-10


def test_entropy_of_a_uniform_vector_is_log_k():
    for k in (1, 2, 3, 10, 64):
        assert dis.entropy(np.repeat(np.arange(k), 7)) == pytest.approx(math.log(k), abs=1e-12)
    # integral floats are discrete values too
    assert dis.entropy(np.array([0.0, 1.0, 2.0, 3.0])) == pytest.approx(math.log(4))


def test_mutual_information_matrix(factors):
    matrix = dis.mutual_information_matrix(factors[:, [1, 0]], factors)
    assert matrix.shape == (2, K)
    # on the full grid the factors are independent: MI is the entropy or exactly 0
    assert matrix[0, 1] == pytest.approx(math.log(SIZES[1]))
    assert matrix[1, 0] == pytest.approx(math.log(SIZES[0]))
    assert np.abs(matrix[:, 2:]).max() < 1e-12 and abs(matrix[0, 0]) < 1e-12


def test_discretize_is_disentanglement_libs_histogram():
    codes = rng().standard_normal((400, 3)) * [1.0, 10.0, 1e-3]
    for bins in (2, 7, 20):
        ours = dis.discretize(codes, bins)
        for j in range(3):  # disentanglement_lib's _histogram_discretize
            column = codes[:, j]
            expected = np.digitize(column, np.histogram(column, bins)[1][:-1])
            np.testing.assert_array_equal(ours[:, j], expected)
        assert ours.min() == 1 and ours.max() == bins
    constant = dis.discretize(np.full((10, 2), 3.5), 20)
    assert (constant == 1).all()


def test_draws_with_a_factor_fixed(factors):
    g = rng()
    rows = dis.draw_with_factor(factors, 2, 4, 5000, g)
    assert rows.shape == (5000,) and (factors[rows, 2] == 4).all()
    assert len(np.unique(rows)) == (factors[:, 2] == 4).sum()  # every such row is reachable
    index = dis.FactorIndex(factors)
    k = np.array([0, 1, 2, 3])[:, None]
    label = np.array([4, 0, 6, 3])[:, None]
    drawn = index.draw(k, label, g, size=(4, 300))
    assert drawn.shape == (4, 300)
    for j in range(4):
        assert (factors[drawn[j], k[j, 0]] == label[j, 0]).all()
    # the index relabels any discrete values to 0..n-1
    shifted = dis.FactorIndex(factors * 10 - 3)
    assert (shifted.labels == factors).all() and list(shifted.sizes) == list(SIZES)


# ---------------------------------------------------------------- sanity bounds


def test_a_code_that_is_the_factors_scores_high(exact, factors):
    beta = dis.beta_vae_score(exact, factors, rng(), **BATCHES)
    assert beta["score"] >= 0.9 and beta["train_accuracy"] >= 0.9
    assert (beta["batch_size"], beta["num_train"], beta["num_eval"]) == (32, 1000, 500)
    factor = dis.factor_vae_score(exact, factors, rng(), **BATCHES, num_variance_estimate=1000)
    assert factor["score"] >= 0.9 and factor["num_active_dims"] == K
    assert dis.mig(exact, factors, rng(), num_train=1000)["mig"] >= 0.9
    dci = dis.dci(exact, factors, rng(), **FIT)
    assert dci["disentanglement"] >= 0.9 and dci["completeness"] >= 0.9
    assert dci["informativeness_test"] >= 0.9
    assert np.array(dci["importance"]).shape == (K, K)
    info = dis.infomec(exact, factors, rng(), num_samples=1000)
    assert info["infom"] >= 0.9 and info["infoc"] >= 0.9 and info["infoe"] >= 0.9
    assert not info["discrete_latents"] and info["active_latents"] == list(range(K))
    assert np.array(info["nmi"]).shape == (K, K)
    # SAP: disentanglement_lib's own test (continuous_factors=True, R^2) bounds it by 0.9
    assert dis.sap(exact, factors, rng(), **FIT, continuous_factors=True)["sap"] >= 0.9
    # Its discrete variant (the study's) stays well below 1 even for this code: a 1-D
    # one-vs-rest LinearSVC misses middle values, and other latents still score ~chance.
    discrete = dis.sap(exact, factors, rng(), **FIT)
    assert 0.2 <= discrete["sap"] < 0.9


def test_discrete_sap_of_binary_factors_is_one_minus_chance():
    """Binary factors are separable by one threshold: the matching latent scores 1, the
    others about 1/2 (balanced classes), so a perfect code's SAP is about 1 - 1/2."""
    factors = grid((2,) * 6)
    factors = np.concatenate([factors] * 30)  # 1,920 rows
    codes = factors + 1e-3 * rng(2).standard_normal(factors.shape)
    result = dis.sap(codes, factors, rng(), **FIT)
    scores = np.array(result["score_matrix"])
    assert np.diag(scores).min() == 1.0
    assert abs(result["sap"] - 0.5) < 0.1


def test_noise_scores_low(noise, factors):
    beta = dis.beta_vae_score(noise, factors, rng(), **BATCHES)
    assert beta["score"] <= CHANCE + MARGIN
    factor = dis.factor_vae_score(noise, factors, rng(), **BATCHES, num_variance_estimate=1000)
    assert factor["score"] <= CHANCE + MARGIN
    assert dis.mig(noise, factors, rng(), num_train=1000)["mig"] <= 0.2
    assert dis.sap(noise, factors, rng(), **FIT)["sap"] <= 0.2
    dci = dis.dci(noise, factors, rng(), **FIT)
    assert dci["disentanglement"] <= 0.2 and dci["completeness"] <= 0.2
    info = dis.infomec(noise, factors, rng(), num_samples=1000)
    # The binned MI of a noise latent is its estimator's bias, about the same for every
    # factor, so max / sum sits near 1/K (resp. 1/D): both normalised scores near 0.
    assert info["infom"] <= 0.25 and info["infoc"] <= 0.25 and info["infoe"] <= 0.1


def test_a_duplicated_code(factors):
    codes = np.concatenate([factors, factors], axis=1).astype(np.float64)
    assert dis.mig(codes, factors, rng(), num_train=1000)["mig"] <= 0.05  # two equal tops
    dci = dis.dci(codes, factors, rng(), **FIT)
    assert dci["disentanglement"] >= 0.9
    # Each factor's importance split over its two copies: 1 - H_{2K}(1/2, 1/2) = 1 - log 2 /
    # log 2K (an uneven split gives more; the trees pick either copy).
    assert abs(dci["completeness"] - (1 - math.log(2) / math.log(2 * K))) < 0.1
    info = dis.infomec(codes, factors, rng(), num_samples=1000)
    assert info["discrete_latents"]  # integer codes, at most 20 values each
    # InfoC: each factor's NMI is split 1/2, 1/2 over A = 2K latents: (1/2 - 1/A) / (1 - 1/A)
    a = 2 * K
    assert info["infoc"] == pytest.approx((0.5 - 1 / a) / (1 - 1 / a), abs=0.05)
    assert info["infom"] >= 0.9


# ---------------------------------------------------------------- closed forms


def test_dci_from_exact_importances():
    d, c = dis.dci_from_importance(np.eye(4))
    assert d == pytest.approx(1.0, abs=1e-6) and c == pytest.approx(1.0, abs=1e-6)
    # Code 0 holds factors 0 and 1 equally, code 1 factor 2 (D = 2 codes, K = 3 factors).
    # Rows: P_0. = (1/2, 1/2, 0), H_3 = log 2 / log 3, weight rho_0 = 2/3; P_1. = (0, 0, 1),
    # H = 0, rho_1 = 1/3. So D = 2/3 (1 - log 2 / log 3) + 1/3 = 1 - (2/3) log 2 / log 3
    # = 0.5794. Every column has one nonzero entry: C = 1.
    shared = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    closed = 1 - (2 / 3) * math.log(2) / math.log(3)
    d, c = dis.dci_from_importance(shared)
    assert d == pytest.approx(closed, abs=1e-6) and c == pytest.approx(1.0, abs=1e-6)
    # Transposed (factor 0 spread over codes 0 and 1, factor 1 on code 2): the same value
    # with the roles swapped, D = 1, C = 1 - (2/3) log 2 / log 3.
    d, c = dis.dci_from_importance(shared.T)
    assert d == pytest.approx(1.0, abs=1e-6) and c == pytest.approx(closed, abs=1e-6)
    # Scaling changes nothing; all-zero importance is uniform: every entropy is maximal.
    assert dis.dci_from_importance(7 * shared) == pytest.approx((closed, 1.0), abs=1e-6)
    assert dis.dci_from_importance(np.zeros((3, 2))) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert dis.dci_from_importance(np.ones((3, 1)))[0] == 1.0  # one factor
    with pytest.raises(AekitError, match="nonnegative"):
        dis.dci_from_importance(-shared)


def test_mig_of_binned_codes_on_the_full_grid(factors):
    """Codes that are the factors, on every row: a latent is a function of its factor,
    independent of the others, so gap_k = H(bin(s_k)) / H(s_k) exactly. With 2 bins over
    0..n-1 the values below (n - 1) / 2 fall in bin 1."""
    codes = factors.astype(np.float64)
    n = len(factors)
    fine = dis.mig(codes, factors, rng(), num_train=n, num_bins=20)
    assert fine["gaps"] == pytest.approx([1.0] * K, abs=1e-9)
    coarse = dis.mig(codes, factors, rng(), num_train=n, num_bins=2)
    expected = []
    for size in SIZES:
        low = sum(v < (size - 1) / 2 for v in range(size)) / size
        expected.append(-(low * math.log(low) + (1 - low) * math.log(1 - low)) / math.log(size))
    assert coarse["gaps"] == pytest.approx(expected, abs=1e-9)
    assert coarse["num_bins"] == 2 and coarse["mig"] < fine["mig"]
    assert np.array(coarse["normalized_mi"]).shape == (K, K)


def test_mig_factors_used_leaves_a_factor_out(exact, factors):
    codes = exact.copy()
    codes[:, 0] = rng(3).standard_normal(len(codes))  # factor 0 captured by no latent
    every = dis.mig(codes, factors, rng(), num_train=1000)
    without = dis.mig(codes, factors, rng(), num_train=1000, factors_used=[1, 2, 3])
    assert without["factors_used"] == [1, 2, 3] and len(without["gaps"]) == 3
    assert without["gaps"] == pytest.approx(every["gaps"][1:])  # same rows, same seed
    assert without["mig"] == pytest.approx(np.mean(every["gaps"][1:]))
    assert every["mig"] < 0.8 < without["mig"]


def test_mig_of_a_single_latent(factors):
    """One latent: gap = I(z; s_k) / H(s_k), the second-best taken as 0."""
    result = dis.mig(factors[:, :1].astype(float), factors, rng(), num_train=len(factors))
    assert result["gaps"] == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-9)
    assert result["mig"] == pytest.approx(0.25)


def test_infomec_detects_discrete_latents(factors):
    integers = factors.astype(np.float64)  # at most 8 values per latent
    assert dis.infomec(integers, factors, rng(), num_samples=600)["discrete_latents"]
    few_bins = dis.infomec(integers, factors, rng(), num_samples=600, num_bins=6)
    assert not few_bins["discrete_latents"]  # 7 and 8 values exceed 6 bins
    continuous = integers + 1e-3 * rng(4).standard_normal(integers.shape)
    assert not dis.infomec(continuous, factors, rng(), num_samples=600)["discrete_latents"]
    forced = dis.infomec(integers, factors, rng(), num_samples=600, discrete_latents=False)
    assert not forced["discrete_latents"]
    # exact (one bin per value) NMI of a code that is the factors: the identity on the grid
    exact = dis.infomec(integers, factors, rng(), num_samples=len(factors))
    np.testing.assert_allclose(exact["nmi"], np.eye(K), atol=1e-9)
    assert exact["infom"] == pytest.approx(1.0) and exact["infoc"] == pytest.approx(1.0)


def test_infomec_pruning_and_uninformative_latents(exact, factors):
    codes = np.concatenate([exact, np.zeros((len(exact), 1)), 1e-3 * exact[:, :1]], axis=1)
    info = dis.infomec(codes, factors, rng(), num_samples=1000)
    # the constant latent and the one of tiny range (< max range / 20) are pruned
    assert info["active_latents"] == list(range(K))
    assert np.array(info["nmi"]).shape == (K, K + 2)
    assert info["infom"] >= 0.9 and info["infoc"] >= 0.9


def test_constant_codes():
    factors = grid((3, 4, 5))
    codes = np.full((len(factors), 3), 2.0)
    factor = dis.factor_vae_score(
        codes, factors, rng(), batch_size=16, num_train=50, num_eval=50, num_variance_estimate=60
    )
    assert factor["no_active_dims"] and factor["score"] == 0.0 and factor["num_active_dims"] == 0
    sap = dis.sap(codes, factors, rng(), num_train=40, num_test=20)  # nothing fitted
    assert sap["sap"] == 0.0
    info = dis.infomec(codes, factors, rng(), num_samples=60)
    assert info["active_latents"] == [] and info["infom"] == 0.0 and info["infoc"] == 0.0


# ---------------------------------------------------------------- determinism


def test_same_seed_same_results():
    factors = grid((4, 5, 6, 7))
    codes = factors + 0.1 * rng(5).standard_normal(factors.shape)
    sizes = {"batch_size": 16, "num_train": 300, "num_test": 150, "num_variance_estimate": 300}
    first = dis.all_metrics(codes, factors, rng(7), **sizes)
    second = dis.all_metrics(codes, factors, rng(7), **sizes)
    assert first == second
    assert set(first) == {"beta_vae", "factor_vae", "mig", "dci", "sap", "infomec"}
    assert first["beta_vae"]["num_eval"] == 150 and first["infomec"]["num_samples"] == 300
    # each metric has its own spawned generator: alone, from the same child, the same value
    child = rng(7).spawn(6)[2]
    assert dis.mig(codes, factors, child, num_train=300) == first["mig"]
    assert dis.all_metrics(codes, factors, rng(8), **sizes)["mig"] != first["mig"]


# ---------------------------------------------------------------- refusals


def one_line_error(call, match):
    with pytest.raises(AekitError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_one_line_refusals(exact, factors):
    fractional = factors + 0.5
    one_line_error(lambda: dis.mig(exact, fractional, rng()), r"discrete \(integer values\)")
    # integral floats are discrete values
    assert dis.mig(exact, factors.astype(float), rng(), num_train=100)["num_train"] == 100
    message = one_line_error(
        lambda: dis.mig(exact, factors, rng()), "mig needs at least 10000 examples, got 1680"
    )
    assert "num_train=10000" in message
    one_line_error(
        lambda: dis.dci(exact, factors, rng(), num_train=1500), "dci needs at least 6500"
    )
    one_line_error(lambda: dis.sap(exact[:-1], factors, rng()), "1679 rows but factors have 1680")
    constant = factors.copy()
    constant[:, 2] = 3
    one_line_error(lambda: dis.beta_vae_score(exact, constant, rng()), "factor column 2")
    nan = exact.copy()
    nan[5, 1] = np.nan
    one_line_error(lambda: dis.infomec(nan, factors, rng(), num_samples=100), "NaN")
    one_line_error(lambda: dis.mig(exact[:, 0], factors, rng()), "codes must be a 2-D array")
    one_line_error(lambda: dis.factor_vae_score(exact, factors[:, :1], rng()), "at least 2 factors")
    one_line_error(lambda: dis.mig(exact, factors, rng(), num_train=100, num_bins=0), "num_bins")
    one_line_error(
        lambda: dis.mig(exact, factors, rng(), num_train=100, factors_used=[0, 4]), "factors_used"
    )
    # a factor that varies in the data but not among the sampled training rows
    rare = np.zeros((len(exact), 2), dtype=np.int64)
    rare[:, 1] = factors[:, 0]
    rare[0, 0] = 1
    one_line_error(
        lambda: dis.dci(exact, rare, rng(), num_train=10, num_test=5),
        "factor column 0 takes a single value among the 10 sampled rows",
    )
