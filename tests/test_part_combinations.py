"""Parts combine across families, and a combination that cannot work is refused with one
line, never a traceback halfway through training."""

from __future__ import annotations

import json

import pytest
import torch

import aekit
from aekit.cli import main
from aekit.data.tensor_data import Batch, TensorData
from aekit.eval.metrics import evaluate
from aekit.objectives import OBJECTIVES
from aekit.priors import PRIORS
from aekit.registry import RECIPES
from conftest import recipe_setup
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


class PairedRows:
    """Rows with a paired target, as a transcoder's evaluation reads them."""

    name, shape, target_shape = "paired", (6,), (5,)

    def __init__(self, x, target):
        self.x, self.target = x, target

    def __len__(self):
        return len(self.x)

    def batches(self, batch_size, **_):
        for i in range(0, len(self.x), batch_size):
            yield Batch(self.x[i : i + batch_size], self.target[i : i + batch_size])


def combinations():
    for name in RECIPES:
        for objective in (None, *OBJECTIVES.names()):
            for prior in (None, *PRIORS.names()):
                yield name, objective, prior


def test_every_combination_is_refused_when_built_or_trains_and_evaluates():
    shape, ran, failures = (6,), 0, []
    for name, objective, prior in combinations():
        options = recipe_setup(name, shape, 4)
        options.update({k: v for k, v in (("objective", objective), ("prior", prior)) if v})
        if objective == "beta-tcvae":  # the Trainer would take it from the data
            options["dataset_size"] = 8
        try:
            model = aekit.build(name, shape, **options)
        except aekit.AekitError as e:
            assert "\n" not in str(e), (name, objective, prior, str(e))
            continue
        try:
            x = torch.rand(8, *shape).round()
            labels = torch.arange(8) % 3 if model.conditional else None
            target = torch.rand(8, 5) if model.paired else None
            model.train()
            model.backward(model(x, step=0, condition=labels, target=target))
            model.after_step()
            evaluate(
                model,
                PairedRows(x, target) if model.paired else TensorData(x, labels),
                batch_size=4,
            )
            ran += 1
        except Exception as e:  # every failure is listed, then reported at once
            failures.append(f"{name} objective={objective} prior={prior}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)
    assert ran > 100  # the refusals are not all there is


def test_a_prior_or_objective_that_cannot_serve_the_other_part_is_refused_in_one_line():
    for objective in ("wae-mmd", "swae"):
        with pytest.raises(aekit.AekitError, match="'hierarchical' bottleneck") as e:
            aekit.build("hvae", (6,), 4, hidden=(8,), objective=objective)
        assert objective in str(e.value)
    with pytest.raises(aekit.AekitError, match=r"'vamp' prior.*conditional 'cvae'"):
        aekit.build("cvae", (6,), 4, hidden=(8,), prior="vamp", condition_classes=3)
