"""Classical image codecs (Pillow's PNG, WebP and JPEG) and PSNR, to put a learned codec's rate
and distortion beside the codecs everyone already has.

`classical_sizes` compresses each image on its own, as a file would be, so its sizes include
each format's own header: compare them with an `aekit compress` file of one image, or divide
both by the same number of pixels for many images.

`mosaic_sizes` compresses all images as one file, tiled into a near-square grid: the fair
comparison for a batch `.aek` file, whose one header is shared by its images in the same way.
For tiny images the header is a large part of a per-image file (a JPEG's is about 160 bytes
grey and 285 colour, optimised Huffman tables included; a WebP's about 44, a PNG's about 69),
more than a 28x28 image's coded pixels at low quality, so the two differ a lot.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from aekit.errors import AekitError

CODECS = ("png", "webp", "webp-lossless", "jpeg")
"""`png`: lossless, optimize=True. `webp`: lossy at `quality` 0..100, method 6.
`webp-lossless`. `jpeg`: Pillow's libjpeg at `quality` 1..95 with optimize=True (optimised
Huffman tables), baseline; greyscale images as mode L (one component, nothing subsampled),
colour as RGB with Pillow's default 4:2:0 chroma subsampling."""

QUALITIES = {"webp": (0, 100), "jpeg": (1, 95)}
"""The lossy codecs and the qualities they take; the others take none."""

MAX_SIDE = {"webp": 16383, "webp-lossless": 16383, "jpeg": 65500}
"""The largest width or height each format can store (PNG's is far beyond any mosaic)."""


@dataclass(frozen=True)
class ClassicalResult:
    """The compressed files' sizes and the decoded images."""

    codec: str
    quality: int | None
    sizes: np.ndarray
    """Bytes of each file, int64: (N,), one per image, from `classical_sizes`; (1,), the one
    mosaic file, from `mosaic_sizes`."""
    decoded: np.ndarray
    """The decoded images, uint8, shaped like the input."""
    grid: tuple[int, int] | None = None
    """(rows, columns) of the mosaic the images were compressed in; None for one file each."""

    @property
    def total_bytes(self) -> int:
        return int(self.sizes.sum())

    @property
    def bits_per_pixel(self) -> float:
        """All files' bits over all images' pixels (N·H·W of the real images, not of a padded
        mosaic; channels are not counted)."""
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


def _checked(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) == 0 or 0 in x.shape:
        raise AekitError(
            f"classical codecs take uint8 images (N, H, W) or (N, C, H, W); got {x.dtype} {x.shape}"
        )
    if x.ndim == 4 and x.shape[1] not in (1, 3):
        raise AekitError(f"classical codecs take 1 or 3 channels; the images have shape {x.shape}")
    return x


def _options(codec: str, quality: int | None) -> dict:
    """Pillow's save options for `codec` at `quality`, after checking the two fit together."""
    if codec not in CODECS:
        raise AekitError(f"codec must be one of {', '.join(CODECS)} (got {codec!r})")
    if (codec in QUALITIES) != (quality is not None):
        raise AekitError(
            "lossy webp (quality 0..100) and jpeg (quality 1..95) need a quality; "
            "png and webp-lossless take none"
        )
    if quality is not None:
        low, high = QUALITIES[codec]
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
            raise AekitError(f"quality must be an integer (got {quality!r})")
        if not low <= quality <= high:
            raise AekitError(f"{codec} quality must be in {low}..{high} (got {quality})")
        quality = int(quality)
    return {
        "png": {"format": "PNG", "optimize": True},
        "webp": {"format": "WEBP", "quality": quality, "method": 6},
        "webp-lossless": {"format": "WEBP", "lossless": True, "quality": 100, "method": 6},
        "jpeg": {"format": "JPEG", "quality": quality, "optimize": True},
    }[codec]


