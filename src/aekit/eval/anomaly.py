"""Anomaly scores of a trained model, higher = more anomalous, read through its public methods.

- `reconstruction`: ||x - E[x | z(x)]||^2, summed over the features of an example.
- `mahalanobis`: (z - mu)^T Sigma^+ (z - mu) of the code z(x) under the mean and covariance of
  the training codes (Denouden et al. 2018, *Improving reconstruction autoencoder
  out-of-distribution detection with Mahalanobis distance*).
- `reconstruction+mahalanobis`: their sum after each is z-scored by its mean and standard
  deviation over the training rows, Denouden et al.'s combination.
- `scaled-reconstruction`: sum_j (x_j - E[x_j | z])^2 / v_j, each feature's squared error over
  its mean over the training rows: -2 log p(x|z) up to a constant under a Gaussian with one
  variance per feature fitted to the training residuals, so a feature the model reconstructs
  precisely for normal rows weighs more when it misses (the uncertainty argument of Tan et al.'s
  probabilistic autoencoder, with the variance per feature rather than per input).
- `scaled-reconstruction+mahalanobis`: the same z-scored sum with the scaled error; the
  detector's default.
- `mean-shift`: ||x - E[x | z(x_ms)]||^2, where x_ms is x moved `MEAN_SHIFT_STEPS` times to the
  mean of its k nearest training rows: the mean-shift outlier scoring of Tan et al. 2023
  (*MSS-PAE*, arXiv:2304.00709) on the mean-shift of Yang et al. 2018. An outlier the
  autoencoder reconstructs well (a "false inlier") sits far from its neighbourhood's mean, so
  the reconstruction of the shifted point is far from it. This is our reading of MSS-MSE from
  the paper's description; k is fixed, never chosen with labels, and a training row counts
  among its own neighbours (as in the transductive setting of the paper).
- `elbo`: the negative ELBO per example (a Monte-Carlo estimate with `samples` draws), for
  models with a posterior density (VAE family).
- `nll`: the importance-sampled -log p(x) with k draws (Burda et al. 2016), same models.
- `complexity`: -log2 p(x) minus the bits of the image as a PNG file, the input-complexity
  score of Serrà et al. 2020 (*Input complexity and out-of-distribution detection with
  likelihood-based generative models*): likelihoods of generative models rank simple images
  of another data set as more likely than their own test images (Nalisnick et al. 2019), and
  a generic compressor's length is the likelihood of a universal model that shares that bias,
  so their difference is a likelihood ratio against it. Images in [0, 1] only.

Every score is checked finite: a non-finite score is an error naming the examples, never a
silent ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from aekit.errors import AekitError
from aekit.eval.likelihood import check_has_density, log_likelihood
from aekit.models.autoencoder import Autoencoder

SCORES = (
    "reconstruction",
    "scaled-reconstruction",
    "mahalanobis",
    "reconstruction+mahalanobis",
    "scaled-reconstruction+mahalanobis",
    "mean-shift",
    "elbo",
    "nll",
    "complexity",
)
DENSITY_SCORES = ("elbo", "nll", "complexity")
"""Scores that need q(z|x) and p(z)."""

MEAN_SHIFT_K = 10
"""Neighbours of the mean shift: fixed, as a label-free default must be (Tan et al. tune it on
validation ROC-AUC, i.e. with labels)."""
MEAN_SHIFT_STEPS = 3
"""Mean-shift iterations, as in Yang et al.'s mean-shift outlier detection."""


@dataclass
class ScoreReference:
    """What the scores compare new rows with, fitted once on the training rows."""

    x: torch.Tensor
    """The training rows (the mean shift's neighbours)."""
    code_mean: torch.Tensor
    code_precision: torch.Tensor
    """Pseudo-inverse of the training codes' covariance."""
    residual_variance: torch.Tensor
    """Mean squared reconstruction error of each feature over the training rows (floored)."""
    spread: dict[str, tuple[float, float]]
    """Mean and standard deviation over the training rows of the scores that are z-scored."""

    def tensors(self) -> dict[str, torch.Tensor]:
        spread = torch.tensor([self.spread[n] for n in ZSCORED], dtype=torch.float64)
        return {
            "x": self.x,
            "code_mean": self.code_mean,
            "code_precision": self.code_precision,
            "residual_variance": self.residual_variance,
            "spread": spread,
        }

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> ScoreReference:
        pairs = zip(ZSCORED, t["spread"].tolist(), strict=True)
        spread = {n: (float(m), float(s)) for n, (m, s) in pairs}
        return cls(t["x"], t["code_mean"], t["code_precision"], t["residual_variance"], spread)


