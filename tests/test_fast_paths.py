"""The speed paths change cost, not results: fused Adam is Adam, the end-of-run -log p(x) on
a prefix of the test split is the estimator on that prefix, trimming the heap changes no
value, and `aekit models` answers without importing torch."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

import aekit
from aekit.data import TensorData
from aekit.eval.likelihood import importance_sampled_nll, release_free_heap
from aekit.train.trainer import fastest_adam


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_fused_adam_follows_the_default_adam(cls):
    torch.manual_seed(0)
    model = aekit.build("vae", (12,), 3, hidden=(8,))
    other = copy.deepcopy(model)
    fused = fastest_adam(cls, model.parameters(), lr=1e-2, weight_decay=0.1)
    plain = cls(other.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.rand(16, 12)
    for step in range(5):
        for m, o in ((model, fused), (other, plain)):
            torch.manual_seed(step)
            o.zero_grad()
            m(x).loss.backward()
            o.step()
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if hasattr(torch.optim.Adam, "_step_supports_amp_scaling"):  # torch with fused kernels
        assert fused.defaults.get("fused") is True


def test_without_a_fused_kernel_the_default_adam_is_used():
    class NoFused(torch.optim.Adam):
        def __init__(self, params, fused=None, **options):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on CUDA")
            super().__init__(params, **options)

    optimizer = fastest_adam(NoFused, [torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    assert not optimizer.defaults.get("fused")


def test_the_end_of_run_likelihood_is_the_estimator_on_a_prefix():
    torch.manual_seed(0)
    model = aekit.build("vae", (10,), 2, hidden=(8,)).eval()
    data = TensorData((torch.rand(30, 10) < 0.5).float())
    metrics = aekit.evaluate(model, data, detailed=True, nll_k=7, nll_examples=12)
    alone = importance_sampled_nll(model, data.subset(slice(0, 12)), k=7)
    assert metrics["marginal_nll_n"] == 12 and metrics["n"] == 30
    assert metrics["marginal_nll"] == alone["marginal_nll"]
    everything = aekit.evaluate(model, data, detailed=True, nll_k=7, nll_examples=0)
    assert everything["marginal_nll_n"] == 30


def test_trimming_the_heap_changes_no_estimate(monkeypatch):
    torch.manual_seed(0)
    model = aekit.build("vae", (10,), 2, hidden=(8,)).eval()
    data = TensorData((torch.rand(40, 10) < 0.5).float())
    trimmed = importance_sampled_nll(model, data, k=9, batch_size=5)
    monkeypatch.setattr("aekit.eval.likelihood.release_free_heap", lambda: None)
    assert importance_sampled_nll(model, data, k=9, batch_size=5) == trimmed
    release_free_heap()  # callable on any platform


def test_listing_the_models_imports_no_torch():
    code = (
        "import sys; from aekit.__main__ import main; main(['models']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from aekit.recipes import recipe_table

    assert out.stdout.strip() == recipe_table().strip()
    assert set(aekit.RECIPES) <= set(recipe_table().split())
