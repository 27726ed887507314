"""Disentanglement: procedural dSprites, beta-TCVAE's decomposed KL, FactorVAE's
discriminator trained inside the one loop, QLAE's scalar codebooks."""

import json
import math

import numpy as np
import pytest
import torch

import aekit
from aekit.data import DataConfig, dsprites, load_all, load_data
from aekit.errors import AekitError
from aekit.io import read_safetensors
from aekit.objectives.total_correlation import (
    decomposed_kl,
    log_mixture_weights,
    permute_dims,
)
from aekit.train import checkpoint as ckpt
from aekit.train.config import TrainConfig
from aekit.train.trainer import Trainer


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AEKIT_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- procedural dSprites


def test_grid_sizes_and_order():
    full = dsprites.FactorGrid(1)
    assert full.sizes == (3, 6, 40, 32, 32) and len(full) == 737_280
    assert len(dsprites.FactorGrid(2)) == 3 * 3 * 20 * 16 * 16 == 46_080
    assert len(dsprites.FactorGrid(4)) == 3 * 2 * 10 * 8 * 8 == 3_840
    f = dsprites.FactorGrid(5).factors()
    assert f.shape == (2_352, 5)
    # The original's order: shape slowest, y fastest; every combination once.
    assert (f[1] - f[0]).tolist() == [0, 0, 0, 0, 1]
    assert len(np.unique(f, axis=0)) == len(f)
    for bad in (0, 6, 2.0):
        with pytest.raises(AekitError, match="subset"):
            dsprites.FactorGrid(bad)


def test_each_factor_moves_the_sprite_as_named():
    values = dsprites.FactorGrid(1).values

    def image(shape=0, scale=5, angle=0, x=16, y=16):
        picked = [values[0][shape], values[1][scale], values[2][angle], values[3][x], values[4][y]]
        return dsprites.render(*(np.array([v]) for v in picked))[0]

    def centre(im):
        rows, cols = np.nonzero(im)
        return rows.mean(), cols.mean()

    # x moves the sprite right, y moves it down, and both keep it inside the image.
    assert centre(image(x=31))[1] > centre(image(x=0))[1] + 30
    assert centre(image(y=31))[0] > centre(image(y=0))[0] + 30
    for x, y in ((0, 0), (31, 31)):
        im = image(x=x, y=y, angle=5)  # the square at 45 degrees reaches farthest
        assert im.any() and not (im[0].any() or im[-1].any() or im[:, 0].any() or im[:, -1].any())
    # Area grows as scale^2: scale 1 against 0.5.
    assert image(scale=5).sum() / image(scale=0).sum() == pytest.approx(4.0, rel=0.1)
    # The square is 16 pixels a side at scale 1; the three shapes differ.
    assert image(shape=0).sum() == 256
    assert len({image(shape=s).tobytes() for s in range(3)}) == 3
    # A quarter turn leaves the square as it is (dSprites' symmetry), not the heart.
    assert (image(shape=0, angle=10) == image(shape=0)).mean() > 0.99
    assert not np.array_equal(image(shape=2, angle=10), image(shape=2))
    # The ellipse's long axis turns from horizontal to vertical.
    rows, cols = np.nonzero(image(shape=1))
    assert np.ptp(cols) > 1.5 * np.ptp(rows)
    rows, cols = np.nonzero(image(shape=1, angle=10))
    assert np.ptp(rows) > 1.5 * np.ptp(cols)


def test_cached_as_bits_and_redrawn_when_damaged(tmp_path):
    x, factors, grid = dsprites.load(5)
    path = dsprites.cache_path(grid)
    assert path.is_file() and path.stat().st_size < len(grid) * 520
    assert x.shape == (2_352, 1, 64, 64) and x.dtype == np.uint8 and set(np.unique(x)) == {0, 1}
    again, factors_again, _ = dsprites.load(5)  # read from the cache
    assert np.array_equal(again, x) and np.array_equal(factors_again, factors)
    # Each image is the drawing of its factors.
    values = grid.values
    i = 1_234
    drawn = dsprites.render(*(np.array([values[k][factors[i, k]]]) for k in range(5)))[0]
    assert np.array_equal(drawn, x[i, 0])
    path.write_bytes(b"not an npz")
    redrawn, _, _ = dsprites.load(5)
    assert np.array_equal(redrawn, x)


