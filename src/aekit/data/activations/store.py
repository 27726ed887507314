"""An on-disk store of activations, written in shards and read back with bounded memory.

Layout of a store directory::

    manifest.json             written LAST (atomically): without it there is no store
    shard-00000.safetensors   act.<site> (n, width) in the store dtype for every site,
    shard-00001.safetensors   context (n,) int64, position (n,) int32, token (n,) int32
    ...
    contexts.safetensors      token_ids (n_contexts, context_length) int32

Row r of every shard tensor describes the same token: its activation at each site, the
context it came from, its position in that context and its token id.

Reading never maps files (mapped pages count as resident memory). Shards are parsed with
the few lines of safetensors header code below and read with `readinto` straight into the
destination buffer, one shard (or row range) at a time. A shuffled pass over a `StoreView`
holds at most

    (max(buffer_rows, 2 * batch_size) + shard_rows) * sum(site widths) * itemsize  bytes

of activations, plus one index permutation of the buffered rows (8 bytes a row) and the
batch being handed out, whatever the store's size.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aekit.data.tensor_data import Batch
from aekit.errors import AekitError
from aekit.io import atomic_write_json, read_json, write_safetensors

FORMAT = "aekit-activations"
VERSION = 1
SHARD_FORMAT = "aekit-activation-shard"
CONTEXTS_FORMAT = "aekit-activation-contexts"
MANIFEST = "manifest.json"
CONTEXTS = "contexts.safetensors"
DEFAULT_BUFFER_ROWS = 262_144
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

_ST_DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "I64": torch.int64,
    "I32": torch.int32,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_SHARD_RE = re.compile(r"^shard-\d{5,}\.safetensors$")
_RESERVED = frozenset(
    {
        "format",
        "version",
        "sites",
        "dtype",
        "rows",
        "shard_rows",
        "n_contexts",
        "context_length",
        "contexts_file",
        "shards",
        "created",
        "aekit_version",
    }
)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


# ----------------------------------------------------------------------------- raw reading


@dataclass(frozen=True)
class _Entry:
    """One tensor of a safetensors file: where its bytes lie (absolute offsets)."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * _itemsize(self.dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _read_header(path: Path) -> tuple[dict[str, _Entry], int]:
    """The tensor entries of a safetensors file and the file size they imply.

    The format: 8 bytes little-endian header length N, N bytes of JSON
    {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data,
    offsets relative to byte 8 + N. Raises ValueError with the reason when malformed."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n > 100_000_000:
            raise ValueError(f"implausible header length {n}")
        raw = f.read(n)
    if len(raw) < n:
        raise ValueError("header truncated")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    start = 8 + n
    entries, end = {}, start
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            b, e = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {key!r}: unsupported or malformed entry {info}") from None
        if e - b != math.prod(shape) * _itemsize(dtype):
            raise ValueError(f"tensor {key!r}: {e - b} bytes for shape {list(shape)}")
        entries[key] = _Entry(dtype, shape, start + b, start + e)
        end = max(end, start + e)
    return entries, end


def _readinto(f: Any, out: torch.Tensor, offset: int) -> None:
    """Fill the contiguous tensor `out` with bytes of the open file `f` from `offset`: plain
    reads into the destination (no mapping, no intermediate copy)."""
    view = memoryview(out.view(torch.uint8).reshape(-1).numpy())
    f.seek(offset)
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise AekitError(f"{f.name} ended {len(view) - done} bytes early; capture again")
        done += got


def _open(path: Path) -> Any:
    return open(path, "rb", buffering=0)


# ----------------------------------------------------------------------------- writing


class StoreWriter:
    """Write an activation store shard by shard; `close()` writes the manifest last.

    Rows are buffered in the store dtype until `shard_rows` of them are there, then written
    as one safetensors file (atomically). Used as a context manager, an exception removes
    what was written and leaves no manifest, so a half capture is never readable as a store.
    An existing store (or any non-empty directory) at `path` is refused unless `overwrite`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sites: dict[str, int],
        *,
        dtype: str = "float16",
        shard_rows: int = 65_536,
        meta: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if not sites:
            raise AekitError("an activation store needs at least one site")
        for site, width in sites.items():
            if not isinstance(site, str) or not site:
                raise AekitError(f"site names must be non-empty strings (got {site!r})")
            if not isinstance(width, int) or isinstance(width, bool) or width < 1:
                raise AekitError(f"site {site!r}: width must be a positive integer (got {width!r})")
        if dtype not in DTYPES:
            raise AekitError(f"store dtype {dtype!r} is not supported; choose {', '.join(DTYPES)}")
        if not isinstance(shard_rows, int) or shard_rows < 1:
            raise AekitError(f"shard_rows must be a positive integer (got {shard_rows!r})")
        meta = dict(meta or {})
        clash = sorted(_RESERVED & set(meta))
        if clash:
            raise AekitError(f"store meta may not set {', '.join(clash)} (the writer fills them)")
        self.sites = dict(sites)
        self.dtype = dtype
        self.shard_rows = shard_rows
        self.meta = meta
        self._prepare_directory(overwrite)
        self._pending: dict[str, list[torch.Tensor]] = {k: [] for k in self._keys()}
        self._pending_rows = 0
        self._shards: list[dict[str, Any]] = []
        self._rows = 0
        self._contexts: list[torch.Tensor] = []
        self._closed = False

    def _keys(self) -> list[str]:
        return [f"act.{s}" for s in self.sites] + ["context", "position", "token"]

    def _prepare_directory(self, overwrite: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise AekitError(f"{self.path} exists and is not a directory; choose another output")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not overwrite:
                what = (
                    "an activation store"
                    if (self.path / MANIFEST).exists()
                    else "a non-empty directory"
                )
                raise AekitError(
                    f"{self.path} already exists ({what}); choose another output "
                    "or pass overwrite=True (--overwrite)"
                )
            # The manifest goes first: from then on no reader takes the rest for a store.
            (self.path / MANIFEST).unlink(missing_ok=True)
            for f in self.path.iterdir():
                if _SHARD_RE.match(f.name) or f.name == CONTEXTS or f.name.endswith(".tmp"):
                    f.unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    def add(
        self,
        activations: dict[str, torch.Tensor],
        context: torch.Tensor,
        position: torch.Tensor,
        token: torch.Tensor,
    ) -> None:
        """Append n rows: activations {site: (n, width)}, and per row its context index,
        position in the context and token id (each (n,))."""
        if self._closed:
            raise AekitError(f"store writer for {self.path} is already closed")
        if set(activations) != set(self.sites):
            raise AekitError(
                f"activations for sites {sorted(activations)} but the store has {list(self.sites)}"
            )
        n = int(context.shape[0]) if context.dim() == 1 else -1
        for name, t in (("context", context), ("position", position), ("token", token)):
            if t.dim() != 1 or t.shape[0] != n:
                raise AekitError(f"{name} must have shape ({n},) (got {tuple(t.shape)})")
        for site, act in activations.items():
            if act.shape != (n, self.sites[site]):
                raise AekitError(
                    f"site {site!r}: activations of shape {tuple(act.shape)}, "
                    f"expected ({n}, {self.sites[site]})"
                )
            if not act.is_floating_point():
                raise AekitError(f"site {site!r}: activations must be floating point")
        if n == 0:
            return
        dtype = DTYPES[self.dtype]
        for site, act in activations.items():
            stored = act.detach().to("cpu", dtype).contiguous()
            # Checked once here, as stored: float16 overflows above 65504, and a store with
            # inf or NaN in it would only fail later, in every training step that reads it.
            if not bool(torch.isfinite(stored).all()):
                raw = "" if bool(torch.isfinite(act).all()) else " (already in the model's output)"
                raise AekitError(
                    f"site {site!r}: activations are NaN or infinite as {self.dtype}{raw}; "
                    "capture with --dtype bfloat16 or float32 if they overflow float16"
                )
            self._pending[f"act.{site}"].append(stored)
        self._pending["context"].append(context.detach().to("cpu", torch.int64))
        self._pending["position"].append(position.detach().to("cpu", torch.int32))
        self._pending["token"].append(token.detach().to("cpu", torch.int32))
        self._pending_rows += n
        while self._pending_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, n: int) -> None:
        tensors, rest = {}, {}
        for key, parts in self._pending.items():
            whole = parts[0] if len(parts) == 1 else torch.cat(parts)
            tensors[key] = whole[:n].contiguous()
            rest[key] = [whole[n:].clone()] if whole.shape[0] > n else []
        name = _shard_name(len(self._shards))
        file = write_safetensors(
            self.path / name, tensors, SHARD_FORMAT, first_row=str(self._rows), dtype=self.dtype
        )
        self._shards.append({"file": name, "rows": n, "bytes": file.stat().st_size})
        self._rows += n
        self._pending, self._pending_rows = rest, self._pending_rows - n

    def add_contexts(self, token_ids: torch.Tensor) -> None:
        """Append contexts (n, context_length) of token ids; row `context` of a shard refers
        to the contexts in the order they were added."""
        if token_ids.dim() != 2:
            raise AekitError(f"contexts must be (n, context_length) (got {tuple(token_ids.shape)})")
        if self._contexts and token_ids.shape[1] != self._contexts[0].shape[1]:
            raise AekitError(
                f"contexts of length {token_ids.shape[1]} after contexts of length "
                f"{self._contexts[0].shape[1]}"
            )
        self._contexts.append(token_ids.detach().to("cpu", torch.int32))

    def close(self) -> ActivationStore:
        """Write the last shard, the contexts and then the manifest; return the store."""
        if self._closed:
            return ActivationStore(self.path)
        if self._pending_rows > 0:
            self._flush(self._pending_rows)
        if self._rows == 0:
            self.abort()
            raise AekitError(f"no activations were added; nothing written to {self.path}")
        n_contexts, context_length = 0, None
        if self._contexts:
            token_ids = torch.cat(self._contexts)
            n_contexts, context_length = int(token_ids.shape[0]), int(token_ids.shape[1])
            write_safetensors(self.path / CONTEXTS, {"token_ids": token_ids}, CONTEXTS_FORMAT)
        from aekit.version import __version__

        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "sites": {s: {"width": w} for s, w in self.sites.items()},
            "dtype": self.dtype,
            "rows": self._rows,
            "shard_rows": self.shard_rows,
            "n_contexts": n_contexts,
            "context_length": context_length,
            "contexts_file": CONTEXTS if n_contexts else None,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "aekit_version": __version__,
            **self.meta,
            "shards": self._shards,
        }
        atomic_write_json(self.path / MANIFEST, manifest)
        self._closed = True
        return ActivationStore(self.path)

    def abort(self) -> None:
        """Remove what was written (shards, contexts, and the directory if left empty)."""
        self._closed = True
        for shard in self._shards:
            (self.path / shard["file"]).unlink(missing_ok=True)
        (self.path / CONTEXTS).unlink(missing_ok=True)
        self._shards, self._pending = [], {}
        with contextlib.suppress(OSError):
            self.path.rmdir()  # only succeeds when empty

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Shard:
    path: Path
    start: int  # global index of its first row
    rows: int
    entries: dict[str, _Entry]


