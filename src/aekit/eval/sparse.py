"""Reconstruction and sparsity of a sparse autoencoder (or transcoder) over a data set.

One streaming pass over `data.batches(batch_size)`; every sum is kept in float64 on the
model's device and no (N, n_latents) matrix is ever held. Over the N evaluated rows, with
x̂_i the reconstruction of target t_i (t_i = x_i for an autoencoder, the output site's row for
a transcoder), d the target width and n the number of latents:

- l0 = (1/N) Σ_i |{j : z_ij ≠ 0}|, the mean number of active latents per row;
- fvu = Σ_i ||t_i − x̂_i||² / Σ_i ||t_i − t̄||², t̄ the mean target over the same N rows (not
  per batch, so the figure does not depend on the batch size); explained_variance = 1 − fvu;
- mse = Σ_i ||t_i − x̂_i||² / (N d), per element;
- cosine = (1/N) Σ_i cos(t_i, x̂_i) (a zero vector has cosine 0 with everything);
- relative_reconstruction_bias γ = Σ_i ||x̂_i||² / Σ_i x̂_i·t_i (Rajamanoharan et al. 2024,
  Gated SAEs): γ = 1/argmin_u Σ_i ||u x̂_i − t_i||²; 1 is unbiased, γ < 1 means the
  reconstructions are shrunk (the L1 penalty's typical bias);
- density_j = (rows where latent j ≠ 0) / N; dead latents never fire over the N rows (so
  "dead" is relative to that window, reported as `dead_window_rows`); dense latents fire on
  more than `dense_threshold` of them;
- the histogram of log10(density_j) over the latents that fired.

All figures are in the data's raw space (the one `batches` yields); fvu, explained variance,
cosine and γ are scale-invariant anyway.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aekit import distributed
from aekit.errors import AekitError

HISTOGRAM_BINS_PER_DECADE = 4
"""Resolution of the log10-density histogram: quarter decades."""


def model_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for one with neither)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def model_dtype(module: nn.Module) -> torch.dtype:
    """The floating-point type of a module's first floating parameter or buffer (float32 for
    one with none): rows are cast to it, so a float64 model reads float32 data."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def sparse_code(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latents of `x` (B, d_in) as (values, indices), both (B, k), from
    `model.encode_sparse` when the model is sparse (k-sparse bottlenecks never build the
    (B, n) matrix); entries with value 0 are padding or latents that did not fire. For a model
    without a sparse code (a dense bottleneck): the dense latents `model.encode(x)` (B, n)
    and indices None."""
    bottleneck = getattr(model, "bottleneck", None)
    if hasattr(model, "encode_sparse") and getattr(bottleneck, "sparse", True):
        code = model.encode_sparse(x)
        return code.values, code.indices
    return model.encode(x), None


def count_active(fired: torch.Tensor, values: torch.Tensor, indices: torch.Tensor | None) -> None:
    """Add to `fired` (n,) the rows on which each latent is nonzero, without a host sync
    (a scatter-add of fixed length, unlike a bincount or a boolean index on CUDA)."""
    active = values != 0
    if indices is None:
        fired += active.sum(0)
    else:
        fired.index_add_(0, indices.flatten(), active.flatten().to(fired.dtype))


def reconstruct(
    model: nn.Module, x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor | None
) -> torch.Tensor:
    """The raw-space reconstruction of `x` from its code (values, indices); `x` goes along as
    the decoder's `source` (a transcoder's learned skip term reads it; others ignore it)."""
    if indices is None:
        return model.decode(values, source=x)
    return model.decode_sparse(values, indices, source=x)


def _target(batch: Any, paired: bool) -> torch.Tensor:
    x, y = batch.x, batch.y
    if not paired:
        # An autoencoder's target is its input: `y` may be labels of a TensorData, ignored.
        return x
    if y is None:
        raise AekitError(
            "the SAE is a transcoder but the data yields no target rows (Batch.y is None): "
            "stream both sites, e.g. store.stream((input_site, output_site))"
        )
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise AekitError(
            f"transcoder targets must be (batch, d_out) rows; got shape {tuple(y.shape)} "
            f"for inputs of shape {tuple(x.shape)}"
        )
    return y


def log_density_histogram(density: torch.Tensor, n_rows: int) -> dict[str, Any]:
    """Counts of log10(density) over the latents that fired, in bins of a quarter decade from
    the smallest possible density (one row in `n_rows`) to 1; dead latents are counted apart
    (log10 0 = −∞)."""
    alive = density[density > 0].double()
    low = math.floor(math.log10(1.0 / max(n_rows, 1)))
    edges = torch.linspace(low, 0.0, -low * HISTOGRAM_BINS_PER_DECADE + 1, dtype=torch.float64)
    if len(edges) < 2:
        edges = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    logd = alive.log10().clamp(edges[0], edges[-1])
    # Bin b holds edges[b] <= log10 d < edges[b+1]; density 1 goes into the last bin.
    which = (torch.bucketize(logd, edges, right=True) - 1).clamp(0, len(edges) - 2)
    counts = torch.bincount(which, minlength=len(edges) - 1)
    return {
        "edges": [round(e, 6) for e in edges.tolist()],
        "counts": counts.tolist(),
        "dead": int((density == 0).sum()),
    }


@torch.no_grad()
def sae_metrics(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int = 4096,
    max_rows: int | None = None,
    dense_threshold: float = 0.1,
) -> dict[str, Any]:
    """Reconstruction and sparsity figures of `model` over `data` (see the module docstring for
    each definition). `model` is a sparse `aekit.Autoencoder` (a transcoder when
    `model.paired`), or anything with its `latent_dim`, `paired` and `encode_sparse` /
    `decode_sparse` (or dense `encode` / `decode`). `data` is anything whose
    `batches(batch_size)` yields Batch(x, y), x the input rows and y the transcoder's target
    rows (ignored for an autoencoder), such as TensorData, a store's `stream()` view or a
    ModelStream. At most `max_rows` rows are evaluated.

    Returns a JSON-ready dict: n, l0, fvu, explained_variance, mse, cosine,
    relative_reconstruction_bias, density (list per latent), dead_latents, dead_fraction,
    dead_window_rows, dense_latents, dense_fraction, dense_threshold, log10_density_histogram.
    """
    if max_rows is not None and max_rows < 1:
        raise AekitError(f"max_rows must be at least 1 (got {max_rows})")
    was_training = model.training
    device, dtype = model_device(model), model_dtype(model)
    acc = torch.float32 if device.type == "mps" else torch.float64
    paired = model.paired
    n_latents = model.latent_dim
    fired = torch.zeros(n_latents, dtype=torch.int64, device=device)
    sums = torch.zeros(5, dtype=acc, device=device)  # l0, sq. error, cosine, |x̂|², x̂·t
    mean = None  # running mean of the targets (Chan et al.'s pairwise update with `m2`)
    m2 = torch.zeros((), dtype=acc, device=device)
    n = width = 0
    model.eval()
    try:
        if max_rows is not None and distributed.splitting_evaluation():
            raise AekitError("max_rows counts one rank's rows: evaluate on one rank")
        for batch, counted in distributed.evaluation_batches(data.batches(batch_size)):
            if max_rows is not None and n >= max_rows:
                break
            x = batch.x.to(device, dtype)
            t = _target(batch, paired).to(device, dtype)
            if max_rows is not None and n + len(x) > max_rows:
                x, t = x[: max_rows - n], t[: max_rows - n]
            values, indices = sparse_code(model, x)
            width = t[0].numel()
            if not counted:  # another rank's (see evaluation_batches)
                continue
            x_hat = reconstruct(model, x, values, indices)
            if x_hat.shape != t.shape:
                raise AekitError(
                    f"the SAE reconstructs rows of shape {tuple(x_hat.shape[1:])} but the "
                    f"targets have shape {tuple(t.shape[1:])}: wrong site or model"
                )
            count_active(fired, values, indices)
            # Rows of any shape (images for a k-sparse autoencoder) as flat vectors.
            t64, x_hat64 = t.flatten(1).to(acc), x_hat.flatten(1).to(acc)
            sums += torch.stack(
                [
                    (values != 0).sum().to(acc),
                    (t64 - x_hat64).square().sum(),
                    F.cosine_similarity(t64, x_hat64, dim=1).sum(),
                    x_hat64.square().sum(),
                    (x_hat64 * t64).sum(),
                ]
            )
            b = len(t)
            batch_mean = t64.mean(0)
            batch_m2 = (t64 - batch_mean).square().sum()
            if mean is None:
                mean, m2 = batch_mean, batch_m2
            else:
                delta = batch_mean - mean
                m2 = m2 + batch_m2 + delta.square().sum() * (n * b / (n + b))
                mean = mean + delta * (b / (n + b))
            n += b
    finally:
        model.train(was_training)
    fired, sums = distributed.evaluation_sum(fired), distributed.evaluation_sum(sums)
    if width:
        n, mean, m2 = distributed.evaluation_moments(n, mean, m2, width)
    if n == 0:
        raise AekitError("no rows to evaluate: the data is empty")
    l0, sq_err, cos, xhat_sq, xhat_dot = sums.tolist()
    variance = m2.item()
    fvu = sq_err / variance if variance > 0 else math.nan
    density = fired.double().cpu() / n
    dead = int((fired == 0).sum())
    dense = int((density > dense_threshold).sum())
    return {
        "n": n,
        "l0": l0 / n,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "mse": sq_err / (n * width),
        "cosine": cos / n,
        "relative_reconstruction_bias": xhat_sq / xhat_dot if xhat_dot != 0 else math.nan,
        "density": density.tolist(),
        "dead_latents": dead,
        "dead_fraction": dead / n_latents,
        "dead_window_rows": n,
        "dense_latents": dense,
        "dense_fraction": dense / n_latents,
        "dense_threshold": dense_threshold,
        "log10_density_histogram": log_density_histogram(density, n),
    }
