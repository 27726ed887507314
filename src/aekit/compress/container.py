"""The compact `.aek` container (format version 2): a binary header of about 35 bytes, so
that a file of one small image is not mostly header (version 1's JSON header weighed about
400 bytes, more than a 28x28 image's code).

Layout (integers little-endian; varint = unsigned LEB128):

    magic b"AEKC" | version u16 = 2 | kind u8 | model id 8 bytes | tables id 4 bytes |
    symbols CRC-32 u32 | varints: images, C, H, W, slots | varint n + n bytes of UTF-8 run
    hint (n = 0: none) | varint P + P bytes of payload | CRC-32 u32 of every byte before it

`kind` 0 codes quantizer indices (slots = coded slots a position), 1 entropy-coded latents
(slots = coding stages). The model id is the first 8 bytes of the weights' SHA-256 (the
`versions/` folder key of a resumed run), the tables id the first 4 of the index prior's or
the entropy model's table hash: enough to tell a wrong model or a table that came out
differently on another machine, not a cryptographic commitment. The symbols CRC is of the
decoded integers, checked after decoding, so a coder that disagrees with the encoder gives an
error, never a wrong image.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from aekit.errors import AekitError

MAGIC = b"AEKC"
VERSION = 2
KINDS = ("indices", "latents")
MODEL_ID_BYTES, TABLES_ID_BYTES = 8, 4
_FIXED = struct.Struct(f"<4sHB{MODEL_ID_BYTES}s{TABLES_ID_BYTES}sI")
_CRC = struct.Struct("<I")
MAX_HINT = 4096
"""Longest run hint (bytes) a file may carry."""


class FileRate:
    """The rate of a file from its `file_bytes`, `images` and `image_shape` (either
    format's header has them)."""

    @property
    def pixels(self) -> int:
        """Pixels of all images (H·W each; channels are not counted, as for image codecs)."""
        return self.images * self.image_shape[1] * self.image_shape[2]

    @property
    def bits_per_pixel(self) -> float:
        """The whole file's size (header included) in bits per pixel."""
        return 8 * self.file_bytes / self.pixels


@dataclass(frozen=True)
class CompactHeader(FileRate):
    kind: str
    model_id: str
    """Hex of the first MODEL_ID_BYTES of the weights' SHA-256."""
    tables_id: str
    """Hex of the first TABLES_ID_BYTES of the tables' (or index prior's) SHA-256."""
    symbols_crc32: int
    images: int
    image_shape: tuple[int, int, int]
    slots: int
    run_dir: str | None
    header_bytes: int = 0
    """Every byte but the payload (framing, fields, hint and CRC)."""
    payload_bytes: int = 0
    version: int = VERSION

    @property
    def model_sha256(self) -> str:
        """The weights' SHA-256 as far as the file knows it (a prefix)."""
        return self.model_id

    @property
    def file_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes

    @property
    def overhead_bytes(self) -> int:
        return self.header_bytes


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at `at` and the offset after it; a varint past the end or over 9 bytes
    (2^63) is a truncated or corrupted file."""
    value = 0
    for i in range(9):
        if at + i >= len(data):
            raise AekitError(f"the file is truncated ({len(data)} bytes)")
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, at + i + 1
    raise AekitError("the file is corrupted (a length field runs past 9 bytes)")


def pack(header: CompactHeader, payload: bytes) -> bytes:
    hint = (header.run_dir or "").encode("utf-8")
    if len(hint) > MAX_HINT:
        raise AekitError(f"the run hint is {len(hint)} bytes; at most {MAX_HINT}")
    body = _FIXED.pack(
        MAGIC,
        VERSION,
        KINDS.index(header.kind),
        bytes.fromhex(header.model_id),
        bytes.fromhex(header.tables_id),
        header.symbols_crc32,
    )
    for n in (header.images, *header.image_shape, header.slots, len(hint)):
        body += varint(n)
    body += hint + varint(len(payload)) + payload
    return body + _CRC.pack(zlib.crc32(body))


def unpack(data: bytes) -> tuple[CompactHeader, bytes]:
    """The header and payload of a version-2 file, after its length and CRC checks."""
    if len(data) < _FIXED.size + _CRC.size:
        raise AekitError(f"the file is truncated ({len(data)} bytes)")
    _, _, kind, model_id, tables_id, crc = _FIXED.unpack_from(data)
    at = _FIXED.size
    fields = []
    for _ in range(6):
        value, at = read_varint(data, at)
        fields.append(value)
    images, c, h, w, slots, hint_len = fields
    if hint_len > MAX_HINT:
        raise AekitError("the file is corrupted (an impossible run hint length)")
    hint_end = at + hint_len
    payload_len, start = (
        read_varint(data, hint_end) if hint_end <= len(data) else (0, len(data) + 1)
    )
    expected = start + payload_len + _CRC.size
    if hint_end > len(data) or len(data) < expected:
        raise AekitError(f"the file is truncated ({len(data)} of {max(expected, hint_end)} bytes)")
    if len(data) > expected:
        raise AekitError(f"the file is corrupted ({len(data) - expected} unexpected extra bytes)")
    (stored,) = _CRC.unpack_from(data, expected - _CRC.size)
    if zlib.crc32(data[: expected - _CRC.size]) != stored:
        raise AekitError("the file is corrupted (checksum mismatch)")
    if kind >= len(KINDS) or images < 1 or min(c, h, w, slots) < 1:
        raise AekitError("the file's header is invalid (kind, images, shape or slots)")
    try:
        hint = data[at:hint_end].decode("utf-8") if hint_len else None
    except UnicodeDecodeError:
        raise AekitError("the file's header is invalid (the run hint is not UTF-8)") from None
    header = CompactHeader(
        KINDS[kind], model_id.hex(), tables_id.hex(), crc, images, (c, h, w), slots, hint,
        header_bytes=len(data) - payload_len, payload_bytes=payload_len,
    )  # fmt: skip
    return header, data[start : start + payload_len]
