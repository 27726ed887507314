"""Models off the common path: float64 weights, evaluation that fails half-way, labels and
data sizes a model cannot take."""

from __future__ import annotations

import pytest
import torch

import aekit
from aekit.eval.likelihood import importance_sampled_nll
from aekit.eval.metrics import evaluate


def binary_rows(n: int = 10, d: int = 6) -> aekit.TensorData:
    return aekit.TensorData(torch.rand(n, d).round())


def test_a_float64_model_is_evaluated_on_float32_data():
    model = aekit.build("vae", (6,), 3, hidden=(8,)).double()
    data = binary_rows()
    metrics = evaluate(model, data, batch_size=4, detailed=True, nll_k=3)
    assert metrics["marginal_nll_k"] == 3 and metrics["elbo"] < 0
    assert importance_sampled_nll(model, data, k=4)["marginal_nll"] > 0
    cvae = aekit.build("cvae", (6,), 3, hidden=(8,), condition_classes=2).double()
    labelled = aekit.TensorData(data.x, torch.arange(10) % 2)
    assert evaluate(cvae, labelled, batch_size=4, nll_k=2)["elbo"] < 0
    sae = aekit.build("sae-topk", (6,), 12, k=2).double()
    assert "fvu" in evaluate(sae, aekit.TensorData(torch.randn(16, 6)), batch_size=8)


class FailingData:
    """Rows whose second batch cannot be read."""

    name, shape = "failing", (6,)

    def __len__(self):
        return 8

    def batches(self, batch_size, **_):
        yield aekit.data.tensor_data.Batch(torch.rand(4, 6).round(), None)
        raise OSError("disk gone")


@pytest.mark.parametrize(
    "name, options", [("vae", {"latent_dim": 4, "hidden": (8,)}), ("sae-topk", {"k": 2})]
)
def test_evaluation_that_fails_restores_the_training_mode(name, options):
    model = aekit.build(name, (6,), **options)
    model.train()
    with pytest.raises(OSError, match="disk gone"):
        evaluate(model, FailingData(), batch_size=4)
    assert model.training
    if name == "vae":
        with pytest.raises(OSError, match="disk gone"):
            importance_sampled_nll(model, FailingData(), k=2)
        assert model.training


@pytest.mark.parametrize("prior", ["normal", "uniform", "ring", "mixture"])
@pytest.mark.parametrize("objective", ["wae-mmd", "swae"])
def test_matching_objectives_draw_the_prior_in_the_codes_dtype_where_they_are(
    prior, objective, monkeypatch
):
    model = aekit.build(objective, (6,), 3, hidden=(8,), prior=prior).double()
    prior_module = model.bottleneck.prior
    # The draws are made where the codes are: nothing is drawn on the CPU and copied (the
    # kernel scale's seeded draws, made once, are not a training step's).
    sample = prior_module.sample

    def seeded_only(n, generator=None):
        assert generator is not None, "a training step's draws went through sample()"
        return sample(n, generator)

    monkeypatch.setattr(prior_module, "sample", seeded_only)
    seen = []
    divergence = model.objective.divergence
    monkeypatch.setattr(
        model.objective, "divergence", lambda z, p, q: seen.append(p) or divergence(z, p, q)
    )
    out = model.train()(torch.rand(5, 6, dtype=torch.float64).round(), step=0)
    model.backward(out)
    assert seen[0].dtype == torch.float64 and seen[0].shape == (5, 3)
    assert out.loss.dtype == torch.float64
    codes = torch.zeros(7, 3, dtype=torch.float64, device="meta")
    draws = prior_module.sample_like(codes)
    assert draws.device.type == "meta" and draws.dtype == torch.float64


@pytest.mark.parametrize(
    "label, shown",
    [(10**9, "1000000000"), (-1, "-1"), (10**20, str(10**20)), (3, "3"), (1e9, "1000000000")],
)
def test_a_label_out_of_range_names_the_label_and_the_classes(label, shown):
    model = aekit.build("cvae", (6,), 2, hidden=(8,), condition_classes=3)
    x = torch.rand(4, 6).round()
    message = f"label {shown} is outside .*0..2 .*3 classes"
    with pytest.raises(aekit.AekitError, match=message):
        model(x, condition=label)
    with pytest.raises(aekit.AekitError, match=message):
        model.sample(2, condition=label)
    if abs(label) < 2**62:
        with pytest.raises(aekit.AekitError, match=message):
            model.encode(x, torch.tensor([0, 1, 2, label]))


@pytest.mark.parametrize("label", [10**9, -1])
def test_training_labels_out_of_range_are_refused_before_a_model_is_built(label):
    from aekit.data.config import DataConfig
    from aekit.data.tensor_data import Splits

    y = torch.arange(10) % 3
    y[4] = label
    splits = Splits(aekit.TensorData(torch.rand(10, 6), y), None, None, DataConfig())
    with pytest.raises(aekit.AekitError, match=f"label {label} in the train split"):
        splits.label_classes()


def test_a_layer_over_the_parameter_limit_is_refused_by_size():
    from aekit.nets.base import MAX_LAYER_PARAMETERS, check_layer

    check_layer(2**16, 2**15 - 1, "a wide layer")  # 2**31 - 2**16 + (2**15 - 1): allowed
    with pytest.raises(aekit.AekitError, match="12,800,000,512 parameters"):
        check_layer(25_000_000, 512, "the first layer")
    assert MAX_LAYER_PARAMETERS == 2**31


@pytest.fixture
def no_huge_allocation(monkeypatch):
    """Fail, instead of allocating, if a network over the limit is ever built."""
    from torch import nn

    import aekit.nets.dictionary as dictionary

    linear, rows = nn.Linear.__init__, dictionary.random_rows

    def guarded_linear(self, n_in, n_out, *args, **kwargs):
        assert n_in * n_out <= 2**31, f"a {n_in} x {n_out} layer was allocated"
        linear(self, n_in, n_out, *args, **kwargs)

    def guarded_rows(n, d, norm):
        assert n * d <= 2**31, f"a {n} x {d} dictionary was allocated"
        return rows(n, d, norm)

    monkeypatch.setattr(nn.Linear, "__init__", guarded_linear)
    monkeypatch.setattr(dictionary, "random_rows", guarded_rows)


@pytest.mark.parametrize(
    "name, shape, options, message",
    [
        ("ae", (25_000_000,), {}, "layer 1 of the encoder .* 12,800,000,512 parameters"),
        ("vae", (25_000_000,), {"body": "mlp", "hidden": (100,)}, "2,500,000,100 parameters"),
        ("ae", (3, 3000, 3000), {}, "encoder's dense head"),
        ("sae-topk", (70_000,), {"k": 4}, "the dictionary's decoder"),
        ("vamp", (5_000_000,), {"hidden": (1,)}, "VampPrior's 500 pseudo-inputs"),
    ],
)
def test_data_with_too_many_features_is_refused_before_the_network_is_allocated(
    name, shape, options, message, no_huge_allocation
):
    with pytest.raises(aekit.AekitError, match=message):
        aekit.build(name, shape, **options)
