"""Compressed files: exact round trips for every quantizer, a size that matches the ideal code
length under the prior, and a clear error (never a wrong image) for a foreign, truncated or
corrupted file. Plus the index prior itself, the classical baselines and the CLI."""

import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import aekit
from aekit.cli import main
from aekit.compress import (
    INDEX_PRIOR,
    IndexPrior,
    compress,
    compress_indices,
    decompress,
    decompress_indices,
    fit_index_prior,
    read_header,
)
from aekit.compress.baselines import classical_sizes, psnr, to_uint8
from aekit.data import TensorData
from aekit.errors import AekitError
from conftest import TINY_NET

SHAPE = (1, 8, 8)
QUANTIZERS = {
    "vq": ("vqvae", {}),
    "rvq": ("rqvae", {}),
    "pvq": ("vqvae", {"bottleneck": "pvq"}),
    "fsq": ("fsq", {}),
    "lfq": ("lfq", {}),
    "bsq": ("bsq", {}),
}


def quantized_model(kind="vq", seed=0, shape=SHAPE):
    """A tiny untrained quantizer model with an index prior fitted on random images."""
    recipe, options = QUANTIZERS[kind]
    torch.manual_seed(seed)
    model = aekit.build(recipe, shape, **TINY_NET, **options).eval()
    train = torch.rand(200, *shape, generator=torch.Generator().manual_seed(seed + 100))
    model.latent_density = fit_index_prior(model, TensorData(train), batch_size=64)
    return model


def images(n=12, seed=1, shape=SHAPE):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    ("kind", "stages"),
    [("vq", None), ("rvq", None), ("rvq", 1), ("rvq", 3), ("pvq", None)]
    + [(k, None) for k in ("fsq", "lfq", "bsq")],
)
def test_indices_and_images_round_trip_exactly(kind, stages):
    model = quantized_model(kind)
    x = images()
    file = compress(model, x, stages=stages)
    expected = model.encode_indices(x)[..., : stages or model.quantizer.slots]
    assert torch.equal(decompress_indices(file.data, model), expected)
    assert torch.equal(decompress(file.data, model), model.decode_indices(expected))
    header = read_header(file.data)
    assert header == file.header
    assert header.slots == expected.shape[2] and header.images == len(x)
    assert file.bits_per_pixel == len(file.data) * 8 / (len(x) * 8 * 8)
    assert header.bits_per_pixel == file.bits_per_pixel
    assert header.file_bytes == len(file.data)
    old = compress(model, x, stages=stages, version=1)  # the JSON container, still read
    assert torch.equal(decompress_indices(old.data, model), expected)
    sizes = model.quantizer.codebook_sizes[: expected.shape[2]]
    assert read_header(old.data).codebook_sizes == sizes
    assert old.data[6:] != file.data[6:] and len(old.data) > len(file.data) + 300


def test_payload_length_is_the_ideal_code_length_under_the_prior():
    """A skewed prior and indices drawn from it: the range coder's payload must be within a
    few bytes of sum -log2 p (and far below a uniform code), so it really codes under the
    prior."""
    model = quantized_model("rvq")
    q = model.quantizer
    counts = torch.zeros(q.positions, q.slots, 512, dtype=torch.float64)
    counts[..., :8] = torch.tensor([400.0, 200, 100, 50, 25, 12, 6, 3]) * 100
    prior = IndexPrior(counts, q.codebook_sizes)
    indices = prior.sample(500, generator=torch.Generator().manual_seed(0))
    file = compress_indices(model, indices, prior=prior)
    ideal = float(-prior.log2_prob(indices).sum())
    assert math.isclose(file.ideal_bits, ideal)
    payload_bits = 8 * file.header.payload_bytes
    assert ideal - 1 <= payload_bits <= ideal + 64
    assert payload_bits < 0.3 * indices.numel() * math.log2(512)
    assert torch.equal(decompress_indices(file.data, model, prior=prior), indices)


def test_out_of_codebook_indices_are_refused():
    model = quantized_model("vq")
    bad = torch.zeros(2, model.quantizer.positions, 1, dtype=torch.long)
    bad[1, 0, 0] = model.quantizer.codebook_sizes[0]
    with pytest.raises(AekitError, match="outside the codebook"):
        compress_indices(model, bad)
    with pytest.raises(AekitError, match="outside the codebook"):
        model.latent_density.log2_prob(bad - 2)


def test_images_must_fit_the_model():
    model = quantized_model("vq")
    with pytest.raises(AekitError, match=r"model takes \(N, 1, 8, 8\)"):
        compress(model, torch.rand(2, 1, 9, 8))
    with pytest.raises(AekitError, match=r"model takes"):
        compress(model, torch.rand(2, 3, 8, 8))
    with pytest.raises(AekitError, match=r"\[0, 1\]"):
        compress(model, torch.rand(2, 1, 8, 8) + 1)
    with pytest.raises(AekitError, match="no images"):
        compress(model, torch.rand(0, 1, 8, 8))