def test_data_source_carries_the_factors_through_splits():
    splits = load_data(DataConfig(source="dsprites", subset=5))
    n = len(splits.train) + len(splits.val) + len(splits.test)
    assert n == 2_352 and splits.train.shape == (1, 64, 64)
    assert splits.train.factor_names == dsprites.FACTOR_NAMES
    assert splits.class_names == list(dsprites.SHAPES)
    for part in (splits.train, splits.val, splits.test):
        assert part.factors.shape == (len(part), 5)
        assert torch.equal(part.y, part.factors[:, 0])  # the labels are the shape
        assert float(part.x.max()) == 1.0  # 0/1 pixels, not divided by 255
    every = load_all(DataConfig(source="dsprites", subset=5))
    assert len(every) == 2_352 and every.factors.max(0).values.tolist() == [2, 1, 7, 6, 6]
    sub = every.subset(torch.tensor([3, 7]))
    assert torch.equal(sub.factors, every.factors[[3, 7]])
    with pytest.raises(AekitError, match="subset applies only to dsprites"):
        load_data(DataConfig(source="digits", subset=2))


# ---------------------------------------------------------------- beta-TCVAE


def gaussian_output(mu, logvar, seed=0):
    """A gaussian bottleneck's output for given posteriors (one draw each)."""
    torch.manual_seed(seed)
    b = aekit.build("beta-tcvae", (4,), latent_dim=mu.shape[1], dataset_size=len(mu)).bottleneck
    return b(torch.cat([mu, logvar], 1))


def exact_log_qz(z, mu, logvar):
    """log (1/N sum_j q(z_i|x_j)) over the whole data set, with torch.distributions."""
    dist = torch.distributions.Normal(mu.unsqueeze(0), (0.5 * logvar).exp().unsqueeze(0))
    per_dim = dist.log_prob(z.unsqueeze(1))  # (i, j, d)
    n = len(mu)
    joint = torch.logsumexp(per_dim.sum(2), 1) - math.log(n)
    marginals = (torch.logsumexp(per_dim, 1) - math.log(n)).sum(1)
    return joint, marginals


def test_stratified_estimate_is_exact_when_the_batch_is_the_data_set():
    torch.manual_seed(1)
    mu, logvar = torch.randn(6, 3), torch.randn(6, 3) * 0.3
    b = gaussian_output(mu, logvar)
    t = decomposed_kl(b, dataset_size=6, estimator="mss")
    joint, marginals = exact_log_qz(b.z, mu, logvar)
    log_q = b.log_q[0]
    assert torch.allclose(t.mutual_information, log_q - joint, atol=1e-5)
    assert torch.allclose(t.total_correlation, joint - marginals, atol=1e-5)
    # The three parts sum to the single-draw KL estimate log q(z|x) - log p(z).
    total = t.mutual_information + t.total_correlation + t.dimension_kl
    assert torch.allclose(total, log_q - b.log_prior[0], atol=1e-5)


def test_weighted_estimate_is_the_papers_formula():
    torch.manual_seed(2)
    mu, logvar = torch.randn(5, 2), torch.randn(5, 2) * 0.3
    b = gaussian_output(mu, logvar)
    t = decomposed_kl(b, dataset_size=1000, estimator="mws")
    joint, marginals = exact_log_qz(b.z, mu, logvar)  # here: the batch mean, minus log 5
    # mws: logsumexp_j log q(z_i|x_j) - log(N M), per dimension likewise.
    joint_mws = joint + math.log(5) - math.log(5000)
    marginals_mws = marginals + 2 * (math.log(5) - math.log(5000))
    assert torch.allclose(t.total_correlation, joint_mws - marginals_mws, atol=1e-5)
    assert torch.allclose(t.mutual_information, b.log_q[0] - joint_mws, atol=1e-5)


