"""Parts combine across families, and a combination that cannot work is refused with one
line, never a traceback halfway through training."""

from __future__ import annotations

import json

import pytest
import torch

import aekit
from aekit.cli import main
from sae_fixtures import write_synthetic_store


def one_line_error(argv, capsys) -> str:
    """The error a command stops with: one line, after whatever it logged before."""
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("aekit: error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store"
    write_synthetic_store(path, rows=1200, sites={"a": 16, "b": 16})
    return path


def test_refused_combinations_say_why(tmp_path, store, capsys):
    base = ["--epochs", "1", "--no-report", "--batch-size", "256", "--out", str(tmp_path / "r")]
    acts = ["--activations", str(store)]
    message = one_line_error(["train", "ae", *acts, "--target-site", "b", *base], capsys)
    assert "paired target" in message and "reconstructs the input" in message
    message = one_line_error(
        ["train", "sae-topk", *acts, "--likelihood", "bernoulli", *base], capsys
    )
    assert "--likelihood gaussian --variance fixed" in message
    assert "prior" in one_line_error(["train", "wae-mmd", "--bottleneck", "categorical", *base],
                                     capsys)  # fmt: skip
    assert "k_start and k_steps" in one_line_error(["train", "ksae", "--k-start", "50", *base],
                                                   capsys)  # fmt: skip
    # Real-valued activations are not Bernoulli data: refused at the first batch.
    assert "[0, 1]" in one_line_error(["train", "vae", *acts, *base], capsys)
    with pytest.raises(aekit.AekitError, match="empty batch"):
        aekit.build("sae-topk", (16,), k=4).initialise(torch.empty(0, 16))


def test_parts_from_different_families_train_together(tmp_path, store, capsys):
    # A linear autoencoder: the dictionary body under the identity bottleneck.
    linear = aekit.build("ae", (1, 8, 8), 16, body="dictionary")
    x = torch.rand(8, 1, 8, 8)
    linear.backward(linear.train()(x))
    assert linear.decoder.W_dec.grad is not None
    # The k-sparse code through an objective that reads the dense code (RAE's |z|^2).
    ksae = aekit.build("ksae", (1, 8, 8), k=3, latent_dim=32, objective="rae", regulariser="l2")
    out = ksae.train()(x, step=0)
    assert out.terms["z_penalty"] > 0
    # A model of activations that is not sparse: trained, evaluated, reported (no browser).
    run = tmp_path / "ae"
    argv = ["train", "ae", "--activations", str(store), "--likelihood", "gaussian",
            "--epochs", "1", "--batch-size", "256", "--out", str(run), "--hidden", "8"]  # fmt: skip
    assert main(argv) == 0
    assert (run / "report.html").is_file() and not (run / "features").exists()


def test_a_group_with_warm_ups_longer_than_its_run(tmp_path, store, capsys):
    run = tmp_path / "relu"
    argv = ["train", "sae-relu", "--activations", str(store), "--site", "a,b", "--expansion", "2",
            "--epochs", "1", "--batch-size", "256", "--out", str(run), "--no-report"]  # fmt: skip
    assert main(argv) == 0
    assert "schedule ends" in capsys.readouterr().err  # the warning, not a crash
    config = json.loads((run / "config.json").read_text())
    config["kind"] = ["group"]
    (run / "config.json").write_text(json.dumps(config))
    assert "unknown run kind" in one_line_error(["eval", str(run)], capsys)
    assert "unknown run kind" in one_line_error(["train", "--resume", str(run)], capsys)
    config["kind"] = "autoencoder"
    (run / "config.json").write_text(json.dumps(config))
    assert "does not describe" in one_line_error(["train", "--resume", str(run)], capsys)