def _round_trip(image: np.ndarray, options: dict) -> tuple[int, np.ndarray]:
    """One image's file size in bytes and its decoded pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    pil_image(image).save(buffer, **options)
    size = buffer.tell()
    buffer.seek(0)
    with Image.open(buffer) as back:
        return size, _back(back, image)


def classical_sizes(images: np.ndarray, codec: str, quality: int | None = None) -> ClassicalResult:
    """Compress each image of uint8 `images` (N, H, W) or (N, C, H, W) with C = 1 or 3 on its
    own with `codec` (see CODECS; `quality` only for lossy `webp` and `jpeg`), and decode it
    back."""
    x = _checked(images)
    options = _options(codec, quality)
    sizes, decoded = zip(*(_round_trip(image, options) for image in x), strict=True)
    return ClassicalResult(codec, quality, np.asarray(sizes, dtype=np.int64), np.stack(decoded))


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of the near-square mosaic of `n` tiles: ceil(sqrt(n)) columns and as
    many rows as needed."""
    if n < 1:
        raise AekitError(f"a mosaic needs at least one image (got {n})")
    columns = math.isqrt(n - 1) + 1
    return -(-n // columns), columns


def mosaic(images: np.ndarray) -> np.ndarray:
    """Tile uint8 `images` (N, H, W) or (N, C, H, W) row by row into one image (R·H, K·W) or
    (C, R·H, K·W) of `grid_shape(N)` = (R, K) tiles; tiles past the N-th are 0 (black)."""
    x = _checked(images)
    n, (h, w) = len(x), x.shape[-2:]
    rows, columns = grid_shape(n)
    tiles = np.zeros((rows * columns, *x.shape[1:]), dtype=np.uint8)
    tiles[:n] = x
    tiles = tiles.reshape(rows, columns, -1, h, w)  # (R, K, C, H, W)
    out = tiles.transpose(2, 0, 3, 1, 4).reshape(-1, rows * h, columns * w)
    return out[0] if x.ndim == 3 else out


def unmosaic(tiled: np.ndarray, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `mosaic`: the first `n` tiles of the mosaic `tiled`, as images (N, H, W)
    or (N, C, H, W) for an image `shape` (H, W) or (C, H, W)."""
    m = np.asarray(tiled)
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape, default=0) < 1:
        raise AekitError(f"an image shape is (H, W) or (C, H, W); got {shape}")
    rows, columns = grid_shape(int(n))
    h, w = shape[-2:]
    expected = (*shape[:-2], rows * h, columns * w)
    if m.shape != expected:
        raise AekitError(f"a mosaic of {n} images {shape} has shape {expected}; got {m.shape}")
    tiles = m.reshape(-1, rows, h, columns, w).transpose(1, 3, 0, 2, 4)  # (R, K, C, H, W)
    out = tiles.reshape(rows * columns, -1, h, w)[:n]
    return np.ascontiguousarray(out[:, 0] if len(shape) == 2 else out)


def mosaic_sizes(images: np.ndarray, codec: str, quality: int | None = None) -> ClassicalResult:
    """Compress all uint8 `images` (N, H, W) or (N, C, H, W) with C = 1 or 3 as ONE file: their
    `mosaic`, with `codec` (see CODECS), decoded and cut back into images.

    The result's `sizes` is the one file's bytes, shape (1,); `bits_per_pixel` divides its bits
    by the N·H·W pixels of the real images (the black padding tiles cost a few bytes that are
    counted, not pixels that are). This is what a user putting the images into one file would
    get, with the container and header amortised over them, as a batch .aek file amortises its
    header. Neighbouring tiles touch, so a codec's blocks or predictions cross tile borders:
    JPEG's 8x8 blocks (16x16 for 4:2:0 colour) straddle two to four images when H or W is not
    a multiple of 8, as for 28x28 Fashion-MNIST, and WebP's 4x4 predictions and 16x16
    macroblocks do too. A mosaic WebP wider or taller than 16383 px is refused.
    """
    x = _checked(images)
    options = _options(codec, quality)
    rows, columns = grid_shape(len(x))
    height, width = rows * x.shape[-2], columns * x.shape[-1]
    limit = MAX_SIDE.get(codec)
    if limit is not None and max(height, width) > limit:
        raise AekitError(
            f"a mosaic of {len(x)} images is {width}x{height} px, beyond {codec}'s largest "
            f"side of {limit} px; compress fewer images per file"
        )
    tiled = mosaic(x)
    size, decoded = _round_trip(tiled, options)
    back = unmosaic(decoded, len(x), x.shape[1:])
    return ClassicalResult(
        codec, quality, np.asarray([size], dtype=np.int64), back, (rows, columns)
    )


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
