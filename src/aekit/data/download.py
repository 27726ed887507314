"""Verified downloads into a local cache: a file is only ever visible once its checksum matched."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

from aekit.errors import AekitError, one_line

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class RemoteDataset(NamedTuple):
    mirrors: tuple[str, ...]
    files: dict[str, tuple[str, int]]
    """Base name (fetched as `<name>.gz`) -> MD5 and size of the uncompressed content."""


# Checksums are of the uncompressed files: mirrors recompress, so the .gz bytes differ.
DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        files={
            "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47040016),
            "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60008),
            "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7840016),
            "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10008),
        },
    ),
    "fashion-mnist": RemoteDataset(
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        files={
            "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 47040016),
            "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60008),
            "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 7840016),
            "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10008),
        },
    ),
}


def cache_dir() -> Path:
    """$AEKIT_CACHE, else $XDG_CACHE_HOME/aekit, else ~/.cache/aekit."""
    if os.environ.get("AEKIT_CACHE"):
        return Path(os.environ["AEKIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "aekit"
    return Path.home() / ".cache" / "aekit"


def _content_digest(path: Path, gzipped: bool) -> tuple[str, int]:
    """MD5 and size of the file's content, uncompressed when `gzipped`."""
    md5, size = hashlib.md5(usedforsecurity=False), 0
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            size += len(chunk)
    return md5.hexdigest(), size


def _download(url: str, dest: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "aekit"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as f:
        while chunk := response.read(_CHUNK):
            f.write(chunk)


def fetch(
    filename: str,
    mirrors: list[str] | tuple[str, ...],
    md5: str,
    size: int | None,
    dest_dir: Path,
    timeout: float = 30,
) -> Path:
    """Download `filename` from the first mirror whose copy matches `md5` (and `size`) once
    uncompressed, into `dest_dir/filename`. The file appears there only when verified."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += filename
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            logger.info("downloading %s", url)
            _download(url, tmp, timeout)
            got_md5, got_size = _content_digest(tmp, filename.endswith(".gz"))
            if size is not None and got_size != size:
                failures.append(f"{url}: {got_size} bytes, expected {size}")
            elif got_md5 != md5.lower():
                failures.append(f"{url}: MD5 {got_md5}, expected {md5}")
            else:
                os.replace(tmp, dest_dir / filename)
                return dest_dir / filename
        except (OSError, ValueError, EOFError, zlib.error, http.client.HTTPException) as e:
            # OSError covers URLError, HTTPError, timeouts and a corrupt gzip stream.
            failures.append(f"{url}: {one_line(e)}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    tried = "; ".join(failures) if failures else "no mirrors given"
    raise AekitError(
        f"could not download {filename} ({tried}); to use a local copy, "
        "pass --data-dir DIR or set AEKIT_DATA to a folder holding it"
    )


def download_dataset(name: str, dest_dir: Path, timeout: float = 30) -> None:
    """Fetch every file of a table entry that `dest_dir` lacks, as `<name>.gz`."""
    remote = DATASETS[name]
    for base, (md5, size) in remote.files.items():
        if (dest_dir / f"{base}.gz").is_file() or (dest_dir / base).is_file():
            continue  # only verified files are ever renamed into place
        fetch(f"{base}.gz", remote.mirrors, md5, size, dest_dir, timeout)
