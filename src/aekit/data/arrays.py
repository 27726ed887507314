""".npy and .npz files read without trusting their headers.

`np.load(..., allow_pickle=False)` already refuses object arrays, but it allocates whatever
shape a header declares before finding the data missing (a 128-byte file declaring
10^11 x 784 floats is a MemoryError), and a compressed member may declare any size. Here the
declared array must fit in the bytes that hold it before anything is allocated.
"""

from __future__ import annotations

import math
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from aekit.errors import AekitError, one_line

DEFLATE_RATIO = 1100
"""Deflate cannot expand data by more than about 1032:1 (RFC 1951's longest match per two
bits of output), so a member claiming more is a zip bomb or a lie."""


def _header(f: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data) from an .npy header; the file is left after it."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
        shape, _, dtype = readers[version](f)
    except (
        ValueError,
        OSError,
        EOFError,
        SyntaxError,
        TypeError,
        tokenize.TokenError,
        RecursionError,
        MemoryError,
    ) as e:  # numpy parses the header as a Python literal; each of these means "not one"
        raise AekitError(f"{where}: not a readable .npy file ({one_line(e)})") from None
    if dtype.hasobject:
        raise AekitError(
            f"{where}: holds Python objects (dtype {dtype}); aekit never unpickles, save an "
            "array of numbers"
        )
    if any(not isinstance(d, int) or d < 0 for d in shape) or (
        math.prod(d for d in shape if d) * dtype.itemsize >= 2**63
    ):  # negative sizes, or sizes numpy's int64 arithmetic overflows on even when empty
        raise AekitError(f"{where}: not a readable .npy file (shape {shape})")
    return shape, dtype, math.prod(shape) * dtype.itemsize


def _declared_fits(shape: tuple[int, ...], dtype: np.dtype, nbytes: int, held: int, where: str):
    if nbytes > held:
        raise AekitError(
            f"{where}: declares a {'x'.join(map(str, shape))} array of {dtype} ({nbytes:,} "
            f"bytes) but holds {held:,} bytes of data (truncated or forged)"
        )


def read_npy(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            shape, dtype, nbytes = _header(f, str(path))
            _declared_fits(shape, dtype, nbytes, size - f.tell(), str(path))
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, OverflowError) as e:
        raise AekitError(f"{path}: not a readable .npy file ({one_line(e)})") from None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, by name (without `.npy`)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                where = f"{path}[{info.filename}]"
                if info.file_size > DEFLATE_RATIO * info.compress_size + 2**20:
                    raise AekitError(
                        f"{where}: declares {info.file_size:,} bytes from "
                        f"{info.compress_size:,} compressed (a zip bomb?)"
                    )
                with archive.open(info) as f:
                    shape, dtype, nbytes = _header(f, where)
                    header_bytes = f.tell()
                    _declared_fits(shape, dtype, nbytes, info.file_size - header_bytes, where)
                with archive.open(info) as f:
                    arrays[info.filename[: -len(".npy")]] = np.load(f, allow_pickle=False)
    except (
        ValueError,
        OSError,
        EOFError,
        OverflowError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as e:  # zipfile: an unknown compression method, an encrypted member
        raise AekitError(f"{path}: not a readable .npz file ({one_line(e)})") from None
    return arrays