def test_stages_are_a_prefix_of_residual_stages_only():
    with pytest.raises(AekitError, match="residual VQ"):
        compress(quantized_model("vq"), images(), stages=2)
    with pytest.raises(AekitError, match="between 1 and 4"):
        compress(quantized_model("rvq"), images(), stages=5)


def test_a_model_without_an_index_prior_cannot_compress():
    model = quantized_model("vq")
    model.latent_density = None
    with pytest.raises(AekitError, match="fit_index_prior"):
        compress(model, images())
    with pytest.raises(AekitError, match="continuous"):
        compress(aekit.build("ae", SHAPE, **TINY_NET), images())


# ------------------------------------------------------------------------- broken files
@pytest.fixture(scope="module")
def coded():
    model = quantized_model("rvq")
    return model, compress(model, images(5), run_dir="/some/run").data


def test_a_file_from_another_model_is_refused(coded):
    model, data = coded
    other = quantized_model("rvq", seed=7)
    with pytest.raises(AekitError, match=r"compressed with another model .*run /some/run"):
        decompress(data, other)
    refitted = IndexPrior(model.latent_density.counts + 1, model.quantizer.codebook_sizes)
    with pytest.raises(AekitError, match="another index prior"):
        decompress(data, model, prior=refitted)


def test_every_truncation_is_an_error(coded):
    model, data = coded
    for length in range(len(data)):
        with pytest.raises(AekitError, match=r"truncated|bad magic"):
            decompress(data[:length], model)


def test_every_flipped_bit_is_an_error(coded):
    model, data = coded
    for i in range(len(data)):
        for bit in (0, 7):
            broken = bytearray(data)
            broken[i] ^= 1 << bit
            with pytest.raises(AekitError):
                decompress(bytes(broken), model)


def test_a_corrupt_payload_with_a_fixed_up_crc_still_gives_no_image(coded):
    """Even past the file CRC, the header's checksum of the indices catches a bad decode."""
    model, data = coded
    header = read_header(data)
    start = len(data) - 4 - header.payload_bytes
    for i in range(start, len(data) - 4):
        broken = bytearray(data[:-4])
        broken[i] ^= 0x10
        broken += struct.pack("<I", zlib.crc32(bytes(broken)))
        with pytest.raises(AekitError, match="corrupted"):
            decompress(bytes(broken), model)


def test_bad_magic_and_unsupported_versions(coded):
    model, data = coded
    with pytest.raises(AekitError, match="not an aekit compressed file"):
        read_header(b"\x89PNG" + data[4:])
    with pytest.raises(AekitError, match="not an aekit compressed file"):
        read_header(b"")
    newer = bytearray(data[:-4])
    newer[4:6] = struct.pack("<H", 3)
    newer += struct.pack("<I", zlib.crc32(bytes(newer)))
    with pytest.raises(AekitError, match="unsupported format version 3"):
        decompress(bytes(newer), model)
    with pytest.raises(AekitError, match="extra bytes"):
        read_header(data + b"\0")


# ---------------------------------------------------------------------------- the prior
def test_index_prior_counts_with_krichevsky_trofimov_smoothing():
    indices = torch.tensor([[[0, 2]], [[0, 1]], [[1, 1]]])  # 3 examples, 1 position, 2 slots
    prior = IndexPrior.fit(indices, (2, 3))
    assert prior.fitted_on == 3 and prior.discrete
    np.testing.assert_allclose(prior.probabilities(0, 0), [2.5 / 4, 1.5 / 4])
    np.testing.assert_allclose(prior.probabilities(0, 1), [0.5 / 4.5, 2.5 / 4.5, 1.5 / 4.5])
    expected = math.log2(2.5 / 4) + math.log2(1.5 / 4.5)
    assert math.isclose(float(prior.log2_prob(indices[:1])[0]), expected)
    assert math.isclose(float(prior.log2_prob(indices[:1, :, :1])[0]), math.log2(2.5 / 4))
    assert math.isclose(prior.cross_entropy_bits(indices[:1]), -expected)