def test_identical_factorised_posteriors_have_no_information_and_no_correlation():
    mu = torch.tensor([[0.3, -1.0]]).repeat(4, 1)
    logvar = torch.tensor([[-0.5, 0.2]]).repeat(4, 1)
    b = gaussian_output(mu, logvar)
    t = decomposed_kl(b, dataset_size=4, estimator="mss")
    assert torch.allclose(t.total_correlation, torch.zeros(4), atol=1e-5)
    assert torch.allclose(t.mutual_information, torch.zeros(4), atol=1e-5)
    # mws normalises the joint and each of the D marginals by log(N M) where the batch's
    # mixture of M posteriors is one of M: its TC carries (D - 1) log N, its MI log N.
    w = decomposed_kl(b, dataset_size=4, estimator="mws")
    assert torch.allclose(w.total_correlation, torch.full((4,), math.log(4)), atol=1e-5)
    assert torch.allclose(w.mutual_information, torch.full((4,), math.log(4)), atol=1e-5)
    expected = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)  # KL to N(0, I)
    assert torch.allclose(t.dimension_kl.mean(), expected.mean(), atol=0.5)


def test_mixture_weights_sum_to_one():
    for estimator, n in (("mss", 50), ("mss", 8), ("mws", 8)):
        w = log_mixture_weights(8, n, estimator).exp()
        expected = 1.0 if estimator == "mss" else 1 / n
        assert torch.allclose(w.sum(1), torch.full((8,), expected), atol=1e-6)


def test_trainer_gives_beta_tcvae_the_data_set_size(tmp_path):
    x = (torch.rand(90, 8) > 0.5).float()
    model = aekit.build("beta-tcvae", (8,), latent_dim=3, hidden=(8,))
    with pytest.raises(AekitError, match="number of training examples"):
        model(x[:4])
    config = TrainConfig(epochs=1, batch_size=30, progress=False, out=str(tmp_path / "run"))
    Trainer(model, x[:60], x[60:], config).fit()
    saved = ckpt.read_config(tmp_path / "run")
    assert saved["model"]["objective"]["dataset_size"] == 60
    loaded = ckpt.load(tmp_path / "run")
    out = loaded(x[:4])
    assert {"mutual_information", "total_correlation", "dimension_kl", "elbo"} <= set(out.terms)


# ---------------------------------------------------------------- FactorVAE


def test_permuting_dimensions_keeps_every_marginal_and_breaks_the_joint():
    torch.manual_seed(3)
    a = torch.randn(500, 1)
    z = torch.cat([a, a, -a], 1)  # perfectly dependent columns
    p = permute_dims(z)
    for d in range(3):
        assert torch.equal(p[:, d].sort().values, z[:, d].sort().values)
    correlation = torch.corrcoef(p.T)
    assert correlation[0, 1].abs() < 0.2 and correlation[0, 2].abs() < 0.2


def factor_vae(**kw):
    return aekit.build(
        "factor-vae", (8,), latent_dim=3, hidden=(8,), discriminator_width=8,
        discriminator_layers=1, **kw,
    )  # fmt: skip


def test_discriminator_has_its_own_optimiser_in_the_one_loop():
    torch.manual_seed(4)
    x = (torch.rand(64, 8) > 0.5).float()
    model = factor_vae()
    trainer = Trainer(model, x, None, TrainConfig(epochs=1, batch_size=16, progress=False))
    (step,) = model.auxiliary_steps()
    assert step.name == "discriminator"
    disc = {id(p) for p in model.auxiliary.parameters()}
    assert disc == {id(p) for p in step.parameters}
    assert not disc & {id(p) for p in trainer._model_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = trainer.fit()
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith("auxiliary."))
    assert not torch.equal(before["encoder.net.0.weight"], after["encoder.net.0.weight"])
    terms = result.history[-1]["train"]
    assert {"discriminator_loss", "discriminator_accuracy", "total_correlation"} <= set(terms)
    assert terms["discriminator_loss"] == pytest.approx(math.log(2), abs=0.3)
    optimizer = trainer.auxiliary_optimizers["discriminator"]
    assert optimizer.defaults["betas"] == (0.5, 0.9) and optimizer.defaults["lr"] == 1e-4


def test_the_discriminator_learns_to_tell_dependent_codes_from_permuted_ones():
    torch.manual_seed(5)
    model = factor_vae(discriminator_lr=1e-2)
    a = torch.randn(256, 1)
    z = torch.cat([a, a + 0.05 * torch.randn(256, 1), torch.randn(256, 1)], 1)
    b = aekit.bottlenecks.base.BottleneckOutput(z=z, code=z)
    optimizer = model.objective.auxiliary_optimizer(list(model.auxiliary.parameters()))
    for _ in range(300):
        out = model.objective.auxiliary_loss(b)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert out.terms["discriminator_accuracy"] > 0.8
    logits = model.auxiliary(z)
    assert float((logits[:, 0] - logits[:, 1]).mean().detach()) > 0.5  # a positive TC estimate


