"""Compressed image files: a model's integer code, range-coded under its own probabilities.

Two kinds of model compress. A quantizer encodes an image to indices (positions, slots), each
range-coded (constriction's `queue.RangeEncoder`, 32-bit words, 24-bit probabilities) under
the categorical of its (position, slot) in the run's `IndexPrior`. An entropy-coded bottleneck
(factorized, hyperprior) rounds its latents to integers and codes them, stage by stage, under
the tables of its learned densities (`compress.symbols`). Either way the file costs about
-log2 p(symbols) bits plus a header, so its size is the honest rate of the model as a codec.

Files are written in the compact container (format version 2, `compress.container`, about 35
bytes of header). Version 1, below, is still read, and written on request (`version=1`) for
quantizer models.

Layout of version 1 (all integers little-endian):

    offset  size  field
    0       4     magic b"AEKC"
    4       2     format version (u16), currently 1
    6       4     header length H (u32)
    10      8     payload length P (u64)
    18      H     header: UTF-8 JSON (see `Header`)
    18+H    P     payload: the range coder's u32 words; for each (position, slot) in order,
                  the indices of all images
    18+H+P  4     CRC-32 (zlib) of every byte before it

Decoding checks, in order: the magic, the version, the length (truncated?), the CRC
(corrupted?), that the model and its prior are the ones the file was written with (SHA-256 of
the weights, of the prior's counts), and finally a CRC-32 of the decoded indices recorded in
the header, so a coder that disagrees with the encoder (another constriction release, say)
gives an error, never a wrong image. Every failure is an AekitError on one line.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aekit.bottlenecks.entropy import CodingStage
from aekit.compress import container, symbols
from aekit.compress.container import CompactHeader, FileRate
from aekit.compress.index_prior import IndexPrior
from aekit.errors import AekitError, one_line
from aekit.io import atomic_write_bytes, tensors_sha256
from aekit.version import __version__

if TYPE_CHECKING:
    from aekit.models.autoencoder import Autoencoder

MAGIC = b"AEKC"
VERSION = 1
SUPPORTED_VERSIONS = (1, 2)
_PREFIX = struct.Struct("<4sHIQ")  # magic, version, header length, payload length
_CRC = struct.Struct("<I")
CODER = symbols.CODER
"""Names the entropy coder and its model approximation (perfect=False), which decoding must
match exactly."""
BATCH = 256
"""Images encoded or decoded per forward pass."""
MIN_SYMBOL_BITS = 1e-7
"""A lower bound on the code length of any symbol of an entropy-coded latent: every table
has at least 3 entries and constriction gives each at least 2^-24, so the likeliest costs at
least -log2(1 - 2 * 2^-24) > 1.7e-7 bits. A header claiming more images than its payload can
hold at that rate is refused before anything is allocated."""


@dataclass(frozen=True)
class Header(FileRate):
    """What a compressed file says about itself (the JSON header and the framing sizes)."""

    version: int
    recipe: str
    model_sha256: str
    """SHA-256 of the model's weights (`model_sha256`)."""
    prior_sha256: str
    """`IndexPrior.identity` of the prior the indices were coded under."""
    run_dir: str | None
    """Where the run the model came from is, when known: a hint for decompress. `aekit
    compress` writes it relative to the file's folder (no absolute path of the writer's
    machine leaks into files that are shared, and moving both together keeps the hint)."""
    image_shape: tuple[int, int, int]
    images: int
    positions: int
    slots: int
    """Slots coded per position: all of them, or a prefix of residual VQ's stages."""
    codebook_sizes: tuple[int, ...]
    """Codes of each coded slot."""
    indices_crc32: int
    """CRC-32 of the indices as little-endian int64 (N, positions, slots), checked after
    decoding."""
    coder: str
    aekit_version: str
    header_bytes: int = 0
    """Length of the JSON header."""
    payload_bytes: int = 0
    """Length of the range-coded payload."""

    @property
    def file_bytes(self) -> int:
        return _PREFIX.size + self.header_bytes + self.payload_bytes + _CRC.size

    @property
    def overhead_bytes(self) -> int:
        """Everything but the payload: framing, JSON header and CRC."""
        return self.file_bytes - self.payload_bytes

    def to_json(self) -> bytes:
        fields = asdict(self)
        for framing in ("version", "header_bytes", "payload_bytes"):
            del fields[framing]
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class CompressedFile:
    """The bytes of a compressed file with its header and the ideal code length of its
    indices under the prior (sum of -log2 p, in bits), for comparing with the real size."""

    data: bytes
    header: Header
    ideal_bits: float

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    @property
    def bits_per_pixel(self) -> float:
        return 8 * len(self.data) / self.header.pixels

    @property
    def ideal_bits_per_pixel(self) -> float:
        """Bits per pixel of a perfect entropy coder under the prior, without the header."""
        return self.ideal_bits / self.header.pixels

    def save(self, path: str | Path) -> Path:
        """Write the file atomically; return the path."""
        atomic_write_bytes(path, self.data)
        return Path(path)