def test_index_prior_saves_loads_and_samples(tmp_path):
    model = quantized_model("pvq")
    prior = model.latent_density
    path = prior.save(tmp_path / INDEX_PRIOR)
    back = IndexPrior.load(path)
    assert torch.equal(back.counts, prior.counts) and back.codebook_sizes == prior.codebook_sizes
    assert back.identity == prior.identity
    draws = back.sample(300, generator=torch.Generator().manual_seed(3))
    assert draws.shape == (300, model.quantizer.positions, 2) and draws.dtype == torch.int64
    assert torch.equal(draws, prior.sample(300, generator=torch.Generator().manual_seed(3)))
    model.quantizer.check_indices(draws)
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, *SHAPE)

    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(AekitError, match="corrupt"):
        IndexPrior.load(path)
    from safetensors.torch import save_file

    save_file({"counts": torch.ones(1, 1, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AekitError, match="not an aekit index prior"):
        IndexPrior.load(tmp_path / "other.safetensors")


def test_index_prior_samples_follow_its_probabilities():
    prior = IndexPrior(torch.tensor([[[30.0, 10.0, 0.0]]]), (3,))
    draws = prior.sample(20000, generator=torch.Generator().manual_seed(0))
    freq = np.bincount(draws.reshape(-1).numpy(), minlength=3) / 20000
    np.testing.assert_allclose(freq, prior.probabilities(0, 0), atol=0.015)


# ---------------------------------------------------------------------------- baselines
def test_classical_codecs_are_lossless_where_they_say_so():
    rng = np.random.default_rng(0)
    grey = (rng.random((3, 16, 16)) * 255).astype(np.uint8)
    rgb = (rng.random((2, 3, 16, 16)) * 255).astype(np.uint8)
    for x in (grey, rgb, grey[:, None]):
        for codec in ("png", "webp-lossless"):
            result = classical_sizes(x, codec)
            assert np.array_equal(result.decoded, x)
            assert (result.sizes > 0).all()
            assert result.bits_per_pixel == 8 * result.sizes.sum() / (len(x) * 16 * 16)
        lossy = classical_sizes(x, "webp", quality=10)
        assert lossy.decoded.shape == x.shape
    with pytest.raises(AekitError, match="quality"):
        classical_sizes(grey, "webp")


def test_psnr_is_the_mean_over_images_of_ten_log10_of_one_over_mse():
    a = np.zeros((2, 1, 4, 4))
    b = a.copy()
    b[0] += 0.1  # MSE 0.01: 20 dB
    b[1] += 0.01  # MSE 1e-4: 40 dB
    assert math.isclose(psnr(a, b), 30.0)
    assert psnr(a, a) == math.inf
    assert np.array_equal(to_uint8(np.array([0.0, 0.5, 1.2, -1])), [0, 128, 255, 0])


# -------------------------------------------------------------------------------- the CLI
def test_train_compress_decompress_from_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = (rng.random((80, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    tiny = ["--epochs", "1", "--batch-size", "16", "--channels", "4,8", "--hidden", "16"]
    args = ["train", "vqvae", "--data", tmp_path / "x.npy", "--out", run, *tiny, "--no-report"]
    assert main([str(a) for a in [*args, "--no-progress"]]) == 0
    assert (run / INDEX_PRIOR).is_file() and not (run / "latent_density.safetensors").exists()
    assert "index_prior_bits_per_pixel" in capsys.readouterr().out
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8)

    pngs = []
    for i in range(3):
        pngs.append(tmp_path / f"in{i}.png")
        Image.fromarray(x[i]).save(pngs[-1])
    out = tmp_path / "images.aek"
    capsys.readouterr()
    assert (
        main(["compress", str(run), *map(str, pngs), str(tmp_path / "x.npy"), "-o", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    bpp = len(out.read_bytes()) * 8 / (83 * 8 * 8)
    assert f"{bpp:.4f} bits per pixel" in printed and "83 images" in printed

    assert main(["decompress", str(out), "-o", str(tmp_path / "dec")]) == 0
    decoded = np.load(tmp_path / "dec" / "images.npy")
    model = aekit.load(run)
    inputs = torch.from_numpy(np.concatenate([x[:3], x]).astype(np.float32)[:, None] / 255)
    assert np.array_equal(decoded, model.decode_indices(model.encode_indices(inputs)).numpy())
    first = np.asarray(Image.open(tmp_path / "dec" / "00000.png"))
    assert np.array_equal(first, to_uint8(decoded[0, 0]))
    assert (tmp_path / "dec" / "00082.png").is_file()

    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "wide.png")
    assert main(["compress", str(run), str(tmp_path / "wide.png"), "-o", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "wide.png: the image is 9×8 pixels; the model takes 8×8" in err
    assert not (tmp_path / "w").exists()
    (tmp_path / "cut.aek").write_bytes(out.read_bytes()[:50])
    assert main(["decompress", str(tmp_path / "cut.aek"), "-o", str(tmp_path / "d2")]) == 1
    assert "cut.aek: the file is truncated" in capsys.readouterr().err
