"""Image grids as uint8 arrays and PNG files, with no torchvision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aekit.errors import AekitError
from aekit.io import atomic_path

MIN_TILE = 48
"""Automatic upscaling makes each tile at least this many pixels on its shorter side."""


def is_image_shape(shape: Sequence[int]) -> bool:
    """True for one example shaped (C, H, W) with 1 (grey) or 3 (RGB) channels."""
    return len(shape) == 3 and shape[0] in (1, 3)


def image_grid(
    images: torch.Tensor | np.ndarray,
    nrow: int | None = None,
    padding: int = 1,
    upscale: int | None = None,
    pad_value: float = 0.5,
) -> np.ndarray:
    """Tile images (N, C, H, W) with values in [0, 1] (clipped) into one uint8 picture:
    (H', W') for grey, (H', W', 3) for RGB. `nrow` images per row (default: a square);
    `upscale` repeats each pixel (nearest neighbour), by default enough for tiles of at
    least MIN_TILE pixels; `padding` pixels of `pad_value` separate and surround the tiles."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    a = np.asarray(images, dtype=np.float32)
    if a.ndim != 4 or a.shape[1] not in (1, 3) or a.shape[0] == 0:
        raise AekitError(
            f"image_grid needs images shaped (N, C, H, W) with N >= 1 and C 1 or 3; got {a.shape}"
        )
    if padding < 0 or (upscale is not None and upscale < 1) or (nrow is not None and nrow < 1):
        raise AekitError(
            f"image_grid: padding must be >= 0, upscale and nrow >= 1 "
            f"(got padding={padding}, upscale={upscale}, nrow={nrow})"
        )
    n, c, h, w = a.shape
    scale = upscale or max(1, math.ceil(MIN_TILE / min(h, w)))
    a = np.clip(np.nan_to_num(a), 0.0, 1.0).repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    cols = min(nrow or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / cols)
    grid = np.full(
        (c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value, np.float32
    )
    for i, image in enumerate(a):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[:, top : top + h, left : left + w] = image
    grid = np.round(grid * 255).astype(np.uint8)
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_png(path: str | Path, grid: np.ndarray) -> Path:
    """Write a uint8 picture (H, W) or (H, W, 3) as a PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(grid, dtype=np.uint8)).save(tmp, format="PNG")
    return path
