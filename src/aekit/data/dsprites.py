"""Procedural dSprites: 64x64 binary sprites on the factor grid of Matthey et al. 2017.

The original `dsprites_ndarray_*.npz` is a download (and one that users report as unreachable
or rate-limited); every image here is drawn instead, deterministically, from its factors:

    shape        square, ellipse, heart                       3
    scale        linspace(0.5, 1, 6)                          6
    orientation  2 pi i / 40, i = 0..39 (radians)             40
    x, y         linspace(0, 1, 32), the sprite's centre      32 x 32

737,280 images in the original's order (shape slowest, y fastest). A pixel is on when its
centre falls inside the rotated, scaled shape. The geometry (sizes, the margin kept free, the
heart's curve) is this module's, so the set is dSprites-like, not byte-identical to the file:
models and metrics behave alike, exact numbers of a paper are not reproduced pixel for pixel.
As in the original, the square's 4-fold and the ellipse's 2-fold symmetry make orientations
that differ by a quarter (a half) turn the same image.

The images are cached in the aekit cache directory as packed bits (`np.packbits`, 512 bytes
an image: 377 MB for the full grid), with the factor indices beside them; a `subset` keeps
every n-th value of scale, orientation, x and y (all three shapes) and is cached on its own.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aekit.data.arrays import read_npz
from aekit.data.config import MAX_SUBSET
from aekit.data.download import cache_dir
from aekit.errors import AekitError
from aekit.io import atomic_path

log = logging.getLogger(__name__)

VERSION = 1
"""Bumped whenever a drawn pixel could change: it names the cache file."""
SIZE = 64
FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
SHAPES = ("square", "ellipse", "heart")
FULL_SIZES = (3, 6, 40, 32, 32)
RADIUS = 10.0
"""The sprite's half-extent in pixels at scale 1 (a square of side 16, an ellipse of 20 x 10):
about the original's sprite sizes."""
MARGIN = 14.5
"""Centres range over [MARGIN, 64 - MARGIN] pixels, so that the largest sprite at any angle
(the square's half-diagonal is 11.3 pixels) stays inside the image."""
CHUNK = 4096
"""Sprites drawn per vectorised pass (4096 x 64 x 64 floats per temporary array)."""


@dataclass(frozen=True)
class FactorGrid:
    """The values of each factor kept by a subset of the full grid."""

    subset: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.subset, int) or not 1 <= self.subset <= MAX_SUBSET:
            raise AekitError(
                f"subset must be an integer from 1 to {MAX_SUBSET} (got {self.subset!r})"
            )

    @property
    def values(self) -> tuple[np.ndarray, ...]:
        """The factor values kept: shape indices, scales, angles (radians), x and y in [0, 1]."""
        full = (
            np.arange(3, dtype=np.float64),
            np.linspace(0.5, 1.0, 6),
            2 * math.pi * np.arange(40) / 40,
            np.linspace(0.0, 1.0, 32),
            np.linspace(0.0, 1.0, 32),
        )
        return (full[0], *(v[:: self.subset] for v in full[1:]))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    def __len__(self) -> int:
        return math.prod(self.sizes)

    def factors(self) -> np.ndarray:
        """Every combination of factor indices, (N, 5), in the original's order."""
        grids = np.meshgrid(*(np.arange(n) for n in self.sizes), indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], 1).astype(np.int64)


def render(shape: np.ndarray, scale: np.ndarray, angle: np.ndarray, x: np.ndarray,
           y: np.ndarray) -> np.ndarray:  # fmt: skip
    """Binary images (N, 64, 64) of sprites with these factor values (arrays of N)."""
    import torch  # the grid pass is vectorised in torch; imported only when drawing

    centre = torch.arange(SIZE, dtype=torch.float32) + 0.5
    px, py = centre.view(1, 1, SIZE), centre.view(1, SIZE, 1)  # columns x, rows y
    span = SIZE - 2 * MARGIN

    def column(v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(v, dtype=np.float32)).view(-1, 1, 1)

    shape = np.asarray(shape)
    image = torch.zeros(len(shape), SIZE, SIZE, dtype=torch.bool)
    for kind in np.unique(shape):  # each pixel is tested against its own sprite's shape only
        rows = np.flatnonzero(shape == kind)
        cx, cy = MARGIN + span * column(x[rows]), MARGIN + span * column(y[rows])
        theta, r = column(angle[rows]), RADIUS * column(scale[rows])
        cos, sin = torch.cos(theta) / r, torch.sin(theta) / r
        dx, dy = px - cx, py - cy
        # Sprite coordinates: the pixel rotated by -theta about the centre, in units of r.
        u, v = cos * dx + sin * dy, cos * dy - sin * dx
        if kind == 0:
            inside = torch.maximum(u.abs(), v.abs()) <= 0.8
        elif kind == 1:
            inside = u * u + 4 * v * v <= 1.0
        else:
            # The heart (x^2 + y^2 - 1)^3 <= x^2 y^3, point down, about 2 x 2 units.
            hu, hv = 1.15 * u, 0.1 - 1.15 * v
            hu2 = hu * hu
            inside = (hu2 + hv * hv - 1).pow(3) <= hu2 * hv.pow(3)
        image[torch.as_tensor(rows)] = inside
    return image.numpy()


def draw(grid: FactorGrid) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the grid as packed bits (N, 512) uint8, and the factor indices (N, 5)."""
    factors = grid.factors()
    values = grid.values
    bits = np.empty((len(factors), SIZE * SIZE // 8), dtype=np.uint8)
    for start in range(0, len(factors), CHUNK):
        f = factors[start : start + CHUNK]
        images = render(*(values[k][f[:, k]] for k in range(len(FACTOR_NAMES))))
        bits[start : start + len(f)] = np.packbits(images.reshape(len(f), -1), axis=1)
    return bits, factors


def cache_path(grid: FactorGrid) -> Path:
    return cache_dir() / "dsprites" / f"dsprites-v{VERSION}-subset{grid.subset}.npz"


def load(subset: int = 1) -> tuple[np.ndarray, np.ndarray, FactorGrid]:
    """Images (N, 1, 64, 64) uint8 in {0, 1} and factor indices (N, 5), drawn once and then
    read from the cache."""
    grid = FactorGrid(subset)
    path = cache_path(grid)
    bits = factors = None
    if path.is_file():
        try:
            arrays = read_npz(path)
            bits, factors = arrays["bits"], arrays["factors"]
        except (AekitError, KeyError) as e:
            log.warning("redrawing dSprites: the cache %s is unreadable (%s)", path, e)
            bits = factors = None
        if bits is not None and (bits.shape != (len(grid), 512) or factors.shape != (len(grid), 5)):
            log.warning("redrawing dSprites: the cache %s holds other shapes", path)
            bits = factors = None
    if bits is None:
        log.info("drawing %d dSprites images (subset %d) into %s", len(grid), subset, path)
        bits, factors = draw(grid)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, bits=bits, factors=factors.astype(np.uint8))
    images = np.unpackbits(bits, axis=1).reshape(-1, 1, SIZE, SIZE)
    return images, factors.astype(np.int64), grid