def model_sha256(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of the model's weights: every state-dict tensor's name, dtype, shape and
    bytes, in name order. It is the same for a model in memory, on any device, and for the
    model `aekit.load` reads back from its run, because it hashes tensors, not file bytes."""
    return tensors_sha256(model.state_dict())


def model_prior(model: Autoencoder, prior: IndexPrior | None = None) -> IndexPrior:
    """The prior to code `model`'s indices under: `prior`, or the one fitted at the end of
    training (`model.latent_density`), checked to fit the model's quantizer."""
    q = model.quantizer  # a clear error for continuous bottlenecks
    prior = prior if prior is not None else model.latent_density
    if not isinstance(prior, IndexPrior):
        raise AekitError(
            "this model has no index prior to entropy-code with: `aekit train` fits one for "
            "quantizer models (index_prior.safetensors); from Python use "
            "aekit.compress.fit_index_prior(model, train_data)"
        )
    if not prior.fits(model):
        raise AekitError(
            f"the index prior ({prior.positions} positions, codebooks {prior.codebook_sizes}) "
            f"does not fit the model ({q.positions} positions, codebooks {q.codebook_sizes})"
        )
    return prior


def _coded_slots(model: Autoencoder, stages: int | None) -> int:
    q = model.quantizer
    if stages is None:
        return q.slots
    if not q.truncatable:
        if stages != q.slots:
            raise AekitError(
                f"--stages applies to residual VQ; a {model.config.bottleneck.kind!r} code has "
                f"{q.slots} slot(s), all of which are coded"
            )
        return stages
    if not 1 <= stages <= q.slots:
        raise AekitError(f"stages must be between 1 and {q.slots} (got {stages})")
    return stages


def check_images(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """`images` as float32 (N, C, H, W) of the model's shape with values in [0, 1]."""
    shape = tuple(model.input_shape)
    if len(shape) != 3:
        raise AekitError(f"compression codes images (C, H, W); this model takes {shape}")
    x = torch.as_tensor(images)
    if x.ndim == 3 and shape[0] == 1:
        x = x.unsqueeze(1)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise AekitError(
            f"images have shape {tuple(x.shape)}; the model takes (N, {', '.join(map(str, shape))})"
        )
    if x.shape[0] == 0:
        raise AekitError("no images to compress")
    x = x.float()
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise AekitError("image values must be finite and in [0, 1]")
    return x


@torch.no_grad()
def encode_images(
    model: Autoencoder, images: torch.Tensor, stages: int | None = None
) -> torch.Tensor:
    """The indices (N, positions, slots') of images, on the CPU, in eval mode and in batches;
    `stages` keeps a prefix of residual VQ's stages."""
    if model.conditional:
        raise AekitError("compression of label-conditioned models is not supported")
    x = check_images(model, images)
    slots = _coded_slots(model, stages)
    return in_eval_batches(model, x, lambda batch: model.encode_indices(batch)[..., :slots])


def _categorical(prior: IndexPrior, position: int, slot: int):
    import constriction

    return constriction.stream.model.Categorical(prior.probabilities(position, slot), perfect=False)


def encode_payload(indices: torch.Tensor, prior: IndexPrior) -> bytes:
    """Range-code indices (N, positions, slots') under the prior: for each (position, slot)
    in order, the N indices with that slot's categorical. Returns the u32 words as bytes."""
    import constriction

    idx = prior.check_indices(indices).numpy().astype(np.int32)
    encoder = constriction.stream.queue.RangeEncoder()
    for p in range(idx.shape[1]):
        for s in range(idx.shape[2]):
            encoder.encode(np.ascontiguousarray(idx[:, p, s]), _categorical(prior, p, s))
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_payload(payload: bytes, prior: IndexPrior, images: int, slots: int) -> torch.Tensor:
    """The inverse of `encode_payload`: indices (images, positions, slots) int64."""
    import constriction

    if len(payload) % 4:
        raise AekitError("the payload is not a whole number of 32-bit words (corrupted)")
    most = most_images(prior, slots, len(payload))
    if images > most:
        raise AekitError(
            f"the header claims {images:,} images; {len(payload):,} bytes of payload hold at "
            f"most {most:,} under this prior (corrupted or forged)"
        )
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    out = np.empty((images, prior.positions, slots), dtype=np.int64)
    try:
        for p in range(prior.positions):
            for s in range(slots):
                out[:, p, s] = decoder.decode(_categorical(prior, p, s), images)
    except (ValueError, RuntimeError, AssertionError) as e:
        raise AekitError(f"the payload cannot be decoded (corrupted): {e}") from None
    if not decoder.maybe_exhausted():
        raise AekitError("the payload has data left after the last index (corrupted)")
    return torch.from_numpy(out)


def most_images(prior: IndexPrior, slots: int, payload_bytes: int) -> int:
    """How many images a payload can hold at most: each costs at least the code length of the
    likeliest index at every position, so a header claiming more is refused before its
    indices are allocated. Twice the bound, plus two words, covers the coder's quantised
    probabilities and its flush."""
    return int(2 * (8 * payload_bytes + 64) / max(prior.fewest_bits(slots), 1e-9)) + 1


def _indices_crc32(indices: torch.Tensor) -> int:
    return zlib.crc32(indices.numpy().astype("<i8").tobytes())


def compress(
    model: Autoencoder,
    images: torch.Tensor,
    *,
    run_dir: str | Path | None = None,
    stages: int | None = None,
    prior: IndexPrior | None = None,
    version: int = container.VERSION,
) -> CompressedFile:
    """Compress images (N, C, H, W) in [0, 1] with a quantized model: encode them to indices
    and range-code those under `prior` (default: the model's fitted index prior).
    `run_dir` is recorded as a hint for finding the model again; `stages` keeps a prefix of
    residual VQ's stages (a lower rate). Models with an entropy-coded bottleneck code their
    rounded latents instead (`compress_latents`)."""
    if model.bottleneck.has_rate:
        if stages is not None or prior is not None:
            raise AekitError("--stages and an index prior apply to quantizer models only")
        return compress_latents(model, images, run_dir=run_dir)
    prior = model_prior(model, prior)
    indices = encode_images(model, images, stages)
    return compress_indices(model, indices, run_dir=run_dir, prior=prior, version=version)


def compress_indices(
    model: Autoencoder,
    indices: torch.Tensor,
    *,
    run_dir: str | Path | None = None,
    prior: IndexPrior | None = None,
    version: int = container.VERSION,
) -> CompressedFile:
    """Write a compressed file for indices (N, positions, slots') of `model`'s images, in
    container `version` 2 (compact) or 1 (JSON header)."""
    prior = model_prior(model, prior)
    idx = model.quantizer.check_indices(indices).cpu()
    idx = prior.check_indices(idx)
    if idx.shape[0] == 0:
        raise AekitError("no images to compress")
    slots = idx.shape[2]
    payload = encode_payload(idx, prior)
    ideal = float(-prior.log2_prob(idx).sum())
    if version == container.VERSION:
        compact = CompactHeader(
            "indices",
            model_sha256(model)[: 2 * container.MODEL_ID_BYTES],
            prior.identity[: 2 * container.TABLES_ID_BYTES],
            _indices_crc32(idx),
            int(idx.shape[0]),
            tuple(int(d) for d in model.input_shape),  # type: ignore[arg-type]
            slots,
            None if run_dir is None else str(run_dir),
        )
        return _compact_file(compact, payload, ideal)
    if version != VERSION:
        raise AekitError(f"aekit writes format versions 1 and 2 (got {version})")
    header = Header(
        version=VERSION,
        recipe=model.config.recipe,
        model_sha256=model_sha256(model),
        prior_sha256=prior.identity,
        run_dir=str(run_dir) if run_dir is not None else None,
        image_shape=tuple(int(d) for d in model.input_shape),  # type: ignore[arg-type]
        images=int(idx.shape[0]),
        positions=prior.positions,
        slots=slots,
        codebook_sizes=prior.codebook_sizes[:slots],
        indices_crc32=_indices_crc32(idx),
        coder=CODER,
        aekit_version=__version__,
    )
    text = header.to_json()
    body = _PREFIX.pack(MAGIC, VERSION, len(text), len(payload)) + text + payload
    data = body + _CRC.pack(zlib.crc32(body))
    header = Header(**{**asdict(header), "header_bytes": len(text), "payload_bytes": len(payload)})
    return CompressedFile(data, header, ideal)


def _compact_file(header: CompactHeader, payload: bytes, ideal_bits: float) -> CompressedFile:
    data = container.pack(header, payload)
    sizes = {"header_bytes": len(data) - len(payload), "payload_bytes": len(payload)}
    return CompressedFile(data, CompactHeader(**{**asdict(header), **sizes}), ideal_bits)


def _split(data: bytes) -> tuple[Header | CompactHeader, bytes]:
    """Check the framing and CRC of a file; its header and payload."""
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise AekitError("not an aekit compressed file (bad magic number)")
    if len(data) < 6:
        raise AekitError(f"the file is truncated ({len(data)} bytes)")
    (version,) = struct.unpack_from("<H", data, 4)
    if version not in SUPPORTED_VERSIONS:
        raise AekitError(
            f"unsupported format version {version} (this aekit {__version__} reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    if version == container.VERSION:
        return container.unpack(data)
    if len(data) < _PREFIX.size + _CRC.size:
        raise AekitError(f"the file is truncated ({len(data)} bytes)")
    _, version, header_len, payload_len = _PREFIX.unpack_from(data)
    expected = _PREFIX.size + header_len + payload_len + _CRC.size
    if len(data) < expected:
        raise AekitError(f"the file is truncated ({len(data)} of {expected} bytes)")
    if len(data) > expected:
        raise AekitError(f"the file is corrupted ({len(data) - expected} unexpected extra bytes)")
    (crc,) = _CRC.unpack_from(data, expected - _CRC.size)
    if zlib.crc32(data[: expected - _CRC.size]) != crc:
        raise AekitError("the file is corrupted (checksum mismatch)")
    text = data[_PREFIX.size : _PREFIX.size + header_len]
    try:
        fields = json.loads(text.decode("utf-8"))
        header = Header(
            version=version,
            recipe=str(fields["recipe"]),
            model_sha256=str(fields["model_sha256"]),
            prior_sha256=str(fields["prior_sha256"]),
            run_dir=fields["run_dir"],
            image_shape=tuple(int(d) for d in fields["image_shape"]),  # type: ignore[arg-type]
            images=int(fields["images"]),
            positions=int(fields["positions"]),
            slots=int(fields["slots"]),
            codebook_sizes=tuple(int(k) for k in fields["codebook_sizes"]),
            indices_crc32=int(fields["indices_crc32"]),
            coder=str(fields["coder"]),
            aekit_version=str(fields["aekit_version"]),
            header_bytes=header_len,
            payload_bytes=payload_len,
        )
    except (
        UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError,
        RecursionError,
    ) as e:  # fmt: skip
        reason = f"{type(e).__name__}: {one_line(e, 200)}"
        raise AekitError(f"the file's header is invalid ({reason})") from None
    if len(header.image_shape) != 3 or header.images < 1 or header.slots < 1:
        raise AekitError("the file's header is invalid (image shape, images or slots)")
    if header.run_dir is not None and not isinstance(header.run_dir, str):
        raise AekitError("the file's header is invalid (run_dir is not a path)")
    return header, data[_PREFIX.size + header_len : expected - _CRC.size]


def read_header(data: bytes) -> Header | CompactHeader:
    """The header of a compressed file, after checking its magic, version, length and CRC."""
    return _split(data)[0]


def _describe(recipe: str, sha: str, run_dir: str | None = None) -> str:
    where = f", run {run_dir}" if run_dir else ""
    what = f"a {recipe} model" if recipe else "another model"
    return f"{what} (weights sha256 {sha[:12]}…{where})"


def decompress_indices(
    data: bytes, model: Autoencoder, *, prior: IndexPrior | None = None
) -> torch.Tensor:
    """The indices (N, positions, slots') stored in a compressed file, decoded with `model`
    and its prior, which must be the ones the file was written with."""
    header, payload = _split(data)
    check_model(header, model)
    if isinstance(header, CompactHeader) and header.kind != "indices":
        raise AekitError("the file holds entropy-coded latents, not quantizer indices")
    prior = model_prior(model, prior)
    theirs = header.tables_id if isinstance(header, CompactHeader) else header.prior_sha256
    if not prior.identity.startswith(theirs):
        raise AekitError(
            f"the file was coded under another index prior (sha256 {theirs[:12]}…) "
            f"than this model's (sha256 {prior.identity[:12]}…)"
        )
    if isinstance(header, CompactHeader):
        if header.slots > prior.slots or header.image_shape != tuple(model.input_shape):
            raise AekitError("the file's header does not match its model (shape or slots)")
    else:
        if header.coder != CODER:
            raise AekitError(
                f"the file uses entropy coder {header.coder!r}; this aekit has {CODER!r}"
            )
        expected = (tuple(model.input_shape), prior.positions, prior.codebook_sizes[: header.slots])
        if header.slots > prior.slots or (
            (header.image_shape, header.positions, header.codebook_sizes) != expected
        ):
            raise AekitError("the file's header does not match its model (shape or codebooks)")
    indices = decode_payload(payload, prior, header.images, header.slots)
    crc = header.symbols_crc32 if isinstance(header, CompactHeader) else header.indices_crc32
    if _indices_crc32(indices) != crc:
        raise AekitError("the decoded indices fail their checksum (corrupted or another coder)")
    return indices


def check_model(header: Header | CompactHeader, model: Autoencoder) -> None:
    """The file names this model's weights (its SHA-256, or a prefix of it), or an error
    naming both."""
    own_sha = model_sha256(model)
    if not own_sha.startswith(header.model_sha256):
        theirs = _describe(getattr(header, "recipe", ""), header.model_sha256, header.run_dir)
        raise AekitError(
            f"the file was compressed with {theirs}; this is "
            f"{_describe(model.config.recipe, own_sha)}"
        )


@torch.no_grad()
def decompress(data: bytes, model: Autoencoder, *, prior: IndexPrior | None = None) -> torch.Tensor:
    """The images (N, C, H, W) of a compressed file: its code decoded by `model` to E[x|z],
    float32 on the CPU."""
    if model.bottleneck.has_rate:
        if prior is not None:
            raise AekitError("an index prior applies to quantizer models only")
        return in_eval_batches(model, decompress_latents(data, model), model.decode)
    indices = decompress_indices(data, model, prior=prior)
    return in_eval_batches(model, indices, model.decode_indices)


# ------------------------------------------------------------------ entropy-coded latents
def entropy_model(model: Autoencoder):
    if not model.bottleneck.has_rate:
        raise AekitError(f"a {model.config.bottleneck.kind!r} bottleneck has no entropy model")
    return model.bottleneck


@torch.no_grad()
def encode_latents(model: Autoencoder, images: torch.Tensor) -> list[torch.Tensor]:
    """The integer symbols (N, n_s) of each coding stage of images, in eval mode."""
    return _code(model, images)[0]


@torch.no_grad()
def _code(model: Autoencoder, images: torch.Tensor) -> tuple[list[torch.Tensor], list[CodingStage]]:
    """Every stage's symbols of images and how each is coded, in eval mode and batches."""
    if model.conditional:
        raise AekitError("compression of label-conditioned models is not supported")
    x = check_images(model, images)
    bottleneck = entropy_model(model)
    was_training = model.training
    model.eval()
    try:
        chunks = [
            bottleneck.code(model.features(x[i : i + BATCH].to(model.device), None))
            for i in range(0, len(x), BATCH)
        ]
    finally:
        model.train(was_training)
    codes = [torch.cat(stage) for stage in zip(*(c[0] for c in chunks), strict=True)]
    return codes, [_join(parts) for parts in zip(*(c[1] for c in chunks), strict=True)]


def _join(parts) -> CodingStage:
    """The coding of consecutive batches of one stage, as one."""
    tables = torch.cat([p.tables for p in parts])
    return CodingStage(tables, parts[0].bank, torch.cat([p.offsets for p in parts]))


def _stage(bottleneck, s: int, previous: list[torch.Tensor], n: int) -> CodingStage:
    """How stage s of n examples is coded (in batches: a hyper-synthesis of all at once could
    be large)."""
    return _join(
        [
            bottleneck.stage(s, [p[i : i + BATCH] for p in previous], min(BATCH, n - i))
            for i in range(0, n, BATCH)
        ]
    )


def _latent_crc32(codes: list[torch.Tensor]) -> int:
    crc = 0
    for stage in codes:
        crc = zlib.crc32(stage.numpy().astype("<i8").tobytes(), crc)
    return crc


def compress_latents(
    model: Autoencoder, images: torch.Tensor, *, run_dir: str | Path | None = None
) -> CompressedFile:
    """Compress images with an entropy-coded bottleneck: each stage's symbols range-coded
    under the tables the decoder will rebuild from the weights and the earlier stages."""
    bottleneck = entropy_model(model)
    codes, stages = _code(model, images)
    n = len(codes[0])
    encoder = symbols.new_encoder()
    ideal = 0.0
    for stage_symbols, stage in zip(codes, stages, strict=True):
        symbols.encode_stage(encoder, stage_symbols, stage.tables, stage.bank)
        ideal += float(stage.bank.bits(stage_symbols, stage.tables).sum())
    header = CompactHeader(
        "latents",
        model_sha256(model)[: 2 * container.MODEL_ID_BYTES],
        bottleneck.identity()[: 2 * container.TABLES_ID_BYTES],
        _latent_crc32(codes),
        n,
        tuple(int(d) for d in model.input_shape),  # type: ignore[arg-type]
        bottleneck.stages,
        None if run_dir is None else str(run_dir),
    )
    return _compact_file(header, symbols.finish(encoder), ideal)


def decompress_latents(data: bytes, model: Autoencoder) -> torch.Tensor:
    """The latents (N, latent_dim) the decoder sees, decoded from a compressed file."""
    header, payload = _split(data)
    check_model(header, model)
    bottleneck = entropy_model(model)
    if not isinstance(header, CompactHeader) or header.kind != "latents":
        raise AekitError("the file holds quantizer indices, not entropy-coded latents")
    if not bottleneck.identity().startswith(header.tables_id):
        raise AekitError(
            "the probability tables rebuilt from these weights differ from the ones the file "
            f"was coded with (sha256 {header.tables_id}…): another machine's floating point?"
        )
    if header.image_shape != tuple(model.input_shape) or header.slots != bottleneck.stages:
        raise AekitError("the file's header does not match its model (shape or stages)")
    most = int(2 * (8 * len(payload) + 64) / (MIN_SYMBOL_BITS * model.latent_dim)) + 1
    if header.images > most:
        raise AekitError(
            f"the header claims {header.images:,} images; {len(payload):,} bytes of payload "
            f"hold at most {most:,} (corrupted or forged)"
        )
    decoder = symbols.new_decoder(payload)
    codes: list[torch.Tensor] = []
    try:
        for s in range(bottleneck.stages):
            stage = _stage(bottleneck, s, codes, header.images)
            codes.append(symbols.decode_stage(decoder, stage.tables, stage.bank))
    except (ValueError, RuntimeError, AssertionError) as e:
        raise AekitError(f"the payload cannot be decoded (corrupted): {one_line(e, 200)}") from None
    if not decoder.maybe_exhausted():
        raise AekitError("the payload has data left after the last symbol (corrupted)")
    if _latent_crc32(codes) != header.symbols_crc32:
        raise AekitError("the decoded symbols fail their checksum (corrupted or another coder)")
    return torch.cat(
        [
            bottleneck.dequantise(codes[-1][i : i + BATCH], stage.offsets[i : i + BATCH]).cpu()
            for i in range(0, header.images, BATCH)
        ]
    )


@torch.no_grad()
def in_eval_batches(model: Autoencoder, x: torch.Tensor, run) -> torch.Tensor:
    """`run` over x in batches of BATCH, the model in eval mode (its mode restored after),
    the results concatenated on the CPU."""
    was_training = model.training
    model.eval()
    try:
        chunks = [run(x[i : i + BATCH].to(model.device)).cpu() for i in range(0, len(x), BATCH)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def reconstruct(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """What decompressing a file of these images gives, computed without the file: the
    model's own reconstruction through its rounded latents (eval mode, batches of BATCH)."""
    return in_eval_batches(model, check_images(model, images), model.reconstruct)
