import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from aekit.data import DataConfig, Splits, TensorData
from aekit.errors import AekitError
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
        "interpolation.png",
        "latent_pca.png",
        "prior_posterior.png",
    }
    check_pngs(run, names)
    assert not list(run.glob("figures/.*.tmp"))
    assert "spherical path" in page and "grey draws from the prior p(z)" in page


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
    # No prior: no samples, no collapse warning, and the 2-D scatter shows the codes alone.
    assert set(names) == {"curves.png", "latent_pca.png", "prior_posterior.png"}
    check_pngs(run, names)
    assert "Posterior collapse" not in page and "test 10" in page
    assert "no prior draws are shown" in page


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


def test_interpolation_figure_of_a_tiny_image_model(tmp_path):
    from aekit.report import figures

    model = build("vae", input_shape=(1, 8, 8), latent_dim=2, hidden=(16,)).train()
    path = figures.interpolation(model, torch.rand(5, 1, 8, 8), tmp_path / "i.png", steps=8)
    Image.open(path).verify()
    assert model.training  # restored after drawing
    with pytest.raises(AekitError, match="at least 2 examples"):
        figures.interpolation(model, torch.rand(1, 1, 8, 8), tmp_path / "j.png")
    vector = build("ae", input_shape=(6,), latent_dim=2, hidden=(16,))
    with pytest.raises(AekitError, match="needs image data"):
        figures.interpolation(vector, torch.rand(4, 6), tmp_path / "k.png")


def test_interpolation_paths_have_the_right_ends_and_norms():
    from aekit.report.figures import interpolate

    a, b = torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    for method in ("linear", "spherical"):
        path = interpolate(a, b, 9, method)
        assert path.shape == (2, 9, 2)
        torch.testing.assert_close(path[:, 0], a)
        torch.testing.assert_close(path[:, -1], b)
    # Slerp between equal-norm codes keeps the norm; the straight line cuts inside.
    norms = interpolate(a, b, 9, "spherical")[0].norm(dim=-1)
    torch.testing.assert_close(norms, torch.full((9,), 2.0))
    assert interpolate(a, b, 9, "linear")[0, 4].norm() < 1.5
    # Parallel codes (zero angle) fall back to the straight line instead of dividing by 0.
    torch.testing.assert_close(
        interpolate(a[1:], b[1:], 5, "spherical"), interpolate(a[1:], b[1:], 5)
    )


def test_prior_vs_posterior_scatter_with_and_without_a_prior(tmp_path):
    from aekit.report import figures

    x, y = torch.rand(30, 1, 8, 8), torch.arange(30) % 3
    vae = build("vae", input_shape=(1, 8, 8), latent_dim=2, hidden=(16,))
    prior = figures.prior_latents(vae, 30, seed=1)
    assert prior.shape == (30, 2)
    assert torch.equal(prior, figures.prior_latents(vae, 30, seed=1))
    Image.open(figures.prior_vs_posterior(vae, x, y, prior, tmp_path / "a.png")).verify()
    ae = build("ae", input_shape=(1, 8, 8), latent_dim=2, hidden=(16,))
    if not hasattr(ae, "sample_latents"):  # else a fitted latent density may supply draws
        assert figures.prior_latents(ae, 30) is None
    Image.open(figures.prior_vs_posterior(ae, x, None, None, tmp_path / "b.png")).verify()
    wide = build("vae", input_shape=(1, 8, 8), latent_dim=3, hidden=(16,))
    with pytest.raises(AekitError, match="latent_dim 2"):
        figures.prior_vs_posterior(wide, x, y, None, tmp_path / "c.png")


@pytest.mark.parametrize(
    ("metrics", "has_kl", "expected"),
    [
        ({"active_units": 2, "kl_per_dim": [3.0, 0.5, 1.0]}, True, None),
        ({"active_units": 1, "kl_per_dim": [3.0, 0.5, 1.0]}, True, "2 of the 3 latent dim"),
        ({"active_units": 3, "kl_per_dim": [3.0, 0.001, 1.0]}, True, "1 of the 3 have a test KL"),
        ({"active_units": 0}, True, "3 of the 3 latent dimensions are inactive"),
        ({"active_units": 0, "kl_per_dim": [0.0, 0.0, 0.0]}, False, None),  # no KL term
        ({"loss": 1.0}, True, None),  # nothing measured, nothing claimed
    ],
)
def test_collapse_warning_thresholds(metrics, has_kl, expected):
    from aekit.report.html import collapse_warning

    text = collapse_warning(metrics, 3, has_kl)
    if expected is None:
        assert text is None
    else:
        assert text.startswith("Posterior collapse") and expected in text
        assert "--kl-warmup-steps" in text and "--free-bits" in text and "latent_dim" in text
        assert ("inactive" in text) == (metrics["active_units"] < 3)  # only what is wrong


def test_collapse_warning_box_in_the_report(tmp_path):
    metrics = {"loss": 90.0, "kl": 0.5, "kl_per_dim": [0.5, 0.004], "active_units": 1}
    run, model = make_run(tmp_path, eval_metrics=metrics)
    page = build_report(run, model=model).read_text()
    assert '<p class="warning">Posterior collapse' in page and "(z1)" in page
    (tmp_path / "ok").mkdir()
    run2, model2 = make_run(tmp_path / "ok", eval_metrics={**metrics, "kl_per_dim": [0.5, 0.2]})
    assert "Posterior collapse" not in build_report(run2, model=model2).read_text()


def test_scatter_of_a_deterministic_model_uses_its_fitted_latent_density(tmp_path):
    from aekit.latent_density import fit_for_model

    run, model = make_run(tmp_path, recipe="ae", input_shape=(6,))
    if not hasattr(model, "sample_latents"):
        pytest.skip("this Autoencoder cannot carry a fitted latent density")
    data = TensorData(torch.rand(40, 6), torch.arange(40) % 2)
    model.latent_density = fit_for_model(model, data, components=2)
    page = build_report(run, model=model, splits=Splits(data, None, data, DataConfig("x.npy")))
    assert "prior_posterior.png" in referenced_figures(page.read_text())
    assert "grey draws from the fitted latent density" in page.read_text()