class ActivationStore:
    """A validated activation store: the manifest and every shard agree on files, sizes, row
    counts, sites, widths and dtype, or opening it raises AekitError naming the difference."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = self._read_manifest()
        m = self.manifest
        self.sites: list[str] = list(m["sites"])
        self.widths: dict[str, int] = {s: int(v["width"]) for s, v in m["sites"].items()}
        self.rows: int = int(m["rows"])
        self.dtype: str = m["dtype"]
        self.context_length: int | None = m.get("context_length")
        self.n_contexts: int = int(m.get("n_contexts") or 0)
        self._shards = self._check_shards()
        self._starts = np.array([s.start for s in self._shards], dtype=np.int64)
        self._contexts_entry = self._check_contexts()

    def __repr__(self) -> str:
        sites = ", ".join(f"{s} ({self.widths[s]})" for s in self.sites)
        return f"ActivationStore({str(self.path)!r}, rows={self.rows}, sites=[{sites}])"

    def __len__(self) -> int:
        return self.rows

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    # -- validation

    def _read_manifest(self) -> dict[str, Any]:
        where = self.path / MANIFEST
        if not self.path.is_dir():
            raise AekitError(f"no activation store at {self.path} (not a directory)")
        if not where.is_file():
            if any(_SHARD_RE.match(f.name) for f in self.path.iterdir()):
                raise AekitError(
                    f"{self.path} has shards but no {MANIFEST}: the capture was interrupted; "
                    "capture again with --overwrite"
                )
            raise AekitError(f"{self.path} is not an activation store (no {MANIFEST})")
        m = read_json(where, "activation store manifest")
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise AekitError(f"{where} is not an aekit activation store manifest (format)")
        if m.get("version") != VERSION:
            raise AekitError(
                f"{where} has version {m.get('version')!r}; this aekit reads version {VERSION} "
                "(a newer aekit wrote it?)"
            )

        def need(field: str, ok: Callable[[Any], bool], what: str) -> None:
            if field not in m or not ok(m[field]):
                raise AekitError(f"{where}: field {field!r} must be {what}")

        need("sites", lambda v: isinstance(v, dict) and len(v) > 0, "a non-empty object")
        for site, info in m["sites"].items():
            w = info.get("width") if isinstance(info, dict) else None
            if not isinstance(w, int) or w < 1:
                raise AekitError(f"{where}: site {site!r} needs a positive integer width")
        need("dtype", lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}")
        need("rows", lambda v: isinstance(v, int) and v >= 0, "a non-negative integer")
        need("shards", lambda v: isinstance(v, list), "a list")
        for i, s in enumerate(m["shards"]):
            if (
                not isinstance(s, dict)
                or not isinstance(s.get("file"), str)
                or not _SHARD_RE.match(s["file"])
                or not isinstance(s.get("rows"), int)
                or not isinstance(s.get("bytes"), int)
            ):
                raise AekitError(f"{where}: shards[{i}] must be {{file, rows, bytes}} (got {s})")
        return m

    def _check_shards(self) -> list[_Shard]:
        dtype = DTYPES[self.dtype]
        shards, start = [], 0
        for info in self.manifest["shards"]:
            path = self.path / info["file"]
            if not path.is_file():
                raise AekitError(f"{path} is missing ({MANIFEST} lists it); capture again")
            size = path.stat().st_size
            if size != info["bytes"]:
                raise AekitError(
                    f"{path} is {size} bytes but {MANIFEST} says {info['bytes']} "
                    "(truncated or replaced); capture again"
                )
            try:
                entries, end = _read_header(path)
            except (OSError, ValueError) as e:
                raise AekitError(f"{path} is not a readable safetensors shard ({e})") from None
            if end != size:
                raise AekitError(f"{path} holds {size} bytes but its header describes {end}")
            rows = info["rows"]
            expect = {f"act.{s}": (dtype, (rows, w)) for s, w in self.widths.items()}
            expect |= {
                "context": (torch.int64, (rows,)),
                "position": (torch.int32, (rows,)),
                "token": (torch.int32, (rows,)),
            }
            for key, (want_dtype, want_shape) in expect.items():
                entry = entries.get(key)
                what = f"site {key[4:]!r}" if key.startswith("act.") else f"tensor {key!r}"
                if entry is None:
                    raise AekitError(f"{path} has no {what} ({MANIFEST} lists it)")
                if entry.shape[:1] != want_shape[:1]:
                    raise AekitError(
                        f"{path} holds {entry.shape[0] if entry.shape else 0} rows "
                        f"but {MANIFEST} says {rows}"
                    )
                if entry.shape != want_shape:
                    raise AekitError(
                        f"{path}: {what} has shape {list(entry.shape)} "
                        f"but {MANIFEST} says {list(want_shape)}"
                    )
                if entry.dtype != want_dtype:
                    raise AekitError(
                        f"{path}: {what} is {_ST_NAMES[entry.dtype]} "
                        f"but {MANIFEST} says {_ST_NAMES[want_dtype]}"
                    )
            shards.append(_Shard(path, start, rows, entries))
            start += rows
        if start != self.rows:
            raise AekitError(
                f"{self.path / MANIFEST} says {self.rows} rows but its shards hold {start}"
            )
        return shards

    def _check_contexts(self) -> _Entry | None:
        if self.n_contexts == 0:
            return None
        path = self.path / CONTEXTS
        if not path.is_file():
            raise AekitError(f"{path} is missing ({MANIFEST} says {self.n_contexts} contexts)")
        try:
            entries, end = _read_header(path)
        except (OSError, ValueError) as e:
            raise AekitError(f"{path} is not a readable safetensors file ({e})") from None
        entry = entries.get("token_ids")
        want = (self.n_contexts, self.context_length)
        if entry is None or entry.shape != want or entry.dtype != torch.int32:
            got = None if entry is None else list(entry.shape)
            raise AekitError(f"{path}: token_ids is {got} but {MANIFEST} says {list(want)} int32")
        if end != path.stat().st_size:
            raise AekitError(f"{path} is truncated ({path.stat().st_size} of {end} bytes)")
        return entry

    # -- access

    def _site(self, site: str) -> str:
        if site not in self.widths:
            raise AekitError(
                f"site {site!r} is not in the store {self.path} (it holds {', '.join(self.sites)})"
            )
        return f"act.{site}"

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.rows:
            raise AekitError(f"rows [{start}, {stop}) are outside the store's {self.rows} rows")

    def _segments(self, start: int, stop: int) -> list[tuple[_Shard, int, int]]:
        """(shard, lo, hi) local row ranges covering global rows [start, stop), in order."""
        out = []
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        for shard in self._shards[max(first, 0) :]:
            if shard.start >= stop:
                break
            lo, hi = max(start - shard.start, 0), min(stop - shard.start, shard.rows)
            if hi > lo:
                out.append((shard, lo, hi))
        return out

    def _read_into(self, shard: _Shard, key: str, lo: int, hi: int, out: torch.Tensor) -> None:
        entry = shard.entries[key]
        with _open(shard.path) as f:
            _readinto(f, out, entry.begin + lo * entry.row_bytes)

    def _read_raw(self, shard: _Shard, key: str, lo: int, hi: int) -> torch.Tensor:
        entry = shard.entries[key]
        out = torch.empty((hi - lo, *entry.shape[1:]), dtype=entry.dtype)
        if hi > lo:
            self._read_into(shard, key, lo, hi, out)
        return out

    def read(self, site: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of `site` as float32 (stop - start, width)."""
        key = self._site(site)
        self._check_range(start, stop)
        out = torch.empty((stop - start, self.widths[site]), dtype=self.torch_dtype)
        at = 0
        for shard, lo, hi in self._segments(start, stop):
            self._read_into(shard, key, lo, hi, out[at : at + hi - lo])
            at += hi - lo
        return out.float()

    def sample(
        self, site: str, n: int, seed: int = 0, *, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """`n` distinct rows of [start, stop) drawn uniformly (all of them, shuffled, if the
        range holds fewer), float32 (n, width). The same seed and range pick the same rows
        for every site (a transcoder's input and target stay paired). Rows are read one by
        one, so memory is O(n) whatever the store."""
        key = self._site(site)
        stop = self.rows if stop is None else stop
        self._check_range(start, stop)
        n = min(int(n), stop - start)
        rng = np.random.default_rng(seed)
        picked = start + rng.choice(stop - start, size=n, replace=False)
        out = torch.empty((n, self.widths[site]), dtype=self.torch_dtype)
        order = np.argsort(picked, kind="stable")
        rows = picked[order]
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for s in np.unique(shard_of):
            shard = self._shards[int(s)]
            entry = shard.entries[key]
            with _open(shard.path) as f:
                for j in np.flatnonzero(shard_of == s):
                    local = int(rows[j]) - shard.start
                    dest = out[int(order[j]) : int(order[j]) + 1]
                    _readinto(f, dest, entry.begin + local * entry.row_bytes)
        return out.float()

    def token_info(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(context, position, token) of the given global row indices, int64, same shape."""
        flat = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.rows):
            raise AekitError(f"row indices must lie in [0, {self.rows})")
        out = [torch.empty(flat.shape, dtype=torch.int64) for _ in range(3)]
        shard_of = torch.as_tensor(
            np.searchsorted(self._starts, flat.numpy(), side="right") - 1, dtype=torch.int64
        )
        for s in torch.unique(shard_of).tolist():
            shard = self._shards[s]
            mask = shard_of == s
            local = flat[mask] - shard.start
            for dest, key in zip(out, ("context", "position", "token"), strict=True):
                dest[mask] = self._read_raw(shard, key, 0, shard.rows)[local].long()
        shape = torch.as_tensor(rows).shape
        return out[0].reshape(shape), out[1].reshape(shape), out[2].reshape(shape)

    def context_tokens(self, contexts: torch.Tensor) -> torch.Tensor:
        """Token ids (n, context_length) int64 of the given context indices."""
        if self._contexts_entry is None:
            raise AekitError(f"the store {self.path} has no contexts file")
        entry = self._contexts_entry
        idx = torch.as_tensor(contexts, dtype=torch.int64).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n_contexts):
            raise AekitError(f"context indices must lie in [0, {self.n_contexts})")
        out = torch.empty((idx.numel(), entry.shape[1]), dtype=torch.int32)
        with _open(self.path / CONTEXTS) as f:
            for i, c in enumerate(idx.tolist()):
                _readinto(f, out[i : i + 1], entry.begin + c * entry.row_bytes)
        return out.long()

    def stream(
        self,
        sites: Sequence[str] | str | None = None,
        *,
        start: int = 0,
        stop: int | None = None,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        name: str | None = None,
    ) -> StoreView:
        """A view of rows [start, stop) that yields batches like `TensorData`: x from
        sites[0], y from sites[1] (a transcoder's target) when two sites are given."""
        if sites is None:
            sites = (self.sites[0],)
        elif isinstance(sites, str):
            sites = (sites,)
        sites = tuple(sites)
        if not 1 <= len(sites) <= 2:
            raise AekitError(f"stream one site (x) or two (x, target y), not {len(sites)}")
        for s in sites:
            self._site(s)
        stop = self.rows if stop is None else stop
        self._check_range(start, stop)
        return StoreView(self, sites, start, stop, buffer_rows=buffer_rows, name=name)


# ----------------------------------------------------------------------------- streaming


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AekitError(f"batch size must be at least 1 (got {batch_size})")


Block = tuple[int, Callable[[list[torch.Tensor]], None]]
"""A block of rows for the mixing buffer: its row count and a function that writes its rows
into the given per-column destination tensors (each (rows, width))."""


def mixed_batches(
    blocks: Iterable[Block],
    columns: Sequence[tuple[int, torch.dtype]],
    *,
    batch_size: int,
    buffer_rows: int,
    max_block_rows: int,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    total_rows: int | None = None,
    stats: dict[str, int] | None = None,
) -> Iterator[list[torch.Tensor]]:
    """Shuffle a stream of row blocks through a bounded buffer; yield batches of rows.

    The buffer holds C = max(buffer_rows, 2 * batch_size) rows plus room for one block. Each
    block is written behind the buffered rows; once at least C rows are buffered, a random
    permutation of them is drawn, batches are handed out from its head until about C/2 rows
    remain, and the kept rows are moved into the freed slots. The rest comes out, shuffled,
    at the end. Every row is yielded exactly once; the same `generator` state gives the same
    batches. Columns (one per site) share the permutation, so a row's x and y stay paired.
    """
    _check_batch_size(batch_size)
    capacity = max(int(buffer_rows), 2 * batch_size)
    keep = capacity // 2
    alloc = capacity + max_block_rows
    if total_rows is not None:
        alloc = min(alloc, total_rows)
    bufs: list[torch.Tensor] | None = None
    count = peak = 0
    for rows, fill in blocks:
        if rows == 0:
            continue
        if bufs is None:
            bufs = [torch.empty((max(alloc, rows), w), dtype=d) for w, d in columns]
        if count + rows > bufs[0].shape[0]:  # a block larger than announced: grow (rare)
            bufs = [torch.cat([b[:count], b.new_empty((rows, b.shape[1]))]) for b in bufs]
        fill([b[count : count + rows] for b in bufs])
        count += rows
        peak = max(peak, count)
        if stats is not None:
            stats["peak_rows"] = peak
            stats["allocated_rows"] = bufs[0].shape[0]
        if count < capacity:
            continue
        perm = torch.randperm(count, generator=generator)
        emit = (count - keep) // batch_size * batch_size
        for i in range(0, emit, batch_size):
            idx = perm[i : i + batch_size]
            yield [b.index_select(0, idx) for b in bufs]
        # Compact: kept rows beyond the new end move into emitted slots below it. The two
        # index sets are disjoint, so chunked copies never overwrite a row still to move.
        left = count - emit
        kept, gone = perm[emit:], perm[:emit]
        movers, holes = kept[kept >= left], gone[gone < left]
        for i in range(0, movers.numel(), batch_size):
            src, dst = movers[i : i + batch_size], holes[i : i + batch_size]
            for b in bufs:
                b.index_copy_(0, dst, b.index_select(0, src))
        count = left
    if bufs is not None and count:
        perm = torch.randperm(count, generator=generator)
        stop = count - count % batch_size if drop_last else count
        for i in range(0, stop, batch_size):
            idx = perm[i : i + batch_size]
            yield [b.index_select(0, idx) for b in bufs]


def ordered_batches(
    blocks: Iterable[list[torch.Tensor]], batch_size: int, drop_last: bool = False
) -> Iterator[list[torch.Tensor]]:
    """Re-cut a stream of per-column row blocks into batches of `batch_size` rows, in order."""
    _check_batch_size(batch_size)
    carry: list[torch.Tensor] | None = None
    for cols in blocks:
        if carry is not None:
            cols = [torch.cat([c, x]) for c, x in zip(carry, cols, strict=True)]
            carry = None
        n = cols[0].shape[0]
        full = n - n % batch_size
        for i in range(0, full, batch_size):
            yield [c[i : i + batch_size] for c in cols]
        if full < n:
            carry = [c[full:].clone() for c in cols]  # clone: let the block's memory go
    if carry is not None and not drop_last:
        yield carry


def to_batch(cols: list[torch.Tensor], device: torch.device, sites: Sequence[str]) -> Batch:
    """Columns of rows -> Batch(x, y, by_site) in float32 on `device` (moved before the cast:
    fewer bytes cross to an accelerator): x the first site, y the second when there are
    exactly two (a transcoder's input and target), and every site by name. To a GPU the rows
    go through pinned memory, so the copy runs while the previous step computes."""
    pinned = torch.device(device).type == "cuda"
    by_site = {
        s: (c.pin_memory() if pinned else c).to(device, non_blocking=pinned).float()
        for s, c in zip(sites, cols, strict=True)
    }
    x = by_site[sites[0]]
    y = by_site[sites[1]] if len(sites) == 2 else None
    return Batch(x, y, by_site)


class StoreView:
    """Rows [start, stop) of a store, streamed as batches like `TensorData`.

    `batches(batch_size, shuffle=, generator=)` yields `Batch(x, y, by_site)`: x float32
    rows of sites[0], y those of sites[1] (when there are two) or None, and every site.
    Unshuffled, rows come in store order, one shard read at a time. Shuffled, the shard
    order is permuted with `generator` and rows mix through a buffer of `buffer_rows` rows
    (see `mixed_batches` for the memory bound). `last_stats` records the rows buffered at
    most in the last pass (for tests and benchmarks).
    """

    spec = None

    def __init__(
        self,
        store: ActivationStore,
        sites: tuple[str, ...],
        start: int,
        stop: int,
        *,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        device: torch.device | str = "cpu",
        name: str | None = None,
    ) -> None:
        if not isinstance(buffer_rows, int) or buffer_rows < 1:
            raise AekitError(f"buffer_rows must be a positive integer (got {buffer_rows!r})")
        self.store = store
        self.sites = sites
        self.start, self.stop = start, stop
        self.buffer_rows = buffer_rows
        self._device = torch.device(device)
        self.name = name or f"activations {store.path.name}:{sites[0]}"
        self.last_stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"StoreView({self.store.path}, sites={self.sites}, rows=[{self.start}, {self.stop}))"

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example (x)."""
        return (self.store.widths[self.sites[0]],)

    @property
    def target_shape(self) -> tuple[int, ...]:
        """The shape of one paired target (y): the second site's, when there are two."""
        return (self.store.widths[self.sites[1]],) if len(self.sites) == 2 else ()

    @property
    def widths(self) -> dict[str, int]:
        """The width of every site read."""
        return {s: self.store.widths[s] for s in self.sites}

    @property
    def device(self) -> torch.device:
        return self._device

    def _copy(self, **changes: Any) -> StoreView:
        view = StoreView.__new__(StoreView)
        view.__dict__.update(self.__dict__)
        view.__dict__.update(changes)
        view.last_stats = {}
        return view

    def to(self, device: torch.device | str) -> StoreView:
        """The same rows, with batches landing on `device`."""
        return self._copy(_device=torch.device(device))

    def slice(self, start: int, stop: int | None = None, name: str | None = None) -> StoreView:
        """Rows [start, stop) of this view (indices relative to the view)."""
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise AekitError(f"rows [{start}, {stop}) are outside the view's {len(self)} rows")
        return self._copy(start=self.start + start, stop=self.start + stop, name=name or self.name)

    def split(self, val_rows: int) -> tuple[StoreView, StoreView]:
        """(train, validation): the last `val_rows` rows are held out. Rows are in capture
        order, so the held-out rows come from the last contexts captured."""
        if not 0 < val_rows < len(self):
            raise AekitError(f"validation rows must be in (0, {len(self)}) (got {val_rows})")
        cut = len(self) - val_rows
        return self.slice(0, cut, f"{self.name} (train)"), self.slice(
            cut, None, f"{self.name} (validation)"
        )

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        _check_batch_size(batch_size)
        store = self.store
        keys = [store._site(s) for s in self.sites]
        segments = store._segments(self.start, self.stop)
        self.last_stats = stats = {"peak_rows": 0, "allocated_rows": 0}
        if not shuffle:

            def blocks() -> Iterator[list[torch.Tensor]]:
                for shard, lo, hi in segments:
                    stats["peak_rows"] = max(stats["peak_rows"], hi - lo)
                    yield [store._read_raw(shard, k, lo, hi) for k in keys]

            for cols in ordered_batches(blocks(), batch_size, drop_last):
                yield to_batch(cols, self._device, self.sites)
            return

        order = torch.randperm(len(segments), generator=generator).tolist()

        def loader(shard: _Shard, lo: int, hi: int) -> Callable[[list[torch.Tensor]], None]:
            def fill(dest: list[torch.Tensor]) -> None:
                for k, d in zip(keys, dest, strict=True):
                    store._read_into(shard, k, lo, hi, d)

            return fill

        shuffled = (
            (hi - lo, loader(shard, lo, hi)) for shard, lo, hi in map(segments.__getitem__, order)
        )
        columns = [(store.widths[s], store.torch_dtype) for s in self.sites]
        max_block = max((hi - lo for _, lo, hi in segments), default=0)
        for cols in mixed_batches(
            shuffled,
            columns,
            batch_size=batch_size,
            buffer_rows=self.buffer_rows,
            max_block_rows=max_block,
            generator=generator,
            drop_last=drop_last,
            total_rows=len(self),
            stats=stats,
        ):
            yield to_batch(cols, self._device, self.sites)


def remove_store(path: str | os.PathLike) -> None:
    """Delete a store directory (manifest first, so it stops being a store at once)."""
    path = Path(path)
    (path / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)
