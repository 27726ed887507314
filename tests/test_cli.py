"""The command line end to end on tiny data, and every bad input giving a one-line error and
a non-zero exit without losing what was written."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aekit.cli import main

TINY = [
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--channels",
    "4,8",
    "--hidden",
    "16",
    "--latent-dim",
    "2",
    "--no-progress",
]


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((80, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(80) % 4)
    return tmp_path


def run_cli(*args):
    return main([str(a) for a in args])


def error_of(capsys, *args):
    code = run_cli(*args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err and err[-1].startswith("aekit: error: "), err
    return err[-1]


@pytest.fixture
def trained(images, capsys):
    run = images / "run"
    assert (
        run_cli(
            "train",
            "vae",
            "--data",
            images / "x.npy",
            "--labels",
            images / "y.npy",
            "--out",
            run,
            *TINY,
        )
        == 0
    )
    capsys.readouterr()
    return run


def test_train_eval_sample_encode_report(trained, images, capsys):
    run = trained
    for name in (
        "config.json",
        "model.safetensors",
        "checkpoints/last.safetensors",
        "metrics.jsonl",
        "eval.json",
        "report.html",
        "figures/reconstructions.png",
    ):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["binarize"] is True and config["data"]["divisor"] == 255.0

    assert run_cli("eval", run) == 0
    out = capsys.readouterr().out
    assert "elbo" in out and "bits_per_dim" in out
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics["n"] == 8 and metrics["elbo"] < 0

    assert run_cli("sample", run, "-n", 12, "--out", images / "s.png") == 0
    assert np.load(images / "s.npy").shape == (12, 1, 8, 8)
    assert Image.open(images / "s.png").size[0] > 8

    assert run_cli("encode", run, "--out", images / "z.npy", "--labels-out", images / "zy.npy") == 0
    assert np.load(images / "z.npy").shape == (80, 2)
    assert np.array_equal(np.load(images / "zy.npy"), np.arange(80) % 4)
    assert run_cli("encode", run, "--split", "val", "--out", images / "zv.npy") == 0
    assert np.load(images / "zv.npy").shape == (8, 2)

    (run / "report.html").unlink()
    assert run_cli("report", run) == 0
    assert "vae" in (run / "report.html").read_text()


def test_resume_continues_a_run(trained, capsys):
    assert run_cli("train", "--resume", trained, "--epochs", "3", "--no-progress") == 0
    records = [json.loads(line) for line in (trained / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert json.loads((trained / "config.json").read_text())["train"]["epochs"] == 3
    message = error_of(capsys, "train", "--resume", trained, "--beta", "2")
    assert "--beta" in message and "cannot change" in message


def test_every_family_trains_from_the_cli(images, capsys):
    for recipe, extra in [
        ("ae", []),
        ("dae", ["--corruption", "gaussian", "--noise", "0.2"]),
        ("beta-vae", ["--beta", "2"]),
        ("beta-vae-capacity", ["--capacity-steps", "10"]),
        (
            "vae",
            [
                "--likelihood",
                "laplace",
                "--variance",
                "pixel",
                "--no-binarize",
                "--body",
                "mlp",
                "--free-bits",
                "0.1",
            ],
        ),
    ]:
        out = images / recipe
        assert (
            run_cli(
                "train",
                recipe,
                "--data",
                images / "x.npy",
                "--out",
                out,
                *TINY,
                "--no-report",
                *extra,
            )
            == 0
        ), recipe
    config = json.loads((images / "dae" / "config.json").read_text())["model"]
    assert config["corruption"] == {"kind": "gaussian", "noise": 0.2}
    config = json.loads((images / "beta-vae" / "config.json").read_text())["model"]
    assert config["objective"]["beta"] == 2.0
    assert run_cli("sample", images / "ae", "-n", "3") == 0  # from the fitted latent density
    (images / "ae" / "latent_density.safetensors").unlink()
    assert "learns no prior" in error_of(capsys, "sample", images / "ae")


def test_every_new_family_trains_from_the_cli(images, capsys):
    for recipe, extra in [
        ("iwae", ["--k", "3"]),
        ("miwae", ["--m", "2", "--k", "2"]),
        ("ciwae", ["--k", "3", "--beta", "0.3"]),
        ("piwae", ["--m", "2", "--k", "2"]),
        ("hvae", ["--top-dim", "1", "--level-hidden", "8"]),
        ("vamp", ["--prior-components", "5"]),
        ("rae", ["--regulariser", "l2"]),
        ("wae-mmd", ["--prior", "uniform"]),
        ("swae", ["--prior", "ring", "--projections", "8"]),
    ]:
        out = images / recipe
        args = ("--data", images / "x.npy", "--out", out, *TINY, "--no-report", "--nll-k", "5")
        assert run_cli("train", recipe, *args, *extra) == 0, recipe
        metrics = json.loads((out / "eval.json").read_text())["metrics"]
        assert ("marginal_nll" in metrics) == (recipe not in ("rae", "wae-mmd", "swae")), recipe
        assert run_cli("sample", out, "-n", "2") == 0, recipe
    capsys.readouterr()
    assert "unknown prior 'gauss'" in error_of(capsys, "train", "swae", "--prior", "gauss")
    assert "k must be at least 1 (got 0)" in error_of(capsys, "train", "iwae", "--k", "0")


def test_models_and_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert run_cli("models") == 0
    listing = capsys.readouterr().out
    for name in ("ae", "dae", "vae", "beta-vae", "beta-vae-capacity"):
        assert f"\n{name} " in "\n" + listing
    with pytest.raises(SystemExit):
        run_cli("train", "beta-vae", "--help")
    help_text = capsys.readouterr().out
    assert "--beta" in help_text and "default: 4.0" in help_text and "--noise" not in help_text
    with pytest.raises(SystemExit):
        run_cli("train", "dae", "--corruption", "salt-pepper", "--help")
    assert "--noise" in capsys.readouterr().out


def test_default_data_is_digits(tmp_path):
    run = tmp_path / "digits"
    assert run_cli("train", "vae", "--out", run, *TINY, "--no-report", "--limit", "64") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["source"] == "digits" and config["model"]["input_shape"] == [1, 8, 8]


def test_bad_inputs_give_one_line_errors(images, trained, capsys):
    np.save(
        images / "nan.npy", np.where(np.arange(64) == 5, np.nan, 0.5).reshape(1, 8, 8).repeat(4, 0)
    )
    np.save(images / "empty.npy", np.zeros((0, 8, 8)))
    np.save(images / "wide.npy", np.zeros((10, 9, 9), dtype=np.uint8))
    (images / "trunc.npy").write_bytes((images / "x.npy").read_bytes()[:200])
    np.save(images / "few.npy", np.arange(10))
    cases = [
        (("train", "vea"), "unknown model 'vea'"),
        (("train", "vae", "--data", "nowhere.npy", *TINY), "unknown data source"),
        (("train", "vae", "--data", images / "nan.npy", *TINY), "4 NaN"),
        (("train", "vae", "--data", images / "empty.npy", *TINY), "empty"),
        (("train", "vae", "--data", images / "trunc.npy", *TINY), "trunc.npy"),
        (
            ("train", "vae", "--data", images / "x.npy", "--labels", images / "few.npy", *TINY),
            "10 labels for 80 examples",
        ),
        (("train", "vae", "--epochs", "0"), "epochs must be at least 1"),
        (("eval", trained, "--data", images / "wide.npy"), "(1, 9, 9)"),
        (("eval", images / "nothing"), "run directory not found"),
        (("train", "vae", "--data", images / "x.npy", "--out", trained, *TINY), "already holds"),
    ]
    for args, expected in cases:
        assert expected in error_of(capsys, *args), args
    weights = trained / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:100])
    assert "corrupt" in error_of(capsys, "eval", trained)
    weights.write_bytes(good)


def test_console_script_exit_codes(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "aekit.cli", "models"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "vae" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "aekit.cli", "train", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith(
        "aekit: error: unknown model 'nope'; choose from ae, dae, vae, beta-vae, "
    )


def test_conditional_model_samples_a_chosen_class(images, capsys):
    run = images / "cvae"
    args = ("--data", images / "x.npy", "--labels", images / "y.npy", "--out", run, *TINY)
    assert run_cli("train", "cvae", *args) == 0
    assert json.loads((run / "config.json").read_text())["model"]["condition_classes"] == 4
    assert run_cli("sample", run, "--condition", "3", "-n", "4", "--out", images / "c3.png") == 0
    assert np.load(images / "c3.npy").shape == (4, 1, 8, 8)
    assert (run / "figures" / "samples.png").is_file()  # one row per class in the report
    assert run_cli("encode", run, "--out", images / "zc.npy") == 0  # each example, its label
    assert np.load(images / "zc.npy").shape == (80, 2)
    capsys.readouterr()
    assert "outside the trained range 0..3" in error_of(capsys, "sample", run, "--condition", "7")
    assert "pass a condition" in error_of(capsys, "sample", run)


def test_deterministic_model_samples_from_its_fitted_latent_density(images, capsys):
    run = images / "rae"
    assert run_cli("train", "rae", "--data", images / "x.npy", "--out", run, *TINY) == 0
    assert (run / "latent_density.safetensors").is_file()
    assert run_cli("sample", run, "-n", "5") == 0
    assert np.load(run / "samples.npy").shape == (5, 1, 8, 8)
    assert (run / "figures" / "samples.png").is_file()


def test_eval_reports_likelihood_with_k_and_gradient_snr(trained, capsys):
    assert run_cli("eval", trained, "--nll-k", "20", "--grad-snr", "1,4") == 0
    metrics = json.loads((trained / "eval.json").read_text())["metrics"]
    assert metrics["marginal_nll_k"] == 20 and "k=20" in metrics["marginal_nll_estimator"]
    assert metrics["gradient_snr"]["k"] == [1, 4]
    capsys.readouterr()
    assert "at least 1 (got 0)" in error_of(
        capsys, "eval", trained, "--nll-k", "0", "--grad-snr", "0"
    )
    assert "integers separated by commas" in error_of(capsys, "eval", trained, "--grad-snr", "a")


def test_eval_generation_metrics_use_a_cached_classifier(trained, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("AEKIT_CACHE", str(tmp_path / "cache"))
    assert run_cli("eval", trained, "--nll-k", "0", "--generation") == 0
    metrics = json.loads((trained / "eval.json").read_text())["metrics"]
    assert metrics["fd_classifier_samples"] >= 0 and "fid_samples" not in metrics
    assert list((tmp_path / "cache" / "classifiers").glob("*.safetensors"))