@pytest.mark.parametrize("name", ["factor-vae", "qlae", "beta-tcvae"])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, name):
    torch.manual_seed(6)
    x = (torch.rand(80, 1, 8, 8) > 0.5).float()
    options = {"channels": (4,), "hidden": (8,)}
    if name == "factor-vae":
        options.update(discriminator_width=8, discriminator_layers=1)

    def run(out, epochs, resume=False):
        torch.manual_seed(0)
        model = aekit.build(name, (1, 8, 8), **options)
        config = TrainConfig(
            epochs=epochs, batch_size=16, progress=False, out=str(out), checkpoint_every=3
        )
        Trainer(model, x[:64], x[64:], config).fit(resume=resume)

    run(tmp_path / "a", 3)
    run(tmp_path / "b", 1)
    run(tmp_path / "b", 3, resume=True)
    # Every tensor of the checkpoints: the model's, its optimiser's and the discriminator's.
    a, _ = read_safetensors(tmp_path / "a" / ckpt.LAST, "checkpoint")
    b, _ = read_safetensors(tmp_path / "b" / ckpt.LAST, "checkpoint")
    assert a.keys() == b.keys()
    if name == "factor-vae":
        assert any(k.startswith("auxiliary/discriminator/") for k in a)
    for key in a:
        if not key.startswith("random/"):
            assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------- QLAE


def test_each_latent_snaps_to_the_nearest_value_of_its_own_codebook():
    model = aekit.build("qlae", (6,), latent_dim=3, hidden=(8,), values_per_latent=4)
    q = model.bottleneck
    with torch.no_grad():
        q.values.copy_(torch.tensor([[-1.0, 0, 1, 2], [0, 10, 20, 30], [-5, -4, -3, -2]]))
    h = torch.tensor([[0.4, 26.0, -10.0], [1.6, -3.0, -2.4]], requires_grad=True)
    out = q(h)
    assert torch.equal(out.z, torch.tensor([[0.0, 30, -5], [2, 0, -2]]))
    assert out.params["indices"].tolist() == [[[1, 3, 0]], [[3, 0, 3]]]
    assert torch.equal(q.codes_from_indices(out.params["indices"]), out.z.detach())
    # Straight-through to the encoder; the codebook learns from the quantization loss only.
    out.z.sum().backward(retain_graph=True)
    assert torch.equal(h.grad, torch.ones_like(h)) and q.values.grad is None
    h.grad = None
    out.losses["quantization"].sum().backward(retain_graph=True)
    assert h.grad is None and q.values.grad.abs().sum() > 0
    # Both losses are the paper's means over latents, scaled by the 6 input values.
    err = (h.detach() - out.z.detach()).pow(2).mean(1)
    assert torch.allclose(out.losses["commitment"], 0.001 * 6 * err)
    assert q.codebook_sizes == (4, 4, 4)


def test_qlae_recipe_is_the_papers():
    model = aekit.build("qlae", (1, 16, 16))
    assert model.latent_dim == 10 and model.bottleneck.values.shape == (10, 10)
    assert torch.allclose(model.bottleneck.values[0], torch.linspace(-0.5, 0.5, 10))
    assert model.config.body.kind == "auto"  # one flat latent, not a grid of code vectors
    defaults = aekit.recipes.get_recipe("qlae").train
    assert defaults["optimizer"] == "adamw" and defaults["weight_decay"] == 0.1
    codes = model.encode(torch.rand(5, 1, 16, 16))
    rows = model.bottleneck.traversals(codes, rows=2, steps=7)
    assert len(rows) == 2 and rows[0][1].shape == (10, 10)


# ---------------------------------------------------------------- the command line

TINY = ["--channels", "4,8", "--hidden", "16", "--batch-size", "128", "--no-progress"]


def cli_error(argv, capsys) -> str:
    from aekit.cli import main

    assert main(argv) != 0
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert err and err[-1].startswith("aekit: error:"), err
    return err[-1]


