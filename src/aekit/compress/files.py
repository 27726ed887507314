"""Reading the images to compress and writing decompressed ones, for `aekit compress` and
`aekit decompress`.

Inputs are image files (anything Pillow reads) or `.npy` arrays. Images are converted to the
model's channels (grey for 1, RGB for 3) and must already have its height and width: resizing
would silently change what is measured. Pixel values become x / 255 in [0, 1]; `.npy` arrays
of integers are read the same way (0..255), float arrays must already lie in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aekit.compress.baselines import pil_image, to_uint8
from aekit.data.arrays import read_npy
from aekit.data.images import image_pixels, open_image
from aekit.errors import AekitError, one_line
from aekit.io import atomic_path


def _read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    if c not in (1, 3):
        raise AekitError(
            f"{path}: image files give 1 or 3 channels; the model takes {c} (pass a .npy array)"
        )
    try:
        with open_image(path) as image:
            if image.size != (w, h):
                raise AekitError(
                    f"{path}: the image is {image.size[0]}×{image.size[1]} pixels; the model "
                    f"takes {w}×{h}"
                )
            pixels = image_pixels(image, grey=c == 1)
    except (OSError, ValueError) as e:  # decoding fails only when the pixels are read
        raise AekitError(f"{path}: not a readable image ({one_line(e)})") from None
    pixels = pixels[None] if c == 1 else pixels.transpose(2, 0, 1)
    return pixels[None].astype(np.float32) / 255


def _read_npy(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    x = read_npy(path)
    c, h, w = shape
    if c == 1 and x.shape == (h, w):
        x = x[None, None]
    elif c == 1 and x.ndim == 3 and x.shape[1:] == (h, w):
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != shape or len(x) == 0:
        single = f", (N, {h}, {w}) or ({h}, {w})" if c == 1 else ""
        raise AekitError(
            f"{path}: array of shape {x.shape}; the model takes (N, {c}, {h}, {w}){single}"
        )
    if x.dtype.kind in "iu":
        if x.min() < 0 or x.max() > 255:
            raise AekitError(f"{path}: integer pixels must be in 0..255")
        return x.astype(np.float32) / 255
    if x.dtype.kind == "f":
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise AekitError(f"{path}: float pixels must be finite and in [0, 1]")
        return x.astype(np.float32)
    raise AekitError(f"{path}: pixels of dtype {x.dtype} are neither integers nor floats")


def read_inputs(paths: list[str | Path], shape: tuple[int, ...]) -> np.ndarray:
    """All images of the given files, (N, C, H, W) float32 in [0, 1], in the order given."""
    if len(shape) != 3:
        raise AekitError(f"compression codes images (C, H, W); this model takes {shape}")
    parts = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise AekitError(f"input not found: {path}")
        read = _read_npy if path.suffix.lower() == ".npy" else _read_image
        parts.append(read(path, shape))  # type: ignore[arg-type]
    if not parts:
        raise AekitError("no input images")
    return np.concatenate(parts)


def write_images(folder: str | Path, images: np.ndarray) -> list[Path]:
    """Write images (N, C, H, W) in [0, 1] as `folder/00000.png`, ... (uint8, round(x·255));
    with other than 1 or 3 channels no PNG is written. Returns the paths written."""
    folder = Path(folder)
    if images.shape[1] not in (1, 3):
        return []
    width = max(5, len(str(len(images) - 1)))
    paths = []
    for i, image in enumerate(to_uint8(images)):
        path = folder / f"{i:0{width}d}.png"
        with atomic_path(path) as tmp:
            pil_image(image).save(tmp, format="PNG")
        paths.append(path)
    return paths
