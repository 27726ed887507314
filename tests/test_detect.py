"""Anomaly detection: the scores' mathematics, the detector's label-free fit, tabular data, and
`aekit detect` end to end on tables made here."""

from __future__ import annotations

import csv
import dataclasses
import logging

import numpy as np
import pytest
import torch
from scipy.io import savemat
from sklearn.metrics import roc_auc_score

import aekit
from aekit.cli import main
from aekit.data.tabular import fit_standardization
from aekit.detector import Detector, DetectorConfig, tabular_layout
from aekit.errors import AekitError
from aekit.eval.anomaly import (
    check_finite,
    fit_reference,
    mahalanobis,
    mean_shift,
)

FAST = {"epochs": 15, "patience": 0, "batch_size": 32, "ensemble": 1}


def manifold_data(n_in=300, n_out=15, d=8, seed=0):
    """Inliers near a 2-D plane in d dimensions, outliers spread off it (labels 1)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(2, d))
    inliers = rng.normal(size=(n_in, 2)) @ basis + 0.05 * rng.normal(size=(n_in, d))
    outliers = rng.normal(scale=2.0, size=(n_out, d))
    x = np.concatenate([inliers, outliers])
    y = np.concatenate([np.zeros(n_in), np.ones(n_out)]).astype(int)
    order = rng.permutation(len(x))
    return x[order], y[order]


@pytest.fixture(scope="module")
def fitted():
    x, y = manifold_data()
    return Detector(**FAST).fit(x), x, y


# ------------------------------------------------------------------------- mathematics
def test_mahalanobis_matches_the_closed_form_and_its_training_mean():
    rng = np.random.default_rng(1)
    codes = torch.from_numpy(rng.normal(size=(200, 3)) @ rng.normal(size=(3, 3)))
    mean = codes.mean(0)
    cov = torch.cov(codes.T)
    precision = torch.linalg.inv(cov)
    d = mahalanobis(codes, mean, precision)
    diff = (codes[7] - mean).numpy()
    assert float(d[7]) == pytest.approx(diff @ np.linalg.inv(cov.numpy()) @ diff, rel=1e-10)
    # With the (n-1)-normalised covariance of the same rows, the mean squared distance over them
    # is exactly d (n - 1) / n.
    assert float(d.mean()) == pytest.approx(3 * 199 / 200, rel=1e-10)


def test_reference_statistics_of_a_trained_model(fitted):
    detector, x, _ = fitted
    member = detector.members[0]
    xs = torch.from_numpy(detector.standardization.apply(x))
    ref = fit_reference(member.model, xs)
    with torch.no_grad():
        codes = member.model.encode(xs).double()
    torch.testing.assert_close(ref.code_mean, codes.mean(0))
    distances = mahalanobis(codes, ref.code_mean, ref.code_precision)
    # pinv of a full-rank covariance: the same d (n - 1) / n identity
    latent = member.model.latent_dim
    assert float(distances.mean()) == pytest.approx(latent * (len(x) - 1) / len(x), rel=1e-6)


def test_mean_shift_moves_points_to_their_neighbourhood_mean():
    cluster = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    far = torch.tensor([[10.0, 10.0]])
    shifted = mean_shift(far, cluster, k=4, steps=1)
    torch.testing.assert_close(shifted, torch.tensor([[0.5, 0.5]]))
    # k = 1 on a reference row keeps it where it is
    torch.testing.assert_close(mean_shift(cluster, cluster, k=1, steps=3), cluster)


def test_standardization_drops_constant_columns_with_a_warning(caplog):
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(3, 2, 50), np.full(50, 7.0), rng.normal(-1, 5, 50)])
    with caplog.at_level(logging.WARNING):
        s = fit_standardization(x, "table")
    assert "dropped 1 constant column(s) (0-based: 1)" in caplog.text
    z = s.apply(x)
    assert z.shape == (50, 2)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
    with pytest.raises(AekitError, match="every one of the 2 columns is constant"):
        fit_standardization(np.ones((5, 2)), "table")


def test_check_finite_names_the_rows():
    with pytest.raises(AekitError, match=r"not finite for 2 of 4 examples \(0-based rows 1, 3\)"):
        check_finite(np.array([0.0, np.inf, 1.0, np.nan]), "nll")


def test_layout_never_wider_than_the_input():
    for d in range(2, 300, 7):
        hidden, latent = tabular_layout(d)
        assert 1 <= latent < d
        assert hidden[0] >= 2 * latent
    assert tabular_layout(1)[1] == 1


# -------------------------------------------------------------------------- the detector
def test_detector_finds_off_manifold_outliers(fitted):
    detector, x, y = fitted
    scores = detector.score_samples(x)
    assert roc_auc_score(y, scores) > 0.95
    np.testing.assert_array_equal(scores, detector.decision_scores_)


def test_threshold_flags_the_contamination_share_of_training_rows(fitted):
    detector, x, _ = fitted
    flagged = detector.predict(x).mean()
    assert flagged == pytest.approx(detector.config.contamination, abs=1 / len(x))
    np.testing.assert_allclose(
        detector.decision_function(x), detector.score_samples(x) - detector.threshold_
    )


def test_labels_never_change_the_fit():
    x, y = manifold_data(n_in=120, n_out=6)
    a = Detector(**FAST).fit(x, y).score_samples(x)
    b = Detector(**FAST).fit(x, np.random.default_rng(5).permutation(y)).score_samples(x)
    np.testing.assert_array_equal(a, b)


def test_an_ensemble_averages_its_members_z_scores():
    x, _ = manifold_data(n_in=120, n_out=6)
    pair = Detector(**{**FAST, "ensemble": 2}).fit(x)
    singles = [Detector(**FAST, seed=s).fit(x).score_samples(x) for s in (0, 1)]
    expected = np.mean([(s - s.mean()) / s.std() for s in singles], axis=0)
    np.testing.assert_allclose(pair.score_samples(x), expected, rtol=1e-9, atol=1e-9)


def test_save_and_load_give_the_same_scores(fitted, tmp_path):
    detector, x, _ = fitted
    detector.save(tmp_path / "det")
    loaded = Detector.load(tmp_path / "det")
    np.testing.assert_array_equal(loaded.score_samples(x), detector.score_samples(x))
    assert loaded.threshold_ == detector.threshold_
    assert not list((tmp_path / "det").glob("*.pt"))  # safetensors and JSON only


def test_every_score_from_one_fit(fitted):
    detector, x, y = fitted
    for score in ("reconstruction", "mahalanobis", "mean-shift"):
        values = detector.with_score(score).score_samples(x)
        assert values.shape == (len(x),) and np.isfinite(values).all()
    assert roc_auc_score(y, detector.with_score("reconstruction").score_samples(x)) > 0.9
    with pytest.raises(AekitError, match="no posterior density"):
        detector.with_score("nll")


def test_density_scores_of_a_vae_bound_each_other():
    x, y = manifold_data(n_in=150, n_out=8)
    vae = Detector(recipe="vae", score="nll", nll_k=200, **FAST).fit(x)
    nll = vae.score_samples(x)
    elbo = vae.with_score("elbo").score_samples(x)
    # -log p(x) estimated with 200 samples is below the negative ELBO on average (IWAE bound)
    assert nll.mean() < elbo.mean()
    assert roc_auc_score(y, nll) > 0.8


def test_detector_config_errors():
    with pytest.raises(AekitError, match=r"contamination must be in \(0, 0.5\] \(got 0.7\)"):
        DetectorConfig(contamination=0.7)
    with pytest.raises(AekitError, match="unknown score 'typo'"):
        DetectorConfig(score="typo")
    with pytest.raises(AekitError, match="at least 2"):
        Detector(**FAST).fit(np.ones((1, 3)))
    with pytest.raises(AekitError, match="not fitted"):
        Detector().score_samples(np.ones((2, 3)))
    with pytest.raises(AekitError, match="NaN"):
        Detector(**FAST).fit(np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]))
    with pytest.raises(AekitError, match="expected rows of 8 features"):
        x, _ = manifold_data(n_in=40, n_out=2)
        Detector(**FAST).fit(x).score_samples(np.ones((3, 5)))


# --------------------------------------------------------------------------- tabular data
def test_mat_files_are_standardised_tables(tmp_path):
    x, y = manifold_data(n_in=90, n_out=10)
    x = np.column_stack([x, np.full(len(x), 2.5)])  # a constant column
    savemat(tmp_path / "t.mat", {"X": x, "y": y[:, None].astype(float)})
    splits = aekit.load_data(aekit.DataConfig(source=str(tmp_path / "t.mat")))
    assert splits.train.x.shape[1] == 8 and splits.spec.columns == list(range(8))
    np.testing.assert_allclose(splits.train.x.mean(0), 0, atol=1e-5)
    assert splits.test.y is not None
    # the resolved spec (as saved in a run) rescales the file identically
    again = aekit.load_data(dataclasses.replace(splits.spec))
    torch.testing.assert_close(again.test.x, splits.test.x)


# ----------------------------------------------------------------------------- CLI runs
def write_csv(path, x, labels):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(x.shape[1])] + ["label"])
        for row, label in zip(x, labels, strict=True):
            w.writerow([*row.tolist(), int(label)])


def read_scores(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_detect_writes_one_score_per_row_in_order(tmp_path, capsys):
    x, y = manifold_data(n_in=120, n_out=6)
    savemat(tmp_path / "t.mat", {"X": x, "y": y[:, None]})
    out = tmp_path / "scores.csv"
    argv = ["detect", str(tmp_path / "t.mat"), "--out", str(out), "--epochs", "10"]
    assert main([*argv, "--score", "reconstruction+mahalanobis,reconstruction"]) == 0
    printed = capsys.readouterr().out
    assert "ROC-AUC" in printed and "labels not used in the fit" in printed
    rows = read_scores(out)
    assert len(rows) == len(x)
    assert [int(r["row"]) for r in rows] == list(range(len(x)))
    assert [int(r["label"]) for r in rows] == y.tolist()
    assert {"score", "outlier", "reconstruction"} <= set(rows[0])
    scores = np.array([float(r["score"]) for r in rows])
    auc = roc_auc_score(y, scores)
    assert f"ROC-AUC {auc:.4f}" in printed


def test_cli_scores_do_not_depend_on_the_labels(tmp_path):
    x, y = manifold_data(n_in=100, n_out=5)
    outs = []
    for name, labels in (("a", y), ("b", np.random.default_rng(3).permutation(y))):
        write_csv(tmp_path / f"{name}.csv", x, labels)
        out = tmp_path / f"{name}-scores.csv"
        argv = ["detect", str(tmp_path / f"{name}.csv"), "--label-column", "label"]
        assert main([*argv, "--out", str(out), "--epochs", "8"]) == 0
        outs.append([r["score"] for r in read_scores(out)])
    assert outs[0] == outs[1]


def test_cli_saved_detector_scores_new_rows(tmp_path):
    x, _ = manifold_data(n_in=100, n_out=5)
    np.save(tmp_path / "train.npy", x[:80])
    np.save(tmp_path / "new.npy", x[80:])
    first, second = tmp_path / "s1.csv", tmp_path / "s2.csv"
    argv = ["detect", str(tmp_path / "new.npy"), "--fit", str(tmp_path / "train.npy")]
    assert main([*argv, "--out", str(first), "--epochs", "5", "--save", str(tmp_path / "d")]) == 0
    argv = ["detect", str(tmp_path / "new.npy"), "--detector", str(tmp_path / "d")]
    assert main([*argv, "--out", str(second)]) == 0
    assert [r["score"] for r in read_scores(first)] == [r["score"] for r in read_scores(second)]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no-x", "no matrix named X (it holds: features"),
        ("nan", "1 NaN value; first at example 2, position 1"),
        ("one-row", "1 row(s)"),
        ("constant", "every one of the 3 columns is constant"),
        ("contamination", r"contamination must be in (0, 0.5] (got 0.6)"),
        ("score", "unknown score 'best'"),
    ],
)
def test_cli_detect_bad_input_is_one_line(tmp_path, capsys, case, expected):
    path = tmp_path / "t.mat"
    x = np.random.default_rng(0).normal(size=(30, 3))
    extra = []
    if case == "no-x":
        savemat(path, {"features": x})
    elif case == "nan":
        x[2, 1] = np.nan
        savemat(path, {"X": x})
    elif case == "one-row":
        savemat(path, {"X": x[:1]})
    elif case == "constant":
        savemat(path, {"X": np.ones((30, 3))})
    else:
        savemat(path, {"X": x})
        extra = ["--contamination", "0.6"] if case == "contamination" else ["--score", "best"]
    out = tmp_path / "scores.csv"
    assert main(["detect", str(path), "--out", str(out), "--epochs", "2", *extra]) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_png_bits_measure_image_complexity():
    from aekit.eval.anomaly import png_bits

    flat = torch.full((1, 1, 16, 16), 0.5)
    noise = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    bits = png_bits(torch.cat([flat, noise]))
    assert bits[0] < bits[1] and bits[1] > 8 * 16 * 16 * 0.8  # noise barely compresses
    with pytest.raises(AekitError, match="needs images"):
        png_bits(torch.rand(3, 10))


def test_cli_detect_with_a_trained_image_run(tmp_path, capsys):
    run = tmp_path / "vae"
    argv = ["train", "vae", "--epochs", "1", "--out", str(run), "--no-report", "--no-eval"]
    assert main([*argv, "--quiet"]) == 0
    out = tmp_path / "ood.csv"
    scores = "complexity,nll,reconstruction+mahalanobis"
    argv = ["detect", "digits", "--run", str(run), "--score", scores, "--nll-k", "5"]
    assert main([*argv, "--out", str(out)]) == 0
    rows = read_scores(out)
    assert len(rows) == 180 and {"score", "nll", "reconstruction+mahalanobis"} <= set(rows[0])
    # complexity = -log2 p(x) - PNG bits, with the same nll draws (same seed)
    splits = aekit.load_data(aekit.DataConfig(binarize=True))
    from aekit.eval.anomaly import png_bits

    bits = png_bits(splits.test.x).numpy()
    nll = np.array([float(r["nll"]) for r in rows])
    complexity = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose(complexity, nll / np.log(2) - bits, rtol=1e-6)
    assert main(["detect", "digits", "--run", str(run), "--epochs", "3"]) == 1
    assert "drop the detector's fitting flags" in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe, score",
    [
        ("dae", "scaled-reconstruction+mahalanobis"),
        ("vqvae", "scaled-reconstruction+mahalanobis"),
        ("ksae", "scaled-reconstruction"),  # a sparse code has no covariance
        ("sae-topk", "scaled-reconstruction"),
    ],
)
def test_any_recipe_detects_with_its_own_code_size(recipe, score):
    x, _ = manifold_data(n_in=60, n_out=4)
    detector = Detector(recipe=recipe, epochs=2, ensemble=1).fit(x)
    assert detector.config.score == score
    assert np.isfinite(detector.score_samples(x)).all()
