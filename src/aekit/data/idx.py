"""Reader for IDX files (the MNIST format), raw or gzip-compressed."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from aekit.errors import AekitError

# IDX type codes; the data are big-endian.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file into a native-endian array of the shape its header declares."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AekitError(f"IDX file not found: {path}") from None
    except OSError as e:
        raise AekitError(f"{path}: cannot read ({e.strerror or e})") from None
    # Sniff rather than trust the name: an IDX file starts with a zero byte, gzip with 1f 8b.
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise AekitError(f"{path}: corrupt gzip stream ({e})") from None
    if len(data) < 4:
        raise AekitError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES or data[3] == 0:
        raise AekitError(
            f"{path}: not an IDX file (bad magic number 0x{data[:4].hex()}; expected 0x0000 "
            "then a type code 08/09/0b/0c/0d/0e and the number of dimensions)"
        )
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise AekitError(f"{path}: truncated: header of {ndim} dimensions cut short")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no int64 wrap-around
    held = len(data) - header
    if held != expected:
        problem = "truncated" if held < expected else "trailing data"
        size = "x".join(map(str, dims))
        if dtype.itemsize > 1:
            size += f" values of {dtype.itemsize} bytes"
        raise AekitError(
            f"{path}: {problem}: header says {size} = {expected} bytes, file holds {held}"
        )
    try:
        array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    except ValueError:  # an empty array whose other sizes overflow numpy's index type
        raise AekitError(f"{path}: dimensions {dims} are too large") from None
    return array.astype(dtype.newbyteorder("="))  # a writable, native-endian copy
