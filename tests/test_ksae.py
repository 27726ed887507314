"""The k-sparse autoencoder (Makhzani & Frey 2013) on images: the TopK bottleneck of the
sparse autoencoders on an image body, trained and reported from the command line, with the
sparse-code figures of its evaluation in the images' own terms."""

from __future__ import annotations

import json

import torch

import aekit
from aekit.cli import main


def test_ksae_trains_evaluates_and_reports_from_the_cli(tmp_path, capsys):
    run = tmp_path / "ksae"
    argv = ["train", "ksae", "--k", "5", "--latent-dim", "64", "--epochs", "10", "--out", str(run)]
    assert main(argv) == 0
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics["l0"] == 5.0  # exactly k kept, linear units (none rectified away)
    assert 0 < metrics["fvu"] < 1.0 and -1 <= metrics["cosine"] <= 1
    assert metrics["mse"] < 0.2  # per pixel of [0, 1] images
    assert metrics["n"] == 180 and "nll" in metrics
    page = (run / "report.html").read_text()
    assert "density.png" in page and "reconstructions.png" in page
    model = aekit.load(run)
    x = torch.rand(3, 1, 8, 8)
    assert ((model.encode(x) != 0).sum(1) == 5).all()
    assert model.bottleneck is not None and model.config.bottleneck.kind == "topk"
