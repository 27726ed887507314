"""Classical image codecs (Pillow's PNG and WebP) and PSNR, to put a learned codec's rate and
distortion beside the codecs everyone already has.

Sizes are of each image compressed on its own, as a file would be, so they include each
format's own header: compare them with an `aekit compress` file of one image, or divide both
by the same number of pixels for many images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from aekit.errors import AekitError

CODECS = ("png", "webp", "webp-lossless")
"""`png`: lossless, optimize=True. `webp`: lossy at `quality` 0..100. `webp-lossless`."""


@dataclass(frozen=True)
class ClassicalResult:
    """Each image's compressed size and its decoded pixels."""

    codec: str
    quality: int | None
    sizes: np.ndarray
    """Bytes of each image's file, (N,) int64."""
    decoded: np.ndarray
    """The decoded images, uint8, shaped like the input."""

    @property
    def total_bytes(self) -> int:
        return int(self.sizes.sum())

    @property
    def bits_per_pixel(self) -> float:
        """All files' bits over all images' pixels (H·W; channels are not counted)."""
        n, h, w = self.decoded.shape[0], self.decoded.shape[-2], self.decoded.shape[-1]
        return 8 * self.total_bytes / (n * h * w)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] as uint8 pixels round(x·255), clipped to 0..255."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def pil_image(image: np.ndarray):
    """A uint8 image (H, W) or (C, H, W), C = 1 (grey) or 3 (RGB), as a Pillow image."""
    from PIL import Image

    if image.ndim == 2:
        return Image.fromarray(image)
    if image.shape[0] == 1:
        return Image.fromarray(image[0])
    if image.shape[0] == 3:
        return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    raise AekitError(f"classical codecs take 1 or 3 channels; an image has shape {image.shape}")


def _back(decoded, like: np.ndarray) -> np.ndarray:
    """Decoded PIL pixels in the layout of the input image (H, W) or (C, H, W)."""
    x = np.asarray(decoded.convert("L" if like.ndim == 2 or like.shape[0] == 1 else "RGB"))
    if like.ndim == 2:
        return x
    return x[None] if like.shape[0] == 1 else x.transpose(2, 0, 1)


def classical_sizes(images: np.ndarray, codec: str, quality: int | None = None) -> ClassicalResult:
    """Compress each image of uint8 `images` (N, H, W) or (N, C, H, W) with C = 1 or 3 on its
    own with `codec` (see CODECS; `quality` only for lossy `webp`), and decode it back."""
    from PIL import Image

    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) == 0:
        raise AekitError(
            f"classical codecs take uint8 images (N, H, W) or (N, C, H, W); got {x.dtype} {x.shape}"
        )
    if codec not in CODECS:
        raise AekitError(f"codec must be one of {', '.join(CODECS)} (got {codec!r})")
    if (codec == "webp") != (quality is not None):
        raise AekitError("lossy webp needs a quality 0..100; png and webp-lossless take none")
    if quality is not None and not 0 <= quality <= 100:
        raise AekitError(f"quality must be in 0..100 (got {quality})")
    options = {
        "png": {"format": "PNG", "optimize": True},
        "webp": {"format": "WEBP", "quality": quality, "method": 6},
        "webp-lossless": {"format": "WEBP", "lossless": True, "quality": 100, "method": 6},
    }[codec]
    sizes, decoded = [], []
    for image in x:
        buffer = io.BytesIO()
        pil_image(image).save(buffer, **options)
        sizes.append(buffer.tell())
        buffer.seek(0)
        with Image.open(buffer) as back:
            decoded.append(_back(back, image))
    return ClassicalResult(codec, quality, np.asarray(sizes, dtype=np.int64), np.stack(decoded))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of images in [0, 1] (peak 1), in dB: the mean over images
    of 10·log10(1 / MSE), each image's MSE over all its pixels and channels. Averaging per
    image (not pooling the MSE) is the usual convention of learned-compression papers; an
    image reproduced exactly has infinite PSNR, and so then does the mean."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 2:
        raise AekitError(f"psnr needs two image batches of one shape; got {x.shape} and {y.shape}")
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(1)
    with np.errstate(divide="ignore"):
        return float(np.mean(10 * np.log10(1 / mse)))
