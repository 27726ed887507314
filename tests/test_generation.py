"""Generation metrics: the mathematics of FD and precision/recall, the classifier and its cache,
user-supplied TorchScript features, and one end-to-end run on a tiny model. No network."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import aekit
from aekit.data.tensor_data import TensorData
from aekit.errors import AekitError
from aekit.eval import classifier as classifier_module
from aekit.eval import generation
from aekit.eval.classifier import (
    FeatureClassifier,
    TorchScriptFeatures,
    cached_classifier,
    data_fingerprint,
    train_classifier,
)
from aekit.eval.generation import (
    frechet_distance,
    frechet_from_moments,
    generation_metrics,
    precision_recall,
)

jit_warnings = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _labelled_images(n=60, seed=0):
    """Images (1, 8, 8) in [0, 1] whose class (0, 1, 2) sets the brightness of one band."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    for c in range(3):
        x[y == c, :, 3 * c : 3 * c + 2, :] += 0.7
    return x, y


# --- Fréchet distance --------------------------------------------------------------------------


def test_frechet_from_moments_matches_the_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_from_moments(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-9)


def _symmetric_form(mu1, s1, mu2, s2):
    """FD with Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), by eigendecomposition only."""
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)))
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean


def test_frechet_from_moments_matches_the_symmetric_form_for_full_covariances():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(2, 5, 5))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = _symmetric_form(mu1, s1, mu2, s2)
    assert frechet_from_moments(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_from_moments_in_one_dimension():
    # Scalars: (m1 - m2)^2 + (sd1 - sd2)^2.
    assert frechet_from_moments(1.0, 4.0, -2.0, 9.0) == pytest.approx(9 + 1)


def test_frechet_distance_is_zero_on_itself_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 4, generator=g)
    b = 2 * torch.randn(200, 4, generator=g) + 1
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)
    assert frechet_distance(a, b) > 1


def test_frechet_distance_of_samples_approaches_the_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([2.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
    a = mu1 + np.sqrt(var1) * rng.standard_normal((40_000, 3))
    b = mu2 + np.sqrt(var2) * rng.standard_normal((40_000, 3))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)


@pytest.mark.filterwarnings("error")
def test_frechet_distance_is_exact_and_quiet_for_singular_covariances():
    # Fewer examples than dimensions, and dead ReLU units (constant zero features), as in the
    # classifier's feature space: both covariances are singular.
    rng = np.random.default_rng(3)
    a = np.maximum(rng.normal(size=(30, 64)) - 1, 0)
    b = np.maximum(rng.normal(size=(30, 64)) - 1, 0)
    a[:, :20] = b[:, :20] = 0
    expected = _symmetric_form(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(AekitError, match="dimensions"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(AekitError, match="at least 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(AekitError, match="NaN"):
        frechet_distance(torch.full((5, 3), float("nan")), torch.zeros(5, 3))


# --- precision and recall ----------------------------------------------------------------------


def test_precision_recall_of_identical_sets_is_one():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone(), k=3) == (1.0, 1.0)


def test_precision_recall_of_a_far_away_set_is_zero():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x + 1000, k=3) == (0.0, 0.0)


def test_collapsed_samples_have_high_precision_and_low_recall():
    real = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    fake = real[:1].repeat(40, 1)  # mode collapse onto one real point
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == 1.0
    assert recall == pytest.approx(1 / 50)  # only that point is inside a zero-radius manifold


def test_precision_recall_is_the_same_in_small_chunks(monkeypatch):
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(40, 2, generator=g), 1.5 * torch.randn(30, 2, generator=g) + 0.5
    whole = precision_recall(real, fake, k=2)
    monkeypatch.setattr(generation, "_CDIST_ELEMENTS", 7)  # one row per chunk
    assert precision_recall(real, fake, k=2) == whole
    assert 0 < whole[0] < 1 and 0 < whole[1] < 1


def test_precision_recall_needs_more_points_than_k():
    with pytest.raises(AekitError, match="more than 3"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2), k=3)


# --- the feature classifier --------------------------------------------------------------------


def test_feature_classifier_shapes():
    conv = FeatureClassifier((1, 8, 8), 3)
    assert any(isinstance(m, nn.Conv2d) for m in conv.modules())
    assert conv.features(torch.zeros(4, 1, 8, 8)).shape == (4, 128)
    assert conv(torch.zeros(4, 1, 8, 8)).shape == (4, 3)
    for shape in [(16,), (1, 2, 2)]:  # flat, and an image too small to pool twice
        mlp = FeatureClassifier(shape, 2, feature_dim=32)
        assert not any(isinstance(m, nn.Conv2d) for m in mlp.modules())
        assert mlp.features(torch.zeros(5, *shape)).shape == (5, 32)
    with pytest.raises(AekitError, match=r"\(1, 8, 8\)"):
        conv.features(torch.zeros(2, 1, 7, 7))


def test_train_classifier_learns_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 2
    x = torch.randn(300, 10, generator=g)
    x[:, 0] += 4 * y - 2  # linearly separable along one feature
    first, accuracy = train_classifier(x, y, epochs=3, batch_size=32, seed=3)
    again, accuracy_again = train_classifier(x, y, epochs=3, batch_size=32, seed=3)
    assert accuracy == accuracy_again and accuracy >= 0.9
    assert first.held_out_accuracy == accuracy
    state, state_again = first.state_dict(), again.state_dict()
    assert all(torch.equal(state[key], state_again[key]) for key in state)
    assert not first.training
    other, _ = train_classifier(x, y, epochs=1, batch_size=32, seed=4)
    assert not torch.equal(first.head.weight, other.head.weight)


def test_train_classifier_keeps_arbitrary_labels_and_the_global_rng():
    x, y = _labelled_images(30)
    state = torch.get_rng_state()
    classifier, _ = train_classifier(x, y * 10 + 5, epochs=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert classifier.classes == [5, 15, 25]


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (None, "needs labels"),
        (torch.zeros(0, dtype=torch.int64), "needs labels"),
        (torch.ones(30, dtype=torch.int64), "at least 2 classes"),
    ],
)
def test_train_classifier_rejects_missing_or_single_class_labels(y, message):
    x, _ = _labelled_images(30)
    with pytest.raises(AekitError, match=message) as info:
        train_classifier(x, y, epochs=1)
    assert "\n" not in str(info.value)


