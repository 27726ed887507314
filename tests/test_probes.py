"""Representation probes: the limits (codes that are the labels score 100 %, noise scores
chance), and `aekit eval RUN --probe` end to end with its one-line refusals."""

import json

import numpy as np
import pytest

from aekit.cli import main
from aekit.errors import AekitError
from aekit.eval.probes import KNN_PROBES, parse_probes, probe

TINY = ["--epochs", "2", "--batch-size", "32", "--channels", "4,8", "--hidden", "16"]
TINY += ["--no-progress"]


def one_hot(labels, classes):
    return np.eye(classes)[labels]


def test_codes_that_are_the_labels_score_100_percent():
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 5, 300), rng.integers(0, 5, 100)
    results = probe(["linear", "knn"], one_hot(train, 5), train, one_hot(test, 5), test)
    assert set(results) == {"linear", *KNN_PROBES}
    assert all(r.accuracy == 1.0 for r in results.values())
    assert "300 training codes of 5 dimensions" in results["linear"].protocol


def test_noise_codes_score_about_chance():
    rng = np.random.default_rng(1)
    train, test = rng.integers(0, 10, 2000), rng.integers(0, 10, 2000)
    results = probe(["linear", "knn"], rng.normal(size=(2000, 8)), train,
                    rng.normal(size=(2000, 8)), test)  # fmt: skip
    for name, result in results.items():  # chance is 0.10; sd of the accuracy ~ 0.007
        assert 0.06 < result.accuracy < 0.14, (name, result.accuracy)


def test_a_linear_probe_that_stops_short_says_so(monkeypatch):
    from aekit.eval import probes

    monkeypatch.setattr(probes, "LINEAR_MAX_ITER", 1)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 200)
    codes = rng.normal(size=(200, 5)) + labels[:, None]
    result = probe(["linear"], codes, labels, codes[:50], labels[:50])["linear"]
    assert "stopped at 1 iterations before converging" in result.protocol


def test_probe_names_and_sizes_are_checked():
    assert parse_probes("knn, linear,knn") == ["knn", "linear"]
    for text in ("svm", "linear,tree", ","):
        with pytest.raises(AekitError, match="unknown probe"):
            parse_probes(text)
    labels = np.arange(10) % 2
    with pytest.raises(AekitError, match="at least 20 training codes"):
        probe(["knn"], np.zeros((10, 3)), labels, np.zeros((4, 3)), labels[:4])
    with pytest.raises(AekitError, match="two classes"):
        probe(["linear"], np.zeros((30, 3)), np.zeros(30), np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(AekitError, match="NaN"):
        probe(["linear"], np.full((30, 3), np.nan), labels.repeat(3), np.zeros((4, 3)), labels[:4])


@pytest.fixture
def shapes(tmp_path):
    """8x8 images of 4 classes, each a bright quadrant over noise: a representation that
    keeps anything of the image separates them."""
    rng = np.random.default_rng(0)
    y = np.arange(400) % 4
    x = rng.random((400, 8, 8)) * 0.3
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 0.7
    np.save(tmp_path / "x.npy", (x * 255).astype(np.uint8))
    np.save(tmp_path / "y.npy", y)
    return tmp_path


def train(folder, recipe, capsys, *extra, name=None):
    run = folder / (name or recipe)
    argv = ["train", recipe, "--data", folder / "x.npy", "--out", run, *TINY, *extra]
    if recipe != "vqvae":  # a quantizer's latent width follows from its grid
        argv += ["--latent-dim", "4"]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    return run


@pytest.mark.parametrize("recipe", ["vae", "vqvae"])
def test_eval_probes_a_run_and_reports_it(shapes, capsys, recipe):
    extra = ["--labels", shapes / "y.npy"]
    if recipe == "vqvae":
        extra = [*extra, "--codebook-size", "8"]
    run = train(shapes, recipe, capsys, *extra)
    assert main(["eval", str(run), "--probe", "linear,knn", "--nll-k", "0"]) == 0
    out = capsys.readouterr().out
    assert "probe linear: accuracy" in out and "logistic regression" in out
    assert "probe knn20_cosine: accuracy" in out and "cosine distance" in out
    probes = json.loads((run / "eval.json").read_text())["metrics"]["probe"]
    assert set(probes) == {"linear", "knn20_cosine", "knn5_euclidean"}
    assert probes["linear"]["accuracy"] > 0.6  # chance: 0.25
    assert "fitted on 320 training codes" in probes["linear"]["protocol"]
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Representation probes" in page and "knn5_euclidean" in page


def test_probe_refusals_are_one_line(shapes, capsys):
    labelled = train(shapes, "ae", capsys, "--labels", shapes / "y.npy")
    unlabelled = train(shapes, "ae", capsys, name="unlabelled")
    conditional = train(shapes, "cvae", capsys, "--labels", shapes / "y.npy")
    cases = {
        (labelled, "--probe", "svm"): "unknown probe 'svm'",
        (labelled, "--probe", "linear", "--split", "train"): "use --split test or val",
        (labelled, "--probe", "linear", "--data", shapes / "x.npy"): "it takes no --data",
        (unlabelled, "--probe", "knn"): "--probe needs labels",
        (conditional, "--probe", "linear"): "its encoder reads the label",
    }
    for args, message in cases.items():
        assert main(["eval", *map(str, args), "--nll-k", "0"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("aekit: error: ") and message in err[0], err
