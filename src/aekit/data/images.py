"""Pixels of an image file as aekit reads them: 8 bits per channel, grey or RGB.

Pillow's `convert("L")` clips 16-bit grey images (mode I;16, the PNGs of scientific and
medical data) to 0..255 instead of rescaling them, which turns almost every pixel white; here
16-bit values are mapped onto 0..255 by v / 257 (65535 / 257 = 255 exactly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aekit.errors import AekitError, one_line

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def open_image(path: Path) -> Any:
    """Pillow's image, with its refusals (not an image, a decompression bomb) as one line."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise AekitError(f"{path}: unreadable image ({one_line(e)})") from None


def is_grey(image: Any) -> bool:
    return image.mode in ("L", "LA", "1", *WIDE_MODES)


def image_pixels(image: Any, grey: bool) -> np.ndarray:
    """(H, W) uint8 when `grey`, else (H, W, 3); a file whose pixels cannot be decoded is
    refused in one line naming it."""
    try:
        return _pixels(image, grey)
    # Pillow's PNG reader reports a broken chunk as SyntaxError, which Pillow 13 raises from
    # the pixel read (earlier versions failed with OSError).
    except (OSError, ValueError, SyntaxError) as e:
        name = getattr(image, "filename", None) or "image"
        raise AekitError(f"{name}: unreadable image ({one_line(e)})") from None


def _pixels(image: Any, grey: bool) -> np.ndarray:
    if image.mode in WIDE_MODES:
        wide = np.asarray(image).astype(np.float64)
        pixels = np.round(np.clip(wide, 0, 65535) / 257).astype(np.uint8)
        return pixels if grey else np.repeat(pixels[..., None], 3, axis=2)
    return np.asarray(image.convert("L" if grey else "RGB"))