# --- the cache ---------------------------------------------------------------------------------


def _counting_trainer(monkeypatch):
    calls = []
    real_trainer = classifier_module.train_classifier

    def trainer(*args, **kwargs):
        calls.append(kwargs)
        return real_trainer(*args, **kwargs)

    monkeypatch.setattr(classifier_module, "train_classifier", trainer)
    return calls


def test_cached_classifier_is_reused_for_the_same_data(tmp_path, monkeypatch):
    calls = _counting_trainer(monkeypatch)
    x, y = _labelled_images(40)
    first = cached_classifier(x, y, name="tiny", cache_dir=tmp_path, epochs=1)
    sidecar = json.loads((tmp_path / "tiny.json").read_text())
    assert (tmp_path / "tiny.safetensors").is_file()
    assert sidecar["fingerprint"] == data_fingerprint(x, y)
    assert len(sidecar["fingerprint"]) == 16
    assert sidecar["classes"] == [0, 1, 2]
    assert sidecar["input_shape"] == [1, 8, 8]
    assert sidecar["feature_dim"] == 128
    assert sidecar["held_out_accuracy"] == first.held_out_accuracy
    assert sidecar["train_settings"]["epochs"] == 1

    second = cached_classifier(x, y, name="tiny", cache_dir=tmp_path, epochs=1)
    assert len(calls) == 1  # read back, not retrained
    assert second.held_out_accuracy == first.held_out_accuracy
    with torch.no_grad():
        assert torch.equal(first.features(x), second.features(x))
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_cached_classifier_retrains_when_data_or_options_change(tmp_path, monkeypatch):
    calls = _counting_trainer(monkeypatch)
    x, y = _labelled_images(40)
    cached_classifier(x, y, name="tiny", cache_dir=tmp_path, epochs=1)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 0.5
    cached_classifier(x2, y, name="tiny", cache_dir=tmp_path, epochs=1)
    assert len(calls) == 2
    assert json.loads((tmp_path / "tiny.json").read_text())["fingerprint"] == data_fingerprint(
        x2, y
    )
    cached_classifier(x2, y, name="tiny", cache_dir=tmp_path, epochs=1, seed=1)
    assert len(calls) == 3


def test_cached_classifier_retrains_over_a_corrupt_cache(tmp_path, monkeypatch):
    calls = _counting_trainer(monkeypatch)
    x, y = _labelled_images(40)
    cached_classifier(x, y, name="tiny", cache_dir=tmp_path, epochs=1)
    (tmp_path / "tiny.safetensors").write_bytes(b"not safetensors")
    classifier = cached_classifier(x, y, name="tiny", cache_dir=tmp_path, epochs=1)
    assert len(calls) == 2 and isinstance(classifier, FeatureClassifier)
    cached_classifier(x, y, name="tiny", cache_dir=tmp_path, epochs=1)
    assert len(calls) == 2  # the rewritten cache is good again


def test_cached_classifier_default_dir_and_bad_names(tmp_path, monkeypatch):
    monkeypatch.setenv("AEKIT_CACHE", str(tmp_path))
    x, y = _labelled_images(30)
    cached_classifier(x, y, name="default", epochs=1)
    assert (tmp_path / "classifiers" / "default.json").is_file()
    for bad in ["../escape", "", ".hidden"]:
        with pytest.raises(AekitError, match="cache name"):
            cached_classifier(x, y, name=bad, cache_dir=tmp_path)
    with pytest.raises(AekitError, match="unknown classifier training option"):
        cached_classifier(x, y, name="ok", cache_dir=tmp_path, epoch=1)


# --- user-supplied TorchScript features --------------------------------------------------------


