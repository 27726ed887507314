"""Quantized autoencoders as image codecs: a prior over code indices, range-coded files, and
classical baselines (PNG, WebP) to compare rates and distortions with."""

from aekit.compress.codec import (
    CompressedFile,
    Header,
    compress,
    compress_indices,
    decompress,
    decompress_indices,
    encode_images,
    model_sha256,
    read_header,
)
from aekit.compress.index_prior import (
    INDEX_PRIOR,
    IndexPrior,
    encode_all_indices,
    fit_index_prior,
    ideal_bits_per_pixel,
)

__all__ = [
    "INDEX_PRIOR",
    "CompressedFile",
    "Header",
    "IndexPrior",
    "compress",
    "compress_indices",
    "decompress",
    "decompress_indices",
    "encode_all_indices",
    "encode_images",
    "fit_index_prior",
    "ideal_bits_per_pixel",
    "model_sha256",
    "read_header",
]