ZSCORED = ("reconstruction", "scaled-reconstruction", "mahalanobis")
RESIDUAL_VARIANCE_FLOOR = 1e-6
"""Relative to the mean variance: a feature reconstructed exactly on every training row still
gets a finite weight."""


def check_score(name: str, model: Autoencoder) -> None:
    if name not in SCORES:
        raise AekitError(f"unknown score {name!r}; choose from {', '.join(SCORES)}")
    if name in DENSITY_SCORES:
        check_has_density(model)
    if "mahalanobis" in name and model.bottleneck.is_sparse:
        raise AekitError(f"score {name!r} needs a dense code; a sparse code has no covariance")


@torch.no_grad()
def codes_and_errors(
    model: Autoencoder, x: torch.Tensor, batch_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes z(x) (N, latent_dim) and the squared reconstruction error of every feature
    (N, features) of rows `x`."""
    codes, errors = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(model.device)
        z = model.encode(xb)
        mean = model.decode(z)
        codes.append(z.flatten(1).double().cpu())
        errors.append((xb - mean).flatten(1).double().pow(2).cpu())
    return torch.cat(codes), torch.cat(errors)


def mahalanobis(codes: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    d = codes - mean
    return ((d @ precision) * d).sum(1)


@torch.no_grad()
def fit_reference(model: Autoencoder, x: torch.Tensor) -> ScoreReference:
    """Statistics of the training rows `x` that the scores of new rows are measured against."""
    was_training = model.training
    model.eval()
    try:
        codes, errors = codes_and_errors(model, x)
    finally:
        model.train(was_training)
    mean = codes.mean(0)
    centred = codes - mean
    covariance = centred.T @ centred / max(1, len(codes) - 1)
    precision = torch.linalg.pinv(covariance, hermitian=True)
    variance = errors.mean(0)
    variance = variance.clamp_min(RESIDUAL_VARIANCE_FLOOR * float(variance.mean()) + 1e-30)
    reference = ScoreReference(x.detach().cpu().float(), mean, precision, variance, {})
    basic = _basic_scores(codes, errors, reference)
    reference.spread = {name: mean_std(basic[name]) for name in ZSCORED}
    return reference


def _basic_scores(
    codes: torch.Tensor, errors: torch.Tensor, reference: ScoreReference
) -> dict[str, torch.Tensor]:
    return {
        "reconstruction": errors.sum(1),
        "scaled-reconstruction": (errors / reference.residual_variance).sum(1),
        "mahalanobis": mahalanobis(codes, reference.code_mean, reference.code_precision),
    }


def _zscored(t: torch.Tensor, spread: tuple[float, float]) -> torch.Tensor:
    return (t - spread[0]) / spread[1]


def mean_std(t: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a score, the deviation 1 where it is 0 (a z-score's
    divisor)."""
    std = float(t.std()) if len(t) > 1 else 0.0
    return float(t.mean()), std if std > 0 else 1.0


def mean_shift(
    x: torch.Tensor,
    reference: torch.Tensor,
    k: int = MEAN_SHIFT_K,
    steps: int = MEAN_SHIFT_STEPS,
    block_values: int = 20_000_000,
) -> torch.Tensor:
    """x moved `steps` times to the mean of its k nearest rows of `reference` (Euclidean); the
    distances are computed for blocks of queries of at most `block_values` entries."""
    if k < 1:
        raise AekitError(f"the mean shift needs k >= 1 neighbours (got {k})")
    k = min(k, len(reference))
    ref = reference.double()
    shifted = x.double().clone()
    batch_size = max(1, block_values // len(ref))
    for _ in range(steps):
        for start in range(0, len(shifted), batch_size):
            block = shifted[start : start + batch_size]
            nearest = torch.cdist(block, ref).topk(k, largest=False).indices
            shifted[start : start + batch_size] = ref[nearest].mean(1)
    return shifted.to(x.dtype)


@torch.no_grad()
def anomaly_scores(
    model: Autoencoder,
    x: torch.Tensor,
    names: tuple[str, ...] | list[str],
    reference: ScoreReference,
    *,
    samples: int = 16,
    nll_k: int = 100,
    seed: int = 0,
    batch_size: int = 4096,
    shifted: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Each score in `names` for the rows `x`, as float64 arrays (higher = more anomalous).
    `shifted`: the mean shift of `x` against `reference.x` if already computed (it depends on
    the rows only, so the members of an ensemble share it)."""
    for name in names:
        check_score(name, model)
    was_training = model.training
    model.eval()
    try:
        basic = _basic_scores(*codes_and_errors(model, x, batch_size), reference)
        out: dict[str, torch.Tensor] = {}
        for name in names:
            if name in basic:
                out[name] = basic[name]
            elif name.endswith("+mahalanobis"):
                parts = (name.removesuffix("+mahalanobis"), "mahalanobis")
                out[name] = sum(_zscored(basic[p], reference.spread[p]) for p in parts)
            elif name == "complexity":  # shares the nll draws when both are asked for
                if "nll" not in out:
                    out["nll"] = _density_score(model, x, "nll", samples, nll_k, seed, batch_size)
                out[name] = out["nll"] / math.log(2) - png_bits(x)
            elif name == "mean-shift":
                if shifted is None:
                    shifted = mean_shift(x.flatten(1).cpu(), reference.x.flatten(1))
                out[name] = _errors_against(model, shifted.view_as(x), x, batch_size)
            elif name not in out:  # nll may be there already, from complexity
                out[name] = _density_score(model, x, name, samples, nll_k, seed, batch_size)
    finally:
        model.train(was_training)
    result = {name: out[name].numpy().astype(np.float64) for name in names}
    for name, values in result.items():
        check_finite(values, name)
    return result


def _errors_against(
    model: Autoencoder, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """||target - E[x | z(input)]||^2 per row."""
    errors = []
    for start in range(0, len(inputs), batch_size):
        xb = inputs[start : start + batch_size].to(model.device)
        tb = targets[start : start + batch_size].to(model.device)
        errors.append((tb - model.reconstruct(xb)).flatten(1).pow(2).sum(1).double().cpu())
    return torch.cat(errors)


def _density_score(
    model: Autoencoder,
    x: torch.Tensor,
    name: str,
    samples: int,
    nll_k: int,
    seed: int,
    batch_size: int,
) -> torch.Tensor:
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    values = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        draws = nll_k if name == "nll" else samples
        rows = max(1, min(batch_size, 200_000 // max(1, draws)))
        for start in range(0, len(x), rows):
            xb = x[start : start + rows].to(model.device)
            if name == "nll":
                values.append(-log_likelihood(model, xb, draws).double().cpu())
            else:
                values.append(-_elbo(model, xb, draws).double().cpu())
    return torch.cat(values)


def _elbo(model: Autoencoder, x: torch.Tensor, samples: int) -> torch.Tensor:
    """E_q[log p(x|z) + log p(z) - log q(z|x)] per example, averaged over `samples` draws."""
    b = model.bottleneck(model.features(x, None), samples)
    log_w = model.log_px(model.decoder_params(b.z, None), x) + b.log_prior - b.log_q
    return log_w.mean(0)


def png_bits(x: torch.Tensor) -> torch.Tensor:
    """The length in bits of each image (C, H, W) of `x` in [0, 1] as a lossless PNG of its
    8-bit pixels (grey or RGB), at PNG's strongest compression."""
    import io

    from PIL import Image

    if x.ndim != 4 or x.shape[1] not in (1, 3) or float(x.min()) < 0 or float(x.max()) > 1:
        raise AekitError(
            "the complexity score compares with a PNG of each image: it needs images "
            f"(N, 1 or 3, H, W) in [0, 1], got shape {tuple(x.shape)}"
        )
    pixels = (x.detach().cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    bits = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            buffer, format="PNG", optimize=True
        )
        bits.append(8 * buffer.tell())
    return torch.tensor(bits, dtype=torch.float64)


def check_finite(values: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        shown = ", ".join(str(int(i)) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise AekitError(
            f"score {name!r} is not finite for {len(bad)} of {len(values)} examples "
            f"(0-based rows {shown}); a ranking with them would be meaningless"
        )
