"""Generation quality without downloads: Fréchet distance and precision/recall in the feature
space of a small classifier that aekit trains on the dataset's own labels.

Why these are not called FID: FID is the Fréchet distance in the pool3 space of one particular
Inception-v3 network (Heusel et al. 2017). Numbers computed in any other feature space are not
FID and cannot be compared with published FIDs, so the keys here say which features were used:
`fd_classifier_*` for the aekit `FeatureClassifier`, `fd_<name>_*` for other extractors, and
`fid_*` only when the user supplies Inception weights themselves
(`TorchScriptFeatures(path, inception=True)`). Like FID, both metrics depend on the number of
examples, so compare figures computed with the same `n` (reported as `<prefix>_n`).

    classifier = cached_classifier(train.x, train.y, name="mnist")
    generation_metrics(model, test, classifier)

The feature extractors (the classifier, its training and cache, `TorchScriptFeatures`) live
in `aekit.eval.classifier`; their names are re-exported here.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import nn

from aekit.data.tensor_data import TensorData
from aekit.errors import AekitError
from aekit.eval.classifier import (
    FeatureClassifier,
    TorchScriptFeatures,
    cached_classifier,
    data_fingerprint,
    train_classifier,
)
from aekit.models.autoencoder import Autoencoder

__all__ = [
    "FeatureClassifier",
    "TorchScriptFeatures",
    "cached_classifier",
    "data_fingerprint",
    "frechet_distance",
    "frechet_from_moments",
    "generation_metrics",
    "precision_recall",
    "train_classifier",
]

_CDIST_ELEMENTS = 1 << 22
"""Distances held at once by the k-NN code (32 MiB in float64), whatever the number of points."""


# --- the metrics -------------------------------------------------------------------------------


def _as_features(feats: Any, what: str) -> np.ndarray:
    a = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    a = a.astype(np.float64, copy=False)
    if a.ndim != 2:
        raise AekitError(f"{what}: features must be (examples, dims) (got shape {a.shape})")
    if not np.isfinite(a).all():
        raise AekitError(f"{what}: features contain NaN or inf")
    return a


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        # Singular products are the norm (fewer examples than dimensions, dead ReLU units) and
        # sqrtm's Schur method still gets them right; the caller checks for real failures.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(a)


def _sqrtm_of_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> np.ndarray:
    """The real part of (sigma1 sigma2)^{1/2}.

    The product of two covariances has non-negative real eigenvalues, but when they are
    ill-conditioned sqrtm can return inf/NaN or an imaginary part that is more than rounding.
    Then, as pytorch-fid does, retry with eps*I added to both (which biases the trace by about
    sqrt(eps) per null direction, so it is not done when the first result is sound).
    """
    tolerance = 1e-3 * max(1.0, float(np.abs(np.trace(sigma1 @ sigma2))) ** 0.5)
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all() or _imaginary(covmean) > tolerance:
        offset = eps * np.eye(len(sigma1))
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all() or _imaginary(covmean) > tolerance:
            raise AekitError(
                "the matrix square root in the Fréchet distance did not converge "
                "(covariances too ill-conditioned; use more examples)"
            )
    return np.real(covmean)


def _imaginary(a: np.ndarray) -> float:
    return float(np.abs(np.diagonal(a).imag).max()) if np.iscomplexobj(a) else 0.0


def frechet_from_moments(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, *, eps: float = 1e-6
) -> float:
    """The Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):

        ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2}),

    in float64. It is a squared distance: 0 for equal Gaussians, never negative."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise AekitError(
            f"Fréchet distance: means {mu1.shape}, {mu2.shape} and covariances "
            f"{sigma1.shape}, {sigma2.shape} do not agree"
        )
    diff = mu1 - mu2
    covmean = _sqrtm_of_product(sigma1, sigma2, eps)
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    # Rounding can leave -1e-12 for equal inputs; the distance itself is never negative.
    return max(float(fd), 0.0)


def frechet_distance(feats_a: Any, feats_b: Any, *, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D): their
    means and unbiased covariances, as in FID (but in whatever space the features are)."""
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise AekitError(f"feature sets have {a.shape[1]} and {b.shape[1]} dimensions")
    if len(a) < 2 or len(b) < 2:
        raise AekitError("a covariance needs at least 2 examples in each feature set")
    return frechet_from_moments(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False), eps=eps
    )


def _row_chunks(x: torch.Tensor, n_cols: int) -> Iterator[torch.Tensor]:
    # Rows per chunk so that a chunk's distance matrix stays within _CDIST_ELEMENTS.
    return iter(x.split(max(1, _CDIST_ELEMENTS // max(n_cols, 1))))


def _knn_radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour within the same set."""
    radii = []
    for chunk in _row_chunks(feats, len(feats)):
        d = torch.cdist(chunk, feats)
        # k + 1 smallest: the point itself, at distance 0, is the first of them.
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, -1])
    return torch.cat(radii)


