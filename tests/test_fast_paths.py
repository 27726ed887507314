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


def entry_point_without_torch(argv: list[str]) -> subprocess.CompletedProcess:
    """`aekit ARGV` through aekit.__main__ in a fresh interpreter, which fails if torch was
    imported on the way."""
    code = (
        f"import sys; from aekit.__main__ import main; code = main({argv!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out


def test_listing_the_models_imports_no_torch():
    out = entry_point_without_torch(["models"])
    from aekit.recipes import recipe_table

    assert out.stdout.strip() == recipe_table().strip()
    assert set(aekit.RECIPES) <= set(recipe_table().split())


def test_aekit_help_imports_no_torch_and_is_the_full_parsers_help():
    out = entry_point_without_torch(["--help"])
    from aekit.cli import main_parser

    assert out.stdout == main_parser().format_help()
    assert "decompress" in out.stdout and "detect" in out.stdout


@pytest.mark.parametrize(
    ("n", "k", "block"),
    [(64, 2, 8), (96, 3, 16), (512, 1, 32), (1024, 32, 32), (2048, 7, 64), (640, 20, 32)],
)
def test_the_two_stage_top_k_selects_what_torch_topk_selects(n, k, block):
    from aekit.sparse import two_stage_topk

    torch.manual_seed(n + k)
    for score in (torch.randn(37, n), torch.randn(37, n).abs(), torch.rand(37, n) - 2):
        got = two_stage_topk(score, k, block)
        want = score.topk(k, dim=1).indices
        assert torch.equal(got.sort(1).values, want.sort(1).values)
    # the k largest in one block, or one per block: the boundaries of the argument
    score = torch.zeros(5, n)
    score[:, :k] = torch.arange(1, k + 1, dtype=torch.float) + 10
    assert torch.equal(two_stage_topk(score, k, block).sort(1).values, torch.arange(k).expand(5, k))
    spread = torch.randn(5, n) * 0.01
    spread[:, torch.arange(k) * block] += 100
    got = two_stage_topk(spread, k, block).sort(1).values
    assert torch.equal(got, (torch.arange(k) * block).expand(5, k))


def test_tied_scores_select_the_same_values_as_torch_topk():
    from aekit.sparse import two_stage_topk

    score = torch.randint(0, 4, (50, 512)).float()  # many ties at the k-th value
    got = score.gather(1, two_stage_topk(score, 9, 16)).sort(1).values
    want = score.topk(9, dim=1).values.sort(1).values
    assert torch.equal(got, want)
    assert all(len(set(row)) == 9 for row in two_stage_topk(score, 9, 16).tolist())


def test_topk_indices_falls_back_where_two_stages_do_not_pay(monkeypatch):
    from aekit import sparse

    calls = []
    monkeypatch.setattr(sparse, "two_stage_topk", lambda *a: calls.append(a) or a[0][:, :1])
    k = 2
    n = sparse.BLOCKED_TOPK_RATIO * k
    sparse.topk_indices(torch.randn(3, n - sparse.TOPK_BLOCK), k)
    sparse.topk_indices(torch.randn(3, n + 1), k)  # not a multiple of the block
    sparse.topk_indices(torch.randn(n, 3).T, k)  # not contiguous
    assert calls == []
    sparse.topk_indices(torch.randn(3, n), k)
    assert len(calls) == 1


def test_the_sae_step_with_its_workspace_is_the_step_without():
    torch.manual_seed(0)
    model = aekit.build("sae-topk", (16,), k=3, expansion=64, sparse_decode="sparse")
    other = copy.deepcopy(model)
    model.train()
    other.train()
    encoder = other.encoder
    encoder.workspace = None  # Preactivations then allocates afresh, as before
    xs = [torch.randn(40, 16), torch.randn(40, 16), torch.randn(25, 16), torch.randn(40, 16)]
    for x in xs:  # the third batch is smaller: the workspace's first rows are used
        outs = [m(x) for m in (model, other)]
        for m, out in zip((model, other), outs, strict=True):
            m.zero_grad()
            m.backward(out)
        torch.testing.assert_close(outs[0].loss, outs[1].loss, rtol=0, atol=0)
        for a, b in zip(model.parameters(), other.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    held = model.encoder.workspace._tensor
    assert held is not None and held.shape == (40, 16 * 64)
    model.eval()
    assert model.encoder.workspace._tensor is None  # evaluation keeps no buffer
    model(torch.randn(8, 16))
    assert model.encoder.workspace._tensor is None
    model.train().double()
    model(torch.randn(8, 16, dtype=torch.float64))
    assert model.encoder.workspace._tensor.dtype == torch.float64


def test_the_decoder_gradient_projection_is_the_tangent_component():
    torch.manual_seed(0)
    model = aekit.build("sae-topk", (6,), k=2, expansion=4)
    decoder = model.decoder
    decoder.W_dec.data.mul_(torch.rand(24, 1) + 0.5)  # rows off the unit sphere too
    grad = torch.randn(24, 6)
    decoder.W_dec.grad = grad.clone()
    decoder.after_backward()
    w = decoder.W_dec.detach()
    expected = grad - ((grad * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True)) * w
    torch.testing.assert_close(decoder.W_dec.grad, expected)
    assert (decoder.W_dec.grad * w).sum(1).abs().max() < 1e-5
