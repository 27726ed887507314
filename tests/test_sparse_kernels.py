"""The sparse kernels (`aekit.sparse`) against plain autograd: gradcheck in float64, a model's
sparse and dense training paths (terms and gradients), when `auto` picks the kernels, and a
TopK SAE that recovers planted features."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn import functional as F

from aekit.sparse import Pattern, sparse_decode, sparse_preacts
from sae_helpers import data, make


def test_kernels_pass_gradcheck_in_float64():
    g = torch.Generator().manual_seed(0)
    b, d, n, k = 5, 4, 9, 3
    x = torch.randn(b, d, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(n, d, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(n, dtype=torch.float64, generator=g, requires_grad=True)
    pre = (x @ w.T + bias).detach()
    per_row = Pattern.from_topk(pre.topk(k, dim=1).indices, n)
    batch = Pattern.from_flat(pre.flatten().topk(b * k).indices, b, n)
    for pattern in (per_row, batch):
        assert gradcheck(lambda x, w, bias, p=pattern: sparse_preacts(x, w, bias, p), (x, w, bias))
        torch.testing.assert_close(
            sparse_preacts(x, w, bias, pattern, pre), sparse_preacts(x, w, bias, pattern)
        )
    values = torch.randn(b * k, dtype=torch.float64, generator=g, requires_grad=True)
    w_dec = torch.randn(n, 6, dtype=torch.float64, generator=g, requires_grad=True)
    grouped = per_row.grouped(torch.tensor([2, 5]))
    for pattern in (per_row, grouped):
        assert gradcheck(lambda v, w, p=pattern: sparse_decode(v, w, p), (values, w_dec))
    parts = sparse_decode(values, w_dec, grouped).view(b, 3, 6)
    dense = per_row.dense(values)
    for i, (lo, hi) in enumerate([(0, 2), (2, 5), (5, 9)]):
        torch.testing.assert_close(parts[:, i], dense[:, lo:hi] @ w_dec[lo:hi])


PATH_CASES = {
    "topk": ("sae-topk", {}),
    "abstopk": ("sae-abstopk", {}),
    "batchtopk": ("sae-batchtopk", {}),
    "topk-matryoshka": ("sae-topk", {"matryoshka": (4, 16)}),
    "batchtopk-matryoshka": ("sae-batchtopk", {"matryoshka": (8,)}),
    "skip": ("sae-topk", {"output_shape": (6,), "skip": True}),
}


@pytest.mark.parametrize(("recipe", "options"), PATH_CASES.values(), ids=PATH_CASES)
def test_sparse_and_dense_paths_agree(recipe, options):
    x = data(48)
    target = data(48, d=6, seed=4) if "output_shape" in options else None
    outs, grads = [], []
    for mode in ("sparse", "dense"):
        # dead_tokens=1: latents that do not fire in a batch are dead, so AuxK runs too.
        model = make(recipe, sparse_decode=mode, dead_tokens=1, latent_dim=128, **options)
        model.initialise(x, target)
        out = model(x, step=1, target=target)
        assert (out.bottleneck.z is None) == (mode == "sparse")  # the path taken
        model.backward(out)
        outs.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert outs[0].terms["auxk"] > 0
    assert set(outs[0].terms) == set(outs[1].terms)
    for name in outs[0].terms:
        torch.testing.assert_close(outs[0].terms[name], outs[1].terms[name], rtol=1e-5, atol=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-5)


def test_auto_picks_the_kernels_when_k_is_small():
    assert make(k=8, latent_dim=64).bottleneck.uses_kernels
    assert not make(k=9, latent_dim=64).bottleneck.uses_kernels
    assert make(k=9, latent_dim=64, sparse_decode="sparse").bottleneck.uses_kernels
    # JumpReLU (and ReLU) are not k-sparse: no kernels, a dense code in training.
    for recipe in ("sae-jumprelu", "sae-relu"):
        model = make(recipe)
        assert not getattr(model.bottleneck, "uses_kernels", False), recipe
        b = model(data(16)).bottleneck
        assert b.z is not None and b.sparse is None, recipe


# ---------------------------------------------------------------- learning
def test_topk_recovers_planted_sparse_features():
    """64 unit features in 16 dimensions, 3 active per example: a TopK SAE with k = 3 finds
    nearly every one (mean over features of the best decoder cosine)."""
    g = torch.Generator().manual_seed(123)
    features = F.normalize(torch.randn(64, 16, generator=g), dim=1)

    def sample(b: int) -> torch.Tensor:
        active = torch.rand(b, 64, generator=g).argsort(1)[:, :3]
        magnitude = torch.rand(b, 3, generator=g) + 0.5
        return torch.zeros(b, 64).scatter(1, active, magnitude) @ features

    model = make(seed=0, d_in=16, latent_dim=128, k=3, dead_tokens=1280)
    assert model.bottleneck.uses_kernels
    model.initialise(sample(2048))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    w_dec = model.decoder.W_dec
    before = (features @ w_dec.detach().T).max(1).values.mean()
    for step in range(300):
        out = model(sample(256), step=step)
        optimizer.zero_grad()
        model.backward(out)
        optimizer.step()
        model.after_step()
    recovered = (features @ w_dec.detach().T).max(1).values.mean()
    assert before < 0.7 and recovered > 0.9
