"""Property-based tests of every file aekit reads: truncations, bit flips, wrong types and
huge declared sizes give an AekitError, never another exception (the CLI prints AekitError
as one line). Sizes that a header declares are checked against the bytes that hold them
before anything is allocated, so the forged-size cases would be MemoryErrors otherwise."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aekit
from aekit.bench.suite import load_suite
from aekit.compress import compress, decompress
from aekit.compress.index_prior import fit_index_prior
from aekit.data import DataConfig, TensorData, load_data
from aekit.data.arrays import read_npy, read_npz
from aekit.data.idx import read_idx
from aekit.errors import AekitError
from aekit.io import read_safetensors
from aekit.models.config import ModelConfig
from aekit.train import checkpoint as ckpt

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
HUGE = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, 10**8, 2**63])


def refused_or_read(read, *args):
    """Run a reader; only AekitError may escape."""
    try:
        return read(*args)
    except AekitError as e:
        assert "\n" not in str(e)
        return None


def mutate(data: bytes, cut: int, flips: list[int]) -> bytes:
    out = bytearray(data[: max(0, len(data) - cut)])
    for position in flips:
        if out:
            out[position % len(out)] ^= 1 << (position % 8)
    return bytes(out)


# ------------------------------------------------------------------------------ .aek files
@pytest.fixture(scope="module")
def coded():
    torch.manual_seed(0)
    model = aekit.build("vqvae", (1, 8, 8), channels=(4, 8), hidden=(16,), codebook_size=8)
    model.eval()
    train = torch.rand(64, 1, 8, 8)
    model.latent_density = fit_index_prior(model, TensorData(train), batch_size=64)
    return model, compress(model, torch.rand(5, 1, 8, 8), version=1).data


PREFIX = "<4sHIQ"
"""The .aek framing: magic, version, header length, payload length (compress/codec.py)."""


def with_header(data: bytes, edit) -> bytes:
    """The file with its JSON header edited and every length and the CRC recomputed: only
    the header's meaning is wrong."""
    magic, version, header_len, payload_len = struct.unpack_from(PREFIX, data)
    start = struct.calcsize(PREFIX)
    fields = json.loads(data[start : start + header_len])
    text = edit(fields)
    payload = data[start + header_len : start + header_len + payload_len]
    body = struct.pack(PREFIX, magic, version, len(text), len(payload)) + text + payload
    return body + struct.pack("<I", zlib.crc32(body))


def test_the_header_layout_the_fuzzer_assumes(coded):
    model, data = coded
    assert torch.equal(decompress(with_header(data, lambda f: json.dumps(f).encode()), model),
                       decompress(data, model))  # fmt: skip


@FUZZ
@given(cut=st.integers(0, 64), flips=st.lists(st.integers(0, 10**6), max_size=3))
def test_aek_truncations_and_flips(coded, cut, flips):
    model, data = coded
    damaged = mutate(data, cut, flips)
    if damaged != data:
        with pytest.raises(AekitError):
            decompress(damaged, model)


HEADER_FIELDS = [
    "recipe",
    "model_sha256",
    "prior_sha256",
    "run_dir",
    "image_shape",
    "images",
    "positions",
    "slots",
    "codebook_sizes",
    "indices_crc32",
    "coder",
    "aekit_version",
]


@FUZZ
@given(
    field=st.sampled_from(HEADER_FIELDS),
    value=JSON | HUGE,
)
def test_aek_headers_with_a_recomputed_crc(coded, field, value):
    model, data = coded

    def edit(fields):
        fields[field] = value
        return json.dumps(fields).encode()

    refused_or_read(decompress, with_header(data, edit), model)


@pytest.mark.parametrize("images", [6, 10**8, 2**62])
def test_a_small_file_claiming_many_images_is_refused_before_allocating(coded, images):
    model, data = coded

    def edit(fields):
        fields["images"] = images
        return json.dumps(fields).encode()

    with pytest.raises(AekitError, match=r"claims|cannot be decoded|checksum"):
        decompress(with_header(data, edit), model)


def test_deeply_nested_headers_are_refused(coded):
    model, data = coded
    with pytest.raises(AekitError, match="header is invalid"):
        decompress(with_header(data, lambda f: b"[" * 100_000 + b"]" * 100_000), model)


# ------------------------------------------------------------------------------ IDX
@FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
    dims=st.lists(st.integers(0, 2**32 - 1), max_size=6),
    body=st.binary(max_size=64),
    gz=st.booleans(),
)
def test_idx_headers_of_any_size(tmp_path, code, dims, body, gz):
    data = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body
    if gz:
        import gzip

        data = gzip.compress(data)
    path = tmp_path / "f-idx3-ubyte"
    path.write_bytes(data)
    array = refused_or_read(read_idx, path)
    if array is not None:
        assert array.nbytes <= len(body)


# ------------------------------------------------------------------------------ .npy, .npz
def npy_bytes(header: str, body: bytes = b"") -> bytes:
    text = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + body