def test_train_eval_and_report_the_disentanglement_of_a_beta_tcvae(tmp_path, capsys):
    from aekit.cli import main

    run = tmp_path / "btc"
    argv = ["train", "beta-tcvae", "--data", "dsprites", "--subset", "5", "--epochs", "1",
            "--out", str(run), "--no-report", "--no-eval", *TINY]  # fmt: skip
    assert main(argv) == 0
    assert ckpt.read_config(run)["model"]["objective"]["dataset_size"] == 1_882
    capsys.readouterr()
    assert main(["eval", str(run), "--disentanglement", "--nll-k", "0"]) == 0
    printed = capsys.readouterr().out
    for name in ("beta_vae", "factor_vae", "mig", "dci_disentanglement", "dci_completeness",
                 "dci_informativeness", "sap", "infom", "infoc", "infoe",
                 "mig[sampled, without shape]"):  # fmt: skip
        assert f"{name}  " in printed, name
    # The sample sizes fit the 2,352 images of the sub-grid: 2/3 fitted, 1/3 scored.
    assert "1,568 fitted / 784 scored" in printed
    result = json.loads((run / "eval.json").read_text())["metrics"]["disentanglement"]
    assert result["examples"] == 2_352 and result["factors"] == list(dsprites.FACTOR_NAMES)
    assert len(result["infomec"]["nmi"]) == 5 and len(result["infomec"]["nmi"][0]) == 10
    variants = {(v["codes"], v["factors"]) for v in result["mig_variants"]}
    assert variants == {(c, f) for c in ("mean", "sampled") for f in ("all", "without shape")}
    for score in ("beta_vae", "factor_vae"):
        assert 0 <= result[score]["score"] <= 1
    # The variants are computed, not copied: sampled codes differ from the means.
    by_variant = {(v["codes"], v["factors"]): v["mig"] for v in result["mig_variants"]}
    assert by_variant[("mean", "all")] == pytest.approx(result["mig"]["mig"])
    assert main(["eval", str(run), "--disentanglement", "--nll-k", "0", "--mig-codes",
                 "sampled", "--mig-factors", "scale,orientation,x,y", "--factor-samples",
                 "600"]) == 0  # fmt: skip
    result = json.loads((run / "eval.json").read_text())["metrics"]["disentanglement"]
    assert result["mig"]["factors"] == ["scale", "orientation", "x", "y"]
    assert result["mig"]["codes"] == "sampled" and result["dci"]["num_train"] == 600
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "factor_information.png" in page and "factor_traversals.png" in page
    assert "Disentanglement against the factors shape, scale" in page
    for figure in ("factor_information", "factor_traversals"):
        assert (run / "figures" / f"{figure}.png").stat().st_size > 1000


def test_disentanglement_refusals_are_one_line(tmp_path, capsys):
    from aekit.cli import main

    run = tmp_path / "digits"
    assert main(["train", "vae", "--epochs", "1", "--out", str(run), "--no-report",
                 "--no-eval", *TINY]) == 0  # fmt: skip
    error = cli_error(["eval", str(run), "--disentanglement"], capsys)
    assert "no ground-truth factors" in error
    run = tmp_path / "ds"
    assert main(["train", "ae", "--data", "dsprites", "--subset", "5", "--epochs", "1",
                 "--out", str(run), "--no-report", "--no-eval", *TINY]) == 0  # fmt: skip
    assert "needs at least" in cli_error(
        ["eval", str(run), "--disentanglement", "--factor-samples", "5000"], capsys
    )
    assert "--mig-factors names factors" in cli_error(
        ["eval", str(run), "--disentanglement", "--mig-factors", "colour"], capsys
    )
    assert "subset must be from 1 to 5" in cli_error(
        ["train", "ae", "--data", "dsprites", "--subset", "6"], capsys
    )


def test_factor_vae_resumes_from_the_command_line_to_the_same_weights(tmp_path):
    from aekit.cli import main

    common = ["factor-vae", "--data", "dsprites", "--subset", "5", "--no-report", "--no-eval",
              "--discriminator-width", "8", "--discriminator-layers", "1", *TINY]  # fmt: skip
    assert main(["train", *common, "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *common, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--epochs", "2"]) == 0
    a = ckpt.read_weights(tmp_path / "a" / ckpt.WEIGHTS)
    b = ckpt.read_weights(tmp_path / "b" / ckpt.WEIGHTS)
    assert any(k.startswith("auxiliary.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
