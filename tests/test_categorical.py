"""Relaxed categorical latents (Gumbel-softmax VAE) and JointVAE: the analytic KL, the
temperature schedule, exact draws out of training, the straight-through estimator, a capacity
per kind of latent, and the objectives that refuse a bottleneck without densities."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import kl_divergence

import aekit
from aekit.bottlenecks.categorical import CategoricalOptions, RelaxedCategorical, categorical_kl
from aekit.cli import main
from aekit.components import Dims
from conftest import TINY_NET


def bottleneck(**options) -> RelaxedCategorical:
    o = CategoricalOptions(**{"variables": 3, "categories": 4, **options})
    return RelaxedCategorical(o, Dims((5,), o.latent_width()))


def test_the_kl_to_the_uniform_prior_is_the_closed_form():
    logits = torch.randn(7, 3, 4)
    q = TorchCategorical(logits=logits)
    uniform = TorchCategorical(logits=torch.zeros(7, 3, 4))
    expected = kl_divergence(q, uniform)
    torch.testing.assert_close(categorical_kl(logits.log_softmax(-1)), expected)
    assert categorical_kl(torch.full((2, 4), -math.log(4))).abs().max() < 1e-6  # q = p: 0
    one_hot = torch.tensor([[0.0, -1e9, -1e9, -1e9]]).log_softmax(-1)
    assert categorical_kl(one_hot).item() == pytest.approx(math.log(4))  # the largest KL


def test_the_temperature_is_annealed_by_step_to_its_floor():
    b = bottleneck(temperature=1.0, min_temperature=0.5, anneal_rate=1e-3)
    c = b.categorical
    assert c.temperature(0) == 1.0
    assert c.temperature(100) == pytest.approx(math.exp(-0.1))
    assert c.temperature(10_000) == 0.5 and c.temperature(None) == 0.5
    assert b.schedule_end() == math.ceil(math.log(2) / 1e-3)
    assert bottleneck(anneal_rate=0.0).schedule_end() == 0
    out = b.train()(torch.randn(2, 12), step=100)
    assert out.schedule["temperature"] == pytest.approx(math.exp(-0.1))


def test_training_draws_are_relaxed_and_evaluation_draws_exact_one_hots():
    b = bottleneck()
    h = torch.randn(50, 12)
    relaxed = b.train()(h, step=0).z.view(50, 3, 4)
    torch.testing.assert_close(relaxed.sum(-1), torch.ones(50, 3))
    assert ((relaxed > 0) & (relaxed < 1)).all()
    exact = b.eval()(h).z.view(50, 3, 4)
    assert set(exact.unique().tolist()) == {0.0, 1.0} and (exact.sum(-1) == 1).all()
    # Gumbel-max draws follow q(c|x): the frequencies of 4,000 draws of one variable.
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]]).repeat(1, 3)
    draws = b.eval()(logits.repeat(4000, 1)).z.view(4000, 3, 4)[:, 0].mean(0)
    torch.testing.assert_close(draws, logits[0, :4].softmax(-1), atol=0.03, rtol=0)
    # The code is the mode; the KL does not depend on the draw.
    code = b.encode(h).view(50, 3, 4)
    assert torch.equal(code.argmax(-1), h.view(50, 3, 4).argmax(-1))


def test_straight_through_draws_are_one_hot_with_the_relaxed_gradient():
    b = bottleneck(hard=True).train()
    h = torch.randn(8, 12, requires_grad=True)
    out = b(h, step=0)
    z = out.z.view(8, 3, 4)
    assert set(z.unique().tolist()) == {0.0, 1.0}
    (z * torch.randn_like(z)).sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_the_gumbel_vae_trains_under_the_elbo_and_iwae_refuses_it():
    model = aekit.build("gumbel-vae", (1, 8, 8), **TINY_NET, variables=4, categories=5)
    assert model.latent_dim == 20 and model.bottleneck.has_kl and not model.bottleneck.has_density
    x = torch.rand(16, 1, 8, 8).round()
    out = model.train()(x, step=3)
    assert set(out.terms) >= {"nll", "kl", "elbo", "temperature"}
    torch.testing.assert_close(out.terms["elbo"], -(out.terms["nll"] + out.terms["kl"]))
    model.backward(out)
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(aekit.AekitError, match="densities q\\(z\\|x\\) and p\\(z\\)"):
        aekit.build("iwae", (1, 8, 8), bottleneck="categorical", variables=2, categories=3)
    with pytest.raises(aekit.AekitError, match="30 variables x 10 categories"):
        aekit.build("gumbel-vae", (1, 8, 8), 16)
    samples = model.eval().sample(6)
    assert samples.shape == (6, 1, 8, 8)


def test_jointvae_reports_each_kl_and_caps_the_categorical_capacity():
    model = aekit.build("jointvae", (1, 8, 8), **TINY_NET, continuous_dim=3, variables=2,
                        categories=4, capacity_steps=100)  # fmt: skip
    assert model.latent_dim == 3 + 8
    x = torch.rand(16, 1, 8, 8).round()
    out = model.train()(x, step=50)
    b = out.bottleneck
    total = b.kl_parts["continuous"] + b.kl_parts["categorical"]
    torch.testing.assert_close(total, b.kl_per_example())
    assert out.terms["capacity_continuous"] == pytest.approx(2.5)
    assert out.terms["capacity_categorical"] == pytest.approx(2.5)  # below 2 log 4 = 2.77
    end = model(x, step=None)
    assert end.terms["capacity_continuous"] == pytest.approx(5.0)
    assert end.terms["capacity_categorical"] == pytest.approx(2 * math.log(4))  # capped
    gamma = 30.0
    expected = out.terms["nll"] + gamma * (
        (out.terms["kl_continuous"] - 2.5).abs() + (out.terms["kl_categorical"] - 2.5).abs()
    )
    torch.testing.assert_close(out.loss.detach(), expected)
    code = model.eval().encode(x)
    mu = model.bottleneck.split(model.features(x, None))[0]
    torch.testing.assert_close(code[:, :3], mu)  # the posterior mean ...
    assert (code[:, 3:].view(16, 2, 4).sum(-1) == 1).all()  # ... and the categorical mode
    rows = model.bottleneck.traversals(code, 8, 5)
    labels = [label for label, _ in rows]
    assert labels[:3] == [f"z{d}" for d in sorted(range(3), key=lambda d: labels.index(f"z{d}"))]
    categorical = [codes for label, codes in rows if label.startswith("c")]
    assert len(categorical) == 2 and all(len(c) == 4 for c in categorical)
    assert torch.equal(categorical[1][:, 7:11], torch.eye(4))  # variable 1 through its values
    with pytest.raises(aekit.AekitError, match="joint bottleneck"):
        aekit.build("vae", (1, 8, 8), objective="joint-capacity")


@pytest.mark.parametrize("recipe", ["gumbel-vae", "jointvae"])
def test_categorical_families_train_and_report_from_the_cli(tmp_path, recipe, capsys):
    run = tmp_path / recipe
    argv = ["train", recipe, "--epochs", "2", "--hidden", "32", "--nll-k", "0", "--out", str(run)]
    assert main(argv) == 0
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics["elbo"] < 0 and "marginal_nll" not in metrics  # no density: no estimate
    assert "ELBO" in metrics["estimator"]
    page = (run / "report.html").read_text()
    assert "traversal.png" in page and "samples.png" in page
    assert main(["sample", str(run), "-n", "4"]) == 0