@FUZZ
@given(
    descr=st.sampled_from(["<f4", "|u1", "<i8", "|O", "<U3", "[('a','<f4')]", "bogus", "<f4'"]),
    shape=st.lists(HUGE, max_size=4),
    body=st.binary(max_size=64),
)
def test_npy_headers_of_any_shape_and_type(tmp_path, descr, shape, body):
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    path = tmp_path / "x.npy"
    path.write_bytes(npy_bytes(header, body))
    array = refused_or_read(read_npy, path)
    if array is not None:
        assert array.nbytes <= len(body)
        assert array.dtype.kind != "O"


@FUZZ
@given(cut=st.integers(0, 400), flips=st.lists(st.integers(0, 10**6), max_size=3))
def test_npy_and_npz_truncations_and_flips(tmp_path, cut, flips):
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    np.save(tmp_path / "a.npy", x)
    np.savez_compressed(tmp_path / "a.npz", x=x, y=np.arange(3))
    for name, read in (("a.npy", read_npy), ("a.npz", read_npz)):
        path = tmp_path / name
        path.write_bytes(mutate(path.read_bytes(), cut, flips))
        refused_or_read(read, path)


def test_object_arrays_are_never_unpickled(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object))
    for path, read in ((tmp_path / "o.npy", read_npy), (tmp_path / "o.npz", read_npz)):
        with pytest.raises(AekitError, match="Python objects"):
            read(path)


# ------------------------------------------------------------------------------ CSV, images
@FUZZ
@given(text=st.text(alphabet="0123456789.,-e\n abnaif", max_size=120))
def test_csv_of_any_text(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text)
    splits = refused_or_read(load_data, DataConfig(source=str(path), scale="none"))
    if splits is not None:
        assert torch.isfinite(splits.train.x).all()


@FUZZ
@given(cut=st.integers(0, 200), flips=st.lists(st.integers(0, 10**6), max_size=4))
def test_image_folders_with_damaged_files(tmp_path, cut, flips):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(folder / f"{i}.png")
    damaged = folder / "1.png"
    damaged.write_bytes(mutate(damaged.read_bytes(), cut, flips))
    refused_or_read(load_data, DataConfig(source=str(folder)))


# ------------------------------------------------------------------------------ safetensors
@FUZZ
@given(length=HUGE, header=JSON, body=st.binary(max_size=64))
def test_safetensors_headers(tmp_path, length, header, body):
    text = json.dumps(header).encode()
    size = length if 0 <= length < 2**64 else len(text)
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", size) + text + body)
    refused_or_read(read_safetensors, path, "weights file")


# ------------------------------------------------------------------------------ run configs
@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    model = aekit.build("vae", (1, 8, 8), channels=(4, 8), hidden=(16,), latent_dim=2)
    config = {
        "aekit_version": aekit.__version__,
        "kind": "autoencoder",
        "model": model.config.to_dict(),
        "train": {},
        "data": {"source": "digits"},
    }
    return run, config


def paths_of(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths_of(value, (*prefix, key))


@FUZZ
@given(data=st.data(), value=JSON | HUGE)
def test_config_json_with_any_field_replaced(run_config, data, value):
    run, config = run_config
    where = data.draw(st.sampled_from(list(paths_of(config))[1:]))
    edited = json.loads(json.dumps(config))
    node = edited
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    (run / "config.json").write_text(json.dumps(edited))

    def read():
        # Parsed and checked, not built: a valid config may rightly ask for a large model.
        return ModelConfig.from_dict(ckpt.read_config(run)["model"])

    refused_or_read(read)


@FUZZ
@given(text=st.binary(max_size=80))
def test_config_json_of_any_bytes(run_config, text):
    run, _ = run_config
    (run / "config.json").write_bytes(text)
    refused_or_read(ckpt.read_config, run)


# ------------------------------------------------------------------------------ bench suites
SUITE = """name = "s"
seeds = [0]
[train]
epochs = 1
[data.d]
source = "digits"
limit = 50
[models.m]
recipe = "ae"
"""


@FUZZ
@given(data=st.data())
def test_bench_suites_with_any_line_edited(tmp_path, data):
    lines = SUITE.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    lines[i] = data.draw(st.sampled_from([
        'name = "../x"', "epochs = \"one\"", "seeds = 3", "seeds = []", "[models.m]",
        "recipe = 5", "limit = -1", "source = 7", "[budgets]", "budgets = [1]", "expect = 2",
        "data = 3", "x = [", "name = '\\udcff'", "",
    ]))  # fmt: skip
    path = tmp_path / "suite.toml"
    path.write_text("\n".join(lines), errors="surrogateescape")
    refused_or_read(load_suite, str(path))


@FUZZ
@given(text=st.binary(max_size=120))
def test_bench_suites_of_any_bytes(tmp_path, text):
    path = tmp_path / "suite.toml"
    path.write_bytes(text)
    refused_or_read(load_suite, str(path))


def test_fuzzed_files_leave_real_ones_readable(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "x.npy", x)
    assert np.array_equal(read_npy(tmp_path / "x.npy"), x)
    np.savez_compressed(tmp_path / "x.npz", x=x)
    assert np.array_equal(read_npz(tmp_path / "x.npz")["x"], x)
    assert Path(tmp_path / "x.npy").is_file()
