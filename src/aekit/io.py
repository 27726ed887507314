"""Atomic file writes and safe reads: a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aekit.errors import AekitError, one_line


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    The rename is atomic on POSIX, so readers see either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and some writers) create 0600 files; give the permissions of a plain open().
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Replace a JSON-lines file with `records` (also dropping a torn last line)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise AekitError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AekitError(f"{what} {path} is not valid JSON ({e})") from None


def read_jsonl(
    path: str | os.PathLike, fields: dict[str, tuple[type, ...]] | None = None
) -> list[dict]:
    """Read a JSON-lines file, ignoring a torn last line left by a crash. Each record must be
    an object; with `fields`, each named field must be present with one of its types (a
    hand-edited line is refused naming it, not met later as a TypeError)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise AekitError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines) - 1:
                break
            raise AekitError(f"{path}: line {i + 1} is not valid JSON") from None
        if not isinstance(record, dict):
            raise AekitError(f"{path}: line {i + 1} is not a JSON object")
        for name, types in (fields or {}).items():
            value = record.get(name)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise AekitError(f"{path}: line {i + 1}: {name} must be {wanted} (got {value!r})")
        records.append(record)
    return records


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, Any], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; a missing or corrupt file raises
    AekitError naming `what` and the path, on one line."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise AekitError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise AekitError(f"{what} {path} is unreadable or corrupt ({one_line(e)})") from None
    expected = metadata.get(CHECKSUM)
    if expected is not None and expected != tensors_sha256(tensors):
        raise AekitError(
            f"{what} {path} is corrupt: its tensors do not match the checksum written with "
            "them (a flipped bit, or an edit)"
        )
    return tensors, metadata


CHECKSUM = "tensors_sha256"
"""Metadata key of the SHA-256 over a file's tensors: safetensors checks the header's shape
and offsets, not the bytes, so a flipped bit in a weight would otherwise be used silently.
Files written before 0.2 have none and are read unchecked."""


def tensors_sha256(tensors: dict[str, Any]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of tensors, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def write_safetensors(
    path: str | Path, tensors: dict[str, Any], format: str, **metadata: str
) -> Path:
    """Write tensors atomically, with metadata naming the file's `format` (checked on reading)
    and the aekit version that wrote it."""
    from safetensors.torch import save_file

    from aekit.version import __version__

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(
            tensors,
            str(tmp),
            metadata={
                "format": format,
                "aekit_version": __version__,
                CHECKSUM: tensors_sha256(tensors),
                **metadata,
            },
        )
    return path


def read_aekit_safetensors(
    path: str | Path,
    what: str,
    format: str,
    *,
    tensors: tuple[str, ...] = (),
    metadata: tuple[str, ...] = (),
    written_by: str = "",
) -> tuple[dict[str, Any], dict[str, str]]:
    """A file written by `write_safetensors` in `format`, holding the named tensors and
    metadata entries; anything else (missing, corrupt, foreign) raises AekitError naming it."""
    path = Path(path)
    found, meta = read_safetensors(path, what)
    if (
        meta.get("format") != format
        or not set(tensors) <= set(found)
        or not set(metadata) <= set(meta)
    ):
        by = f" (written by {written_by})" if written_by else ""
        raise AekitError(f"{path} is not an aekit {what}{by}")
    return found, meta
