"""The figures of a run, one PNG each. Matplotlib is used through `Figure` and the Agg
canvas directly, so pyplot's global state (and the user's backend) is never touched.

Model figures run in eval mode under `torch.no_grad()` on the model's device, encode in
batches of at most BATCH examples and use at most MAX_EXAMPLES of `x`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aekit.errors import AekitError
from aekit.io import atomic_path
from aekit.models.autoencoder import Autoencoder
from aekit.report.images import image_grid, is_image_shape, save_png

BATCH = 1000
MAX_EXAMPLES = 2000
PANELS = ("loss", "elbo", "kl", "nll")
"""Curves drawn per epoch, one panel each, where the history records them."""


@contextlib.contextmanager
def _figure(path: Path, ncols: int = 1, size: tuple[float, float] = (5.0, 4.0)) -> Iterator[Any]:
    """Yield a row of `ncols` axes; on exit the figure is written to `path` atomically."""
    fig = Figure(figsize=(size[0] * ncols, size[1]), layout="constrained")
    FigureCanvasAgg(fig)
    yield fig.subplots(1, ncols, squeeze=False)[0]
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


@contextlib.contextmanager
def _inference(model: Autoencoder) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device
) -> torch.Tensor:
    return torch.cat(
        [fn(x[i : i + BATCH].to(device, torch.float32)).cpu() for i in range(0, len(x), BATCH)]
    )


def _codes(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    if len(x) == 0:
        raise AekitError("no examples to encode for the latent figures")
    return _batched(model.encode, x[:MAX_EXAMPLES], model.device)


def _require_images(model: Autoencoder, what: str) -> None:
    if not is_image_shape(model.input_shape):
        raise AekitError(
            f"{what} needs image data (C, H, W); the model's input is {model.input_shape}"
        )


def curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Train and validation curves per epoch: the loss, and the ELBO, KL and NLL when the
    history records them, one panel each."""
    path = Path(path)
    if not history:
        raise AekitError("no epochs recorded: nothing to plot")
    recorded = {key for r in history for split in ("train", "val") for key in r.get(split, {})}
    panels = [key for key in PANELS if key in recorded]
    with _figure(path, len(panels), (4.0, 3.0)) as axes:
        for ax, key in zip(axes, panels, strict=True):
            for split in ("train", "val"):
                points = [(r["epoch"], r[split][key]) for r in history if key in r.get(split, {})]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=split)
            ax.set(title=key, xlabel="epoch")
            ax.legend()
    return path


def kl_per_dim(values: Sequence[float], path: str | Path) -> Path:
    """A bar per latent dimension: its KL to the prior in nats."""
    path = Path(path)
    with _figure(path, size=(max(4.0, 0.25 * len(values)), 3.0)) as (ax,):
        ax.bar(range(len(values)), values)
        ax.set(xlabel="latent dimension", ylabel="KL (nats)", title="KL per latent dimension")
    return path


def reconstructions(
    model: Autoencoder, x: torch.Tensor, path: str | Path, n: int = 16, per_row: int = 8
) -> Path:
    """Rows of inputs, each above the row of their reconstructions."""
    _require_images(model, "reconstructions")
    n = min(n, len(x))
    per_row = min(per_row, n)
    n -= n % per_row
    if n == 0:
        raise AekitError("no examples to reconstruct")
    x = x[:n]
    with _inference(model):
        r = _batched(model.reconstruct, x, model.device)
    rows = torch.stack(
        [x.cpu().float().view(-1, per_row, *x.shape[1:]), r.view(-1, per_row, *x.shape[1:])], 1
    )
    return save_png(path, image_grid(rows.reshape(-1, *x.shape[1:]), nrow=per_row))


def samples(model: Autoencoder, path: str | Path, n: int = 64, seed: int = 0) -> Path:
    """Decoded draws from the prior, E[x|z] for z ~ p(z)."""
    _require_images(model, "samples")
    if not model.has_prior:
        raise AekitError(f"the {model.config.bottleneck.kind!r} bottleneck has no prior to sample")
    with _inference(model):
        x = model.sample(n, generator=torch.Generator().manual_seed(seed))
    return save_png(path, image_grid(x))


def traversal(
    model: Autoencoder, x: torch.Tensor, path: str | Path, dims: int = 8, steps: int = 9
) -> Path:
    """One row per latent dimension, the most active first (by variance of the codes of x):
    that coordinate swept from its 2nd to its 98th percentile around the median code."""
    _require_images(model, "traversal")
    path = Path(path)
    with _inference(model):
        z = _codes(model, x)
        spread = z.var(0) if len(z) > 1 else torch.zeros(z.shape[1])
        order = torch.argsort(spread, descending=True)[:dims].tolist()
        lo, hi = torch.quantile(z, torch.tensor([0.02, 0.98]), dim=0)
        grid_z = z.median(0).values.repeat(len(order) * steps, 1)
        for row, d in enumerate(order):
            grid_z[row * steps : (row + 1) * steps, d] = torch.linspace(lo[d], hi[d], steps)
        images = _batched(model.decode, grid_z, model.device)
    grid = image_grid(images, nrow=steps)
    pitch = (grid.shape[0] - 1) / len(order)
    with _figure(path, size=(6.0, 6.0 * grid.shape[0] / grid.shape[1] + 0.6)) as (ax,):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_yticks([pitch * (i + 0.5) for i in range(len(order))], [f"z{d}" for d in order])
        ax.set_xticks([])
        ax.set_xlabel("2nd to 98th percentile of the codes, other coordinates at the median")
    return path


def latent_pca(
    model: Autoencoder, x: torch.Tensor, y: torch.Tensor | None, path: str | Path
) -> Path:
    """Codes of x in 2-D (the raw coordinates when latent_dim <= 2, else the first two
    principal components), coloured by label y when given."""
    path = Path(path)
    with _inference(model):
        z = _codes(model, x).double().numpy()
    z = z - z.mean(0)
    if z.shape[1] <= 2:
        coords, names = z, ["z0", "z1"]
    else:
        coords, names = z @ np.linalg.svd(z, full_matrices=False)[2][:2].T, ["PC1", "PC2"]
    coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))  # latent_dim 1, or 1 example
    total = z.var(0).sum()
    share = coords.var(0) / total if total > 0 else np.zeros(2)
    with _figure(path, size=(5.5, 4.5)) as (ax,):
        labels = None if y is None else y[: len(coords)].cpu().numpy()
        if labels is None:
            ax.scatter(coords[:, 0], coords[:, 1], s=4, alpha=0.6)
        elif len(np.unique(labels)) <= 20:
            for label in np.unique(labels):
                c = coords[labels == label]
                ax.scatter(c[:, 0], c[:, 1], s=4, alpha=0.6, label=str(label))
            ax.legend(title="class", markerscale=3, fontsize="small", loc="best")
        else:
            points = ax.scatter(coords[:, 0], coords[:, 1], c=labels, s=4, cmap="viridis")
            ax.figure.colorbar(points, ax=ax, label="class")
        ax.set(
            xlabel=f"{names[0]} ({share[0]:.1%} of variance)",
            ylabel=f"{names[1]} ({share[1]:.1%} of variance)",
            title="latent codes",
        )
    return path
