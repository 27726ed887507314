"""How well a sparse autoencoder recovers a known dictionary: its learned decoder directions
(`Autoencoder.decoder_directions()`, (n_latents, d)) against the true feature directions of
synthetic data (`aekit.data.activations.synthetic.make_sparse_data`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from aekit.errors import AekitError


def _as_rows(a: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a.detach())
    if t.dim() != 2 or t.shape[0] == 0:
        raise AekitError(f"{name} must be a non-empty (rows, d) matrix; got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise AekitError(f"{name} contains NaN or infinite values")
    return t.to(torch.float64).cpu()


def feature_recovery(
    decoder_rows: torch.Tensor | np.ndarray,
    features: torch.Tensor | np.ndarray,
    threshold: float = 0.9,
    *,
    absolute: bool = False,
) -> dict:
    """How well learned decoder directions W (n_latents, d) recover true features
    F (n_features, d). With c_ij = cos(F_i, W_j) (a zero row of W has cosine 0 with all):

    - mmcs = (1/n_features) Σ_i max_j c_ij, the mean max cosine similarity over the TRUE
      features (1: every feature has a latent pointing exactly along it);
    - max_cosine: the list of max_j c_ij per feature, and best_latent: its argmax j;
    - recovered = |{i : max_j c_ij > threshold}|, recovered_fraction = recovered / n_features;
    - matched_latents = |{j : max_i c_ij > threshold}|, the latents that match some feature;
      duplicate_latents = matched_latents - recovered, matched latents beyond one per
      recovered feature (duplicates and splits; 0 for a one-to-one dictionary);
    - latent_mmcs = (1/n_latents) Σ_j max_i c_ij, the same mean from the latents' side (low
      when many latents are dead, duplicated elsewhere or off every feature).

    Scale-free: any positive scaling or permutation of the rows of W gives the same figures.
    `absolute` scores |c_ij| instead, for activations that may use -F_i with a negative
    coefficient (abstopk); by default a flipped direction scores -1."""
    w = _as_rows(decoder_rows, "decoder_rows")
    f = _as_rows(features, "features")
    if w.shape[1] != f.shape[1]:
        raise AekitError(
            f"decoder rows have width {w.shape[1]} but the features have width {f.shape[1]}"
        )
    if not 0 < threshold <= 1:
        raise AekitError(f"threshold must be in (0, 1] (got {threshold})")
    cos = F.normalize(f, dim=1) @ F.normalize(w, dim=1).T  # (n_features, n_latents)
    if absolute:
        cos = cos.abs()
    best, best_latent = cos.max(1)
    per_latent = cos.max(0).values
    recovered = int((best > threshold).sum())
    matched = int((per_latent > threshold).sum())
    return {
        "mmcs": float(best.mean()),
        "recovered": recovered,
        "recovered_fraction": recovered / f.shape[0],
        "matched_latents": matched,
        "duplicate_latents": matched - recovered,
        "latent_mmcs": float(per_latent.mean()),
        "n_features": f.shape[0],
        "n_latents": w.shape[0],
        "threshold": threshold,
        "absolute": absolute,
        "max_cosine": best.tolist(),
        "best_latent": best_latent.tolist(),
    }
