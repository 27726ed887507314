"""Small sparse autoencoders and data for the SAE unit tests (test_sparse_bottlenecks,
test_sparse_coding, test_dictionary, test_sparse_kernels).

Use from a test module::

    from sae_helpers import data, make, pre_of
"""

from __future__ import annotations

import torch

import aekit
from aekit.models import Autoencoder
from aekit.registry import RECIPES

K_SPARSE = ("topk", "batchtopk", "abstopk")
"""The bottlenecks that take `k`."""


def make(recipe: str = "sae-topk", seed: int = 0, d_in: int = 8, latent_dim: int = 32, **options):
    """`aekit.build(recipe, (d_in,), latent_dim, **options)` after seeding torch; k-sparse
    bottlenecks get k=4 unless `k` is given. A transcoder: `output_shape=(6,)`."""
    kind = options.get("bottleneck") or RECIPES[recipe].kinds["bottleneck"]
    if kind in K_SPARSE:
        options.setdefault("k", 4)
    torch.manual_seed(seed)
    return aekit.build(recipe, (d_in,), latent_dim, **options)


def data(b: int = 64, d: int = 8, seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * (torch.randn(b, d, generator=g) + 0.5)


def pre_of(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """Pre-activations by the formula, independently of the model's code path."""
    enc, dec = model.encoder, model.decoder
    x_n = x * dec.input_scale
    enc_in = x_n if model.paired else x_n - dec.b_dec
    return enc_in @ enc.W_enc.T + enc.b_enc
