import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from aekit.data import DataConfig, Splits, TensorData
from aekit.registry import build
from aekit.report import build_report, image_grid, is_image_shape, save_png
from aekit.train.checkpoint import save_weights, write_config

NET = {"channels": (4, 8), "hidden": (16,)}


def test_image_grid_grey_shape_padding_and_values():
    x = torch.rand(10, 1, 8, 8)
    grid = image_grid(x, nrow=5, padding=2, upscale=1)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 10 + 2, 5 * 10 + 2)
    assert grid[0, 0] == 128  # padding at the default mid grey
    np.testing.assert_array_equal(grid[2:10, 2:10], np.round(x[0, 0].numpy() * 255))


def test_image_grid_auto_upscale_rgb_clipping_and_square_default():
    x = np.full((4, 3, 8, 8), 2.0, dtype=np.float32)  # clipped to 1
    grid = image_grid(x, padding=0)
    assert grid.shape == (96, 96, 3)  # 2 x 2 tiles, each upscaled 6x to 48 px
    assert (grid == 255).all()
    assert image_grid(x[:3], nrow=10, padding=1, upscale=2).shape == (18, 3 * 17 + 1, 3)


def test_image_grid_rejects_bad_shapes(tmp_path):
    from aekit.errors import AekitError

    with pytest.raises(AekitError, match="C 1 or 3"):
        image_grid(torch.zeros(2, 2, 4, 4))
    assert is_image_shape((1, 8, 8)) and is_image_shape((3, 4, 4))
    assert not is_image_shape((6,)) and not is_image_shape((2, 8, 8))
    path = save_png(tmp_path / "a.png", image_grid(torch.rand(2, 3, 4, 4)))
    assert Image.open(path).size == (2 * 48 + 3, 50)  # two 4x4 tiles upscaled to 48 px


def make_run(tmp_path, recipe="vae", input_shape=(1, 8, 8), data=None, eval_metrics=None):
    run = tmp_path / "run"
    run.mkdir()
    model = build(recipe, input_shape=input_shape, latent_dim=2, **NET)
    save_weights(run / "model.safetensors", model)
    write_config(
        run, {"model": model.config.to_dict(), "train": {"epochs": 2, "lr": 0.001}, "data": data}
    )
    records = [
        {
            "epoch": e,
            "step": 10 * e,
            "lr": 0.001,
            "train": {"loss": loss, "nll": loss - 1.0},
            "val": {"loss": loss + 0.5, "nll": loss - 0.5, "mse": 0.1},
            "train_seconds": 1.0,
            "examples_per_second": 1234.0,
            "best": True,
        }
        for e, loss in ((1, 97.25), (2, 81.5))
    ]
    if recipe == "vae":
        for r in records:
            for split in ("train", "val"):
                r[split].update(kl=3.0, elbo=-r[split]["loss"])
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if eval_metrics is not None:
        (run / "eval.json").write_text(
            json.dumps({"split": "test", "data": "digits", "metrics": eval_metrics})
        )
    return run, model


def referenced_figures(page):
    names = re.findall(r'src="(figures/[^"]+)"', page)
    assert len(names) == len(set(names))
    return [n.split("/")[1] for n in names]


def check_pngs(run, names):
    for name in names:
        with Image.open(run / "figures" / name) as image:
            image.verify()
            assert image.format == "PNG"


def test_report_of_an_image_vae_with_data_from_its_config(tmp_path):
    metrics = {
        "loss": 80.75,
        "elbo": -80.75,
        "kl": 3.5,
        "mse": 0.0625,
        "n": 180,
        "kl_per_dim": [3.0, 0.5],
        "code_variance": [1.0, 0.02],
        "active_units": 2,
    }
    run, _ = make_run(
        tmp_path, data=DataConfig(source="digits", binarize=True).to_dict(), eval_metrics=metrics
    )
    path = build_report(run)
    page = path.read_text()
    assert path == run / "report.html"
    for text in ("97.25", "81.5", "82", "1234", "80.75", "0.0625", "digits", "gaussian", "elbo"):
        assert text in page
    assert "code_variance" not in page and "Posterior collapse" not in page
    names = referenced_figures(page)
    assert set(names) == {
        "curves.png",
        "kl_per_dim.png",
        "reconstructions.png",
        "samples.png",
        "traversal.png",
        "latent_pca.png",
    }
    check_pngs(run, names)
    assert not list(run.glob("figures/.*.tmp"))


def test_vector_autoencoder_gets_curves_and_pca_only(tmp_path):
    run, model = make_run(
        tmp_path, recipe="ae", input_shape=(6,), eval_metrics={"loss": 1.5, "active_units": 0}
    )
    x = torch.rand(50, 6)
    splits = Splits(
        TensorData(x[:40], torch.arange(40) % 3),
        None,
        TensorData(x[40:], torch.arange(10) % 3),
        DataConfig(source="x.npy"),
    )
    page = build_report(run, model=model, splits=splits).read_text()
    names = referenced_figures(page)
    assert set(names) == {"curves.png", "latent_pca.png"}  # no prior: no samples, no collapse
    check_pngs(run, names)
    assert "Posterior collapse" not in page and "test 10" in page


def test_unloadable_data_still_gives_a_report_with_a_note(tmp_path):
    data = DataConfig(source=str(tmp_path / "gone.npy")).to_dict()
    run, _ = make_run(tmp_path, data=data, eval_metrics={"loss": 90.0, "active_units": 0})
    page = build_report(run).read_text()
    assert "could not be loaded" in page and "gone.npy" in page
    assert "Posterior collapse" in page
    names = referenced_figures(page)
    assert set(names) == {"curves.png", "samples.png"}
    check_pngs(run, names)


def test_report_escapes_strings(tmp_path):
    run, model = make_run(tmp_path, eval_metrics={"estimator": "<b>x</b>"})
    page = build_report(run, model=model).read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "No data section" in page


@pytest.mark.parametrize("latent_dim", [1, 5])
def test_latent_figures_on_edge_cases_keep_the_model_in_training_mode(tmp_path, latent_dim):
    from aekit.report import figures

    model = build("vae", input_shape=(1, 8, 8), latent_dim=latent_dim, **NET).train()
    x = torch.rand(1, 1, 8, 8)  # one example: no spread to order or project
    for path in (
        figures.latent_pca(model, x, None, tmp_path / "pca.png"),
        figures.traversal(model, x, tmp_path / "traversal.png", dims=3, steps=4),
    ):
        Image.open(path).verify()
    assert model.training
