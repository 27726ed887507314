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
CODEBOOK_PANELS = 4
"""Slots (residual stages, product groups) drawn in the codebook usage figure."""


@contextlib.contextmanager
def figure_row(path: Path, ncols: int = 1, size: tuple[float, float] = (5.0, 4.0)) -> Iterator[Any]:
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


def _scatter_by_label(ax: Any, coords: np.ndarray, y: torch.Tensor | None) -> None:
    """Points (N, 2), one colour per class when there are at most 20 labels, a colour scale
    beyond that, and one colour without labels."""
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


def curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Train and validation curves per epoch: the loss, and the ELBO, KL and NLL when the
    history records them, one panel each."""
    path = Path(path)
    if not history:
        raise AekitError("no epochs recorded: nothing to plot")
    recorded = {key for r in history for split in ("train", "val") for key in r.get(split, {})}
    panels = [key for key in PANELS if key in recorded]
    with figure_row(path, len(panels), (4.0, 3.0)) as axes:
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
    with figure_row(path, size=(max(4.0, 0.25 * len(values)), 3.0)) as (ax,):
        ax.bar(range(len(values)), values)
        ax.set(xlabel="latent dimension", ylabel="KL (nats)", title="KL per latent dimension")
    return path


def codebook_usage(
    counts: Sequence[Sequence[int]], path: str | Path, max_panels: int = CODEBOOK_PANELS
) -> Path:
    """For each of the first `max_panels` slots, how often each code was used: the count of
    each code against its rank by frequency, both on log axes (a rank-frequency plot, where
    a few dominant codes and a long tail of rare ones both show), and the dead (never used)
    codes as a shaded band after the last used rank."""
    path = Path(path)
    if not counts:
        raise AekitError("no code counts: nothing to plot")
    shown = list(counts)[:max_panels]
    with figure_row(path, len(shown), (4.0, 3.0)) as axes:
        for s, (ax, slot) in enumerate(zip(axes, shown, strict=True)):
            ranked = np.sort(np.asarray(slot, dtype=np.int64))[::-1]
            used = int((ranked > 0).sum())
            size = len(ranked)
            # One step per run of equal counts (the ranking is sorted, so there are few runs
            # even for 2^20 codes), from a baseline under the smallest count of 1 so that it
            # shows on the log axis; the outline keeps a lone sub-pixel bar visible.
            starts = np.flatnonzero(np.diff(ranked[:used], prepend=-1))
            edges = np.append(starts, used) + 0.5
            for fill in (True, False):
                ax.stairs(ranked[starts], edges, fill=fill, baseline=0.5, color="tab:blue")
            if used < size:
                ax.axvspan(used + 0.5, size + 0.5, color="tab:red", alpha=0.15, label="dead")
                ax.legend(loc="upper right", fontsize="small")
            ax.set(xscale="log", yscale="log")
            ax.set_xlim(0.5, size + 0.5)
            ax.set_ylim(bottom=0.5)
            name = f"slot {s}: " if len(counts) > 1 else ""
            ax.set(
                title=f"{name}{size - used} of {size} codes dead",
                xlabel="code, ranked by use",
                ylabel="vectors coded (log)",
            )
    return path


def reconstructions(
    model: Autoencoder,
    x: torch.Tensor,
    path: str | Path,
    n: int = 16,
    per_row: int = 8,
    condition: torch.Tensor | None = None,
) -> Path:
    """Rows of inputs, each above the row of their reconstructions (a conditional model
    reconstructs each example under its own `condition`)."""
    _require_images(model, "reconstructions")
    n = min(n, len(x))
    per_row = min(per_row, n)
    n -= n % per_row
    if n == 0:
        raise AekitError("no examples to reconstruct")
    x = x[:n]
    with _inference(model):
        if condition is None:
            r = _batched(model.reconstruct, x, model.device)
        else:
            r = model.reconstruct(x.to(model.device), condition[:n]).cpu()
    rows = torch.stack(
        [x.cpu().float().view(-1, per_row, *x.shape[1:]), r.view(-1, per_row, *x.shape[1:])], 1
    )
    return save_png(path, image_grid(rows.reshape(-1, *x.shape[1:]), nrow=per_row))


def masked_predictions(
    model: Autoencoder, x: torch.Tensor, path: str | Path, n: int = 8, seed: int = 0
) -> Path:
    """A masked autoencoder's work on n inputs, four rows: the input, what the encoder sees
    (hidden patches grey), the prediction of every patch in the data's units (normalised
    targets scaled back by each true patch's statistics) and the prediction of the hidden
    patches with the visible ones pasted back. The mask is drawn from `seed`."""
    from aekit.patches import Masked, unpatchify

    _require_images(model, "masked predictions")
    ratio = getattr(model.corruption.options, "mask_ratio", None)
    if ratio is None:
        raise AekitError("masked predictions need the patches corruption (--corruption patches)")
    x = x[:n].to(model.device, model.dtype)
    patches = model.decoder.position.shape[0]
    with torch.random.fork_rng(devices=[]):  # the mask from `seed` (drawn on the CPU)
        torch.manual_seed(seed)
        keep = Masked(x.cpu(), ratio).keep_indices(patches).to(model.device)
    with _inference(model), model.corruption.fixed(keep):
        out = model(x)
    hidden = out.bottleneck.z.hidden()
    p = model.decoder.patch
    hidden = unpatchify(
        hidden[:, :, None].expand(-1, -1, x.shape[1] * p * p), model.decoder.grid, p
    )
    hidden = hidden.bool()
    prediction = out.reconstruction.clamp(0, 1)
    rows = [
        x,
        torch.where(hidden, torch.full_like(x, 0.5), x),
        prediction,
        torch.where(hidden, prediction, x),
    ]
    grid = torch.cat([r.float().cpu() for r in rows])
    return save_png(path, image_grid(grid, nrow=len(x)))


def samples(model: Autoencoder, path: str | Path, n: int = 64, seed: int = 0) -> Path:
    """Decoded draws from the prior (or the fitted latent density), E[x|z]; for a
    label-conditioned model one row per class."""
    _require_images(model, "samples")
    generator = torch.Generator().manual_seed(seed)
    classes = model.config.condition_classes
    if model.conditional and not classes:
        raise AekitError("samples of a vector-conditioned model need chosen conditions")
    with _inference(model):
        if classes:
            per_class = max(1, n // classes)
            labels = torch.arange(classes).repeat_interleave(per_class)
            x = model.sample(len(labels), generator=generator, condition=labels)
            return save_png(path, image_grid(x, nrow=per_class))
        x = model.sample(n, generator=generator)
    return save_png(path, image_grid(x))


def traversal(
    model: Autoencoder, x: torch.Tensor, path: str | Path, dims: int = 8, steps: int = 9
) -> Path:
    """One row per latent sweep the bottleneck offers around the codes of x (`traversals`):
    for continuous latents each of the most active dimensions from its 2nd to its 98th
    percentile around the median code, for a categorical variable each of its values."""
    _require_images(model, "traversal")
    with _inference(model):
        rows = model.bottleneck.traversals(_codes(model, x), dims, steps)
    categorical = any(label.startswith("c") for label, _ in rows)
    continuous = any(label.startswith("z") for label, _ in rows)
    lines = ["2nd to 98th percentile of the codes, others at the median"] if continuous else []
    if categorical:
        lines = [f"z: {line}" for line in lines] + ["c: each value in turn"]
    return _sweeps(model, rows, path, "\n".join(lines))


def _sweeps(
    model: Autoencoder, rows: list[tuple[str, torch.Tensor]], path: str | Path, xlabel: str
) -> Path:
    """The decoded codes of each labelled row of a sweep, one image row each."""
    path = Path(path)
    with _inference(model):
        width = max(len(codes) for _, codes in rows)
        images = [_batched(model.decode, codes, model.device) for _, codes in rows]
    blank = torch.zeros_like(images[0][:1])
    padded = [torch.cat([im, blank.expand(width - len(im), *im.shape[1:])]) for im in images]
    grid = image_grid(torch.cat(padded), nrow=width)
    pitch = (grid.shape[0] - 1) / len(rows)
    with figure_row(path, size=(6.0, 6.0 * grid.shape[0] / grid.shape[1] + 0.6)) as (ax,):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_yticks([pitch * (i + 0.5) for i in range(len(rows))], [r[0] for r in rows])
        ax.set_xticks([])
        ax.set_xlabel(xlabel)
    return path


def factor_information(
    nmi: Sequence[Sequence[float]], factor_names: Sequence[str], path: str | Path
) -> Path:
    """A heat map of I(factor; z_j) / H(factor), factors x latents: a disentangled code has
    one bright cell per row and per column."""
    path = Path(path)
    matrix = np.asarray(nmi, dtype=np.float64)
    rows, cols = matrix.shape
    with figure_row(path, size=(max(4.0, 0.45 * cols + 2.0), 0.45 * rows + 1.6)) as (ax,):
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(cols), [f"z{j}" for j in range(cols)])
        ax.set_yticks(range(rows), list(factor_names))
        for i in range(rows):
            for j in range(cols):
                shade = "black" if matrix[i, j] > 0.6 else "white"
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color=shade,
                        fontsize=7)  # fmt: skip
        ax.figure.colorbar(image, ax=ax, label="normalised mutual information")
    return path


def factor_traversals(
    model: Autoencoder,
    x: torch.Tensor,
    nmi: Sequence[Sequence[float]],
    factor_names: Sequence[str],
    path: str | Path,
    steps: int = 9,
) -> Path:
    """One row per factor: the latent that carries most of it (the heat map's brightest cell
    in the factor's row) swept as in `traversal`, the other latents at the median code."""
    _require_images(model, "factor traversals")
    with _inference(model):
        sweeps = dict(model.bottleneck.traversals(_codes(model, x), model.latent_dim, steps))
    rows = []
    for name, row in zip(factor_names, np.asarray(nmi, dtype=np.float64), strict=True):
        label = f"z{int(np.argmax(row))}"
        if label in sweeps:
            rows.append((f"{name}: {label}", sweeps[label]))
    if not rows:
        raise AekitError("the model's bottleneck offers no sweep of single latents")
    return _sweeps(model, rows, path, "each factor's most informative latent, others at the median")


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
    with figure_row(path, size=(5.5, 4.5)) as (ax,):
        _scatter_by_label(ax, coords, y)
        ax.set(
            xlabel=f"{names[0]} ({share[0]:.1%} of variance)",
            ylabel=f"{names[1]} ({share[1]:.1%} of variance)",
            title="latent codes",
        )
    return path


INTERPOLATIONS = ("linear", "spherical")


def interpolate(
    a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "linear"
) -> torch.Tensor:
    """Points from rows of a (P, D) to rows of b (P, D), ends included: (P, steps, D).

    "spherical" (slerp, Shoemake 1985; White 2016 for generative models) follows the great
    circle and keeps the norm between those of the ends, so under a standard-normal prior
    the path stays where codes are typical instead of cutting through the low-density
    centre; pairs at (nearly) zero angle, or with a zero code, fall back to linear."""
    if method not in INTERPOLATIONS:
        raise AekitError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)} (got {method!r})"
        )
    if steps < 2:
        raise AekitError(f"interpolation needs at least 2 steps (got {steps})")
    t = torch.linspace(0, 1, steps, dtype=torch.float64).view(1, steps, 1)
    a, b = a.double().unsqueeze(1), b.double().unsqueeze(1)
    linear = (1 - t) * a + t * b
    if method == "linear":
        return linear.float()
    norms = a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)
    cos = ((a * b).sum(-1, keepdim=True) / norms.clamp_min(1e-12)).clamp(-1, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    safe = sin.clamp_min(1e-6)
    slerp = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe
    degenerate = (sin < 1e-6) | (norms < 1e-12)
    return torch.where(degenerate, linear, slerp).float()


def interpolation(
    model: Autoencoder,
    x: torch.Tensor,
    path: str | Path,
    pairs: int = 4,
    steps: int = 8,
    method: str = "linear",
) -> Path:
    """One row per pair of consecutive examples of x (x[0] with x[1], x[2] with x[3], ...):
    the first input, E[x|z] along the path between their codes (`steps` points, ends
    included), then the second input."""
    _require_images(model, "interpolation")
    path = Path(path)
    pairs = min(pairs, len(x) // 2)
    if pairs < 1:
        raise AekitError(f"interpolation needs at least 2 examples (got {len(x)})")
    ends = x[: 2 * pairs].cpu().float()
    with _inference(model):
        z = _codes(model, ends)
        path_z = interpolate(z[0::2], z[1::2], steps, method)
        decoded = _batched(model.decode, path_z.reshape(-1, model.latent_dim), model.device)
    decoded = decoded.view(pairs, steps, *ends.shape[1:])
    rows = torch.cat([ends[0::2].unsqueeze(1), decoded, ends[1::2].unsqueeze(1)], 1)
    grid = image_grid(rows.reshape(-1, *ends.shape[1:]), nrow=steps + 2)
    pitch = (grid.shape[1] - 1) / (steps + 2)
    ticks = ["A", *(f"{t:.2g}" for t in np.linspace(0, 1, steps)), "B"]
    with figure_row(path, size=(7.0, 7.0 * grid.shape[0] / grid.shape[1] + 0.6)) as (ax,):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([pitch * (i + 0.5) for i in range(steps + 2)], ticks, fontsize="small")
        ax.set_yticks([])
        ax.set_xlabel(f"inputs A and B; between them {method} interpolation of their codes, t")
    return path


def prior_latents(model: Autoencoder, n: int, seed: int = 0) -> torch.Tensor | None:
    """n draws (n, latent_dim) on the CPU from the model's p(z), or from its fitted latent
    density where it has one; None when it has neither."""
    generator = torch.Generator().manual_seed(seed)
    sample_latents = getattr(model, "sample_latents", None)
    try:
        if sample_latents is not None:
            return sample_latents(n, generator=generator).cpu()
        # Models without sample_latents (older code) can only offer the bottleneck's prior.
        return model.bottleneck.sample_prior(n, device="cpu", generator=generator)
    except AekitError:
        return None


def prior_vs_posterior(
    model: Autoencoder,
    x: torch.Tensor,
    y: torch.Tensor | None,
    prior: torch.Tensor | None,
    path: str | Path,
    prior_label: str = "prior p(z)",
) -> Path:
    """For 2-D latents: the codes of x (the aggregate posterior, through the posterior
    means), coloured by label y when given, over grey draws `prior` (N, 2) from the prior
    when given. Where the two clouds differ, decoded prior samples look unlike the data."""
    if model.latent_dim != 2:
        raise AekitError(f"the prior/posterior scatter needs latent_dim 2 (got {model.latent_dim})")
    path = Path(path)
    with _inference(model):
        z = _codes(model, x).double().numpy()
    with figure_row(path, size=(5.5, 4.5)) as (ax,):
        if prior is not None:
            p = prior.detach().cpu().double().numpy()
            ax.scatter(p[:, 0], p[:, 1], s=4, c="0.7", alpha=0.5, label=prior_label, zorder=0)
        _scatter_by_label(ax, z, y)
        if prior is not None and ax.get_legend() is None:  # no class legend to carry it
            ax.legend(markerscale=3, fontsize="small", loc="best")
        ax.set_aspect("equal", adjustable="datalim")
        title = "codes of test examples" + (
            f" over {prior_label} (grey)" if prior is not None else ""
        )
        ax.set(xlabel="z0", ylabel="z1", title=title)
    return path