def _fraction_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of `points` within radii[j] of some centres[j] (the union of k-NN balls)."""
    inside = 0
    for chunk in _row_chunks(points, len(centres)):
        inside += int((torch.cdist(chunk, centres) <= radii).any(1).sum())
    return inside / len(points)


def precision_recall(real_feats: Any, fake_feats: Any, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points with radius the distance to
    the point's k-th nearest neighbour in the set. Precision is the fraction of fake points in
    the real manifold (fidelity); recall the fraction of real points in the fake manifold
    (coverage). Distances are Euclidean, in float64, computed in chunks of bounded memory.
    """
    real = torch.from_numpy(_as_features(real_feats, "real_feats"))
    fake = torch.from_numpy(_as_features(fake_feats, "fake_feats"))
    if real.shape[1] != fake.shape[1]:
        raise AekitError(f"feature sets have {real.shape[1]} and {fake.shape[1]} dimensions")
    if k < 1:
        raise AekitError(f"k must be at least 1 (got {k})")
    if min(len(real), len(fake)) <= k:
        raise AekitError(
            f"precision/recall with k={k} needs more than {k} examples in each set "
            f"(got {len(real)} real, {len(fake)} fake)"
        )
    precision = _fraction_inside(fake, real, _knn_radii(real, k))
    recall = _fraction_inside(real, fake, _knn_radii(fake, k))
    return precision, recall


# --- generation metrics of a model --------------------------------------------------------------


def _prefix(extractor: Any) -> str:
    if isinstance(extractor, FeatureClassifier):
        return "fd_classifier"
    if isinstance(extractor, TorchScriptFeatures) and extractor.inception:
        return "fid"
    name = getattr(extractor, "name", None) or type(extractor).__name__
    return "fd_" + re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def _extractor_device(extractor: Any) -> torch.device:
    if isinstance(extractor, nn.Module):
        param = next(iter(extractor.parameters()), None)
        return param.device if param is not None else torch.device("cpu")
    return torch.device(getattr(extractor, "device", "cpu"))


def generation_metrics(
    model: Autoencoder,
    data: TensorData,
    classifier: Any = None,
    *,
    extractor: Any = None,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
    k: int = 3,
) -> dict[str, Any]:
    """Fréchet distance and precision/recall of the model's samples and reconstructions
    against `n` examples of `data` (all by default; a seeded random subset otherwise).

    Features come from `classifier` (or `extractor=`): a `FeatureClassifier`, a
    `TorchScriptFeatures`, or any object with `features(x) -> (B, D)`. Samples are `n` prior
    draws decoded to E[x|z] with a generator seeded by `seed`; reconstructions are E[x|z] at
    the posterior mean of each example. A model without a prior has no sample metrics, and
    `samples_note` says why. Keys are prefixed `fd_classifier`, `fid` (Inception weights given
    with `inception=True`) or `fd_<extractor name>`; `<prefix>_n` is the number of examples.
    """
    if classifier is not None and extractor is not None:
        raise AekitError("pass the feature extractor once: as classifier or as extractor=")
    extractor = classifier if classifier is not None else extractor
    if extractor is None or not callable(getattr(extractor, "features", None)):
        raise AekitError("generation metrics need a feature extractor with a features(x) method")
    if batch_size < 1:
        raise AekitError(f"batch size must be at least 1 (got {batch_size})")
    if n is not None and n < 1:
        raise AekitError(f"number of examples must be at least 1 (got {n})")
    n = len(data) if n is None else min(n, len(data))
    x, y = data.x, data.y
    if n < len(data):
        keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[keep], (y[keep.to(y.device)] if y is not None else None)
    # A conditional model reconstructs each example under its own label and draws its samples
    # with the labels of the real set, so both are compared class for class.
    conditions = y if getattr(model, "conditional", False) else None
    if conditions is None and getattr(model, "conditional", False):
        raise AekitError("a conditional model needs data with labels for generation metrics")

    feature_device = _extractor_device(extractor)

    def features(batch: torch.Tensor) -> torch.Tensor:
        return extractor.features(batch.to(feature_device)).reshape(len(batch), -1).double().cpu()

    modules = [m for m in (model, extractor) if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]
    real, recon, fake = [], [], []
    sample_error = None
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            for start in range(0, n, batch_size):
                batch = x[start : start + batch_size].to(model.device)
                c = None if conditions is None else conditions[start : start + batch_size]
                real.append(features(batch))
                recon.append(features(model.reconstruct(batch, c)))
            generator = torch.Generator().manual_seed(seed)  # CPU: what sample_prior draws from
            try:
                for start in range(0, n, batch_size):
                    size = min(batch_size, n - start)
                    c = None if conditions is None else conditions[start : start + size]
                    sample = model.sample(size, generator=generator, condition=c)
                    fake.append(features(sample))
            except AekitError as e:
                sample_error, fake = str(e), []
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)

    prefix = _prefix(extractor)
    real_f = torch.cat(real)
    results: dict[str, Any] = {
        "feature_extractor": getattr(extractor, "description", None) or type(extractor).__name__,
        f"{prefix}_n": n,
    }
    accuracy = getattr(extractor, "held_out_accuracy", None)
    if accuracy is not None:
        results["classifier_accuracy"] = accuracy
    results["precision_recall_k"] = k
    if sample_error is None:
        fake_f = torch.cat(fake)
        results[f"{prefix}_samples"] = frechet_distance(real_f, fake_f)
        results["precision_samples"], results["recall_samples"] = precision_recall(
            real_f, fake_f, k
        )
    else:
        results["samples_note"] = f"no sample metrics: {sample_error}"
    recon_f = torch.cat(recon)
    results[f"{prefix}_reconstructions"] = frechet_distance(real_f, recon_f)
    results["precision_reconstructions"], results["recall_reconstructions"] = precision_recall(
        real_f, recon_f, k
    )
    return results