class _Probe(nn.Module):
    """Reports what it was given: per-channel means, height, width and whether it was uint8."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if not return_features:
            return torch.zeros(x.shape[0], 1)
        b = x.shape[0]
        info = torch.tensor([float(x.shape[2]), float(x.shape[3]), float(x.dtype == torch.uint8)])
        return torch.cat([x.float().mean(dim=(2, 3)), info.expand(b, 3)], dim=1)


class _NoKwargs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


@pytest.fixture
def probe_path(tmp_path):
    path = tmp_path / "probe.pt"
    torch.jit.save(torch.jit.script(_Probe()), str(path))
    return path


@jit_warnings
def test_torchscript_features_prepare_images_like_inception(probe_path):
    extractor = TorchScriptFeatures(probe_path, image_size=16)
    x = torch.ones(2, 1, 8, 8)
    x[1] = 0.5
    f = extractor.features(x)
    assert f.shape == (2, 6)
    # 1 channel -> 3, [0, 1] -> 0..255 uint8, resized to 16x16; return_features=True was passed.
    assert f[0].tolist() == [255, 255, 255, 16, 16, 1]
    assert f[1, :3].tolist() == [128, 128, 128]


@jit_warnings
def test_torchscript_features_without_kwargs_and_bad_files(tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(_NoKwargs()), str(path))
    f = TorchScriptFeatures(path, image_size=None).features(torch.ones(3, 3, 5, 5))
    assert f.tolist() == [[255.0] * 3] * 3
    with pytest.raises(AekitError, match=r"not found: .*missing\.pt"):
        TorchScriptFeatures(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"garbage")
    with pytest.raises(AekitError, match=r"corrupt\.pt is not a readable TorchScript") as info:
        TorchScriptFeatures(tmp_path / "corrupt.pt")
    assert "\n" not in str(info.value)


# --- end to end ---------------------------------------------------------------------------------


def _tiny_vae():
    return aekit.build("vae", input_shape=(1, 8, 8), latent_dim=2, hidden=(16,))


def test_generation_metrics_end_to_end(tmp_path, monkeypatch):
    calls = _counting_trainer(monkeypatch)
    x, y = _labelled_images(60)
    data = TensorData(x, y)
    model = _tiny_vae()
    model.train()
    classifier = cached_classifier(x, y, name="tiny", cache_dir=tmp_path, epochs=1)
    results = generation_metrics(model, data, classifier, batch_size=25)
    assert model.training  # the mode is restored
    for key in [
        "fd_classifier_samples",
        "precision_samples",
        "recall_samples",
        "fd_classifier_reconstructions",
        "precision_reconstructions",
        "recall_reconstructions",
        "classifier_accuracy",
    ]:
        assert math.isfinite(results[key]), key
    assert results["fd_classifier_n"] == 60
    assert results["feature_extractor"] == (
        "aekit FeatureClassifier (trained on the dataset's labels), not Inception"
    )
    assert not any("fid" in key for key in results)
    assert 0 <= results["precision_samples"] <= 1

    # Same seed, same figures; a subset of n examples is reported as such.
    assert generation_metrics(model, data, classifier, batch_size=25) == results
    assert generation_metrics(model, data, classifier, n=20)["fd_classifier_n"] == 20

    # A second run reads the classifier from the cache instead of training it again.
    again = cached_classifier(x, y, name="tiny", cache_dir=tmp_path, epochs=1)
    assert len(calls) == 1
    assert generation_metrics(model, data, again, batch_size=25) == results


def test_generation_metrics_without_a_prior_has_a_note():
    x, y = _labelled_images(30)
    classifier, _ = train_classifier(x, y, epochs=1)
    model = aekit.build("ae", input_shape=(1, 8, 8), latent_dim=2, hidden=(16,))
    results = generation_metrics(model, TensorData(x, y), classifier)
    assert "fd_classifier_samples" not in results and "precision_samples" not in results
    assert "prior" in results["samples_note"]
    assert math.isfinite(results["fd_classifier_reconstructions"])


@jit_warnings
def test_generation_metrics_names_keys_after_the_extractor(probe_path):
    x, y = _labelled_images(30)
    data, model = TensorData(x, y), _tiny_vae()
    inception = TorchScriptFeatures(probe_path, image_size=8, inception=True)
    results = generation_metrics(model, data, extractor=inception)
    assert {"fid_samples", "fid_reconstructions", "fid_n"} <= set(results)
    assert "Inception" in results["feature_extractor"]
    assert "classifier_accuracy" not in results

    other = TorchScriptFeatures(probe_path, image_size=8)
    assert "fd_torchscript_samples" in generation_metrics(model, data, extractor=other)

    class Pixels:
        name = "Raw Pixels"

        def features(self, batch):
            return batch.flatten(1)

    results = generation_metrics(model, data, extractor=Pixels())
    assert {"fd_raw_pixels_samples", "fd_raw_pixels_reconstructions"} <= set(results)
    with pytest.raises(AekitError, match="feature extractor"):
        generation_metrics(model, data)


def test_generation_re_exports_the_feature_extractors():
    for name in (
        "FeatureClassifier",
        "TorchScriptFeatures",
        "cached_classifier",
        "data_fingerprint",
        "train_classifier",
    ):
        assert getattr(generation, name) is getattr(classifier_module, name)
