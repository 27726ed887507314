"""Learned compression with continuous latents: GDN's closed form, the factorized density and
the Gaussian tables as distributions, rates that are -log2 of the likelihoods, exact and
deterministic decoding (across thread counts, in a subprocess), refusals of broken files, the
rate-distortion objective and the command line."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import aekit
from aekit.bottlenecks.entropy import (
    PROBABILITY_MIN,
    FactorizedDensity,
    TableBank,
    escape_bits,
    escape_class,
)
from aekit.bottlenecks.hyperprior import (
    FIXED_POINT,
    SCALE_MIN,
    exact_forward,
    gaussian_bank,
    on_grid,
    scale_table,
)
from aekit.cli import main
from aekit.compress import compress, decompress, read_header
from aekit.compress import symbols as coding
from aekit.compress.codec import decompress_latents, encode_latents, reconstruct
from aekit.errors import AekitError
from aekit.lower_bound import lower_bound
from aekit.nets.gdn import GDN

SHAPE = (1, 16, 16)
SMALL = {"channels": (8, 8), "latent_channels": 6}


def codec(recipe="hyperprior-ae", seed=0, **options):
    torch.manual_seed(seed)
    extra = {"hyper_channels": 5} if recipe == "hyperprior-ae" else {}
    return aekit.build(recipe, SHAPE, **SMALL, **extra, **options).eval()


def images(n=9, seed=1):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ GDN
def test_gdn_is_its_closed_form():
    torch.manual_seed(0)
    gdn, igdn = GDN(3), GDN(3, inverse=True)
    with torch.no_grad():
        beta = torch.tensor([0.5, 1.0, 2.0])
        gamma = torch.rand(3, 3)
        for layer in (gdn, igdn):
            layer.beta.root.copy_((beta + 2.0**-36).sqrt())
            layer.gamma.root.copy_((gamma + 2.0**-36).sqrt())
    x = torch.randn(2, 3, 4, 5)
    norm = beta.view(1, 3, 1, 1) + torch.einsum("ij,bjhw->bihw", gamma, x**2)
    torch.testing.assert_close(gdn(x), x / norm.sqrt(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(igdn(x), x * norm.sqrt(), rtol=1e-5, atol=1e-6)


def test_gdn_starts_mild_and_keeps_its_parameters_in_range():
    gdn = GDN(4)
    x = torch.randn(3, 4, 2, 2)
    norm = 1 + 0.1 * x**2  # beta = 1, gamma = 0.1 I
    torch.testing.assert_close(gdn(x), x / norm.sqrt())
    optimiser = torch.optim.SGD(gdn.parameters(), lr=10.0)
    for _ in range(3):  # push beta and gamma hard towards negative values
        optimiser.zero_grad()
        (gdn.beta().sum() + gdn.gamma().sum()).backward()
        optimiser.step()
    assert float(gdn.beta().detach().min()) >= 1e-6 - 1e-12
    assert float(gdn.gamma().detach().min()) >= 0


def test_lower_bound_lets_a_parameter_leave_its_bound():
    x = torch.tensor([0.05, 0.05, 0.5], requires_grad=True)
    y = lower_bound(x, 0.11)
    assert torch.equal(y.detach(), torch.tensor([0.11, 0.11, 0.5]))
    y.backward(torch.tensor([-1.0, 1.0, 1.0]))  # raise, lower, lower
    assert torch.equal(x.grad, torch.tensor([-1.0, 0.0, 1.0]))


def test_gdn_is_for_feature_maps_only():
    with pytest.raises(AekitError, match="gdn normalises the channels of feature maps"):
        aekit.build("ae", (1, 8, 8), body="mlp", activation="gdn")


# -------------------------------------------------------------------- the learned density
def trained_looking_density(seed=0):
    torch.manual_seed(seed)
    density = FactorizedDensity(3)
    with torch.no_grad():
        for p in density.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return density


def test_factorized_density_is_a_distribution_over_the_integers():
    density = trained_looking_density()
    x = torch.linspace(-300, 300, 2001, dtype=torch.float64).repeat(3, 1)
    cdf = torch.sigmoid(density.logits(x)).detach()
    assert bool((cdf.diff(dim=1) >= 0).all()) and float(cdf[:, 0].max()) < 1e-6
    offsets, bank = density.tables()
    k = torch.arange(-400, 401, dtype=torch.float64)
    mass = density.likelihood((k + offsets.unsqueeze(1)).float()).double().sum(1)
    torch.testing.assert_close(mass, torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)
    # The offsets are the medians, on their grid: the CDF crosses 1/2 within half a step.
    half = 2.0**-9
    below = torch.sigmoid(density.logits((offsets - half).unsqueeze(1)))
    above = torch.sigmoid(density.logits((offsets + half).unsqueeze(1)))
    assert bool((below <= 0.5).all()) and bool((above >= 0.5).all())
    torch.testing.assert_close(bank.pmf.sum(1), torch.ones(3, dtype=torch.float64))
    assert float(bank.pmf[bank.pmf > 0].min()) >= PROBABILITY_MIN * (1 - 1e-4)


def test_tables_follow_the_weights_and_survive_a_reload():
    density = trained_looking_density()
    first = density.tables()[1].pmf.clone()
    with torch.no_grad():
        density.biases[0].add_(0.3)
    assert not torch.equal(density.tables()[1].pmf, first)  # rebuilt: nothing to forget
    copy = FactorizedDensity(3)
    copy.load_state_dict(density.state_dict())
    assert torch.equal(copy.tables()[1].pmf, density.tables()[1].pmf)


def test_gaussian_tables_are_the_discretised_gaussian():
    scales = scale_table()
    assert math.isclose(float(scales[0]), SCALE_MIN) and math.isclose(float(scales[-1]), 256.0)
    bank = gaussian_bank(scales[[0, 20, 40]])
    for t, sigma in enumerate(scales[[0, 20, 40]].tolist()):
        row = bank.row(t)
        for k in range(int(bank.lo[t]), int(bank.lo[t]) + min(int(bank.sizes[t]), 7)):
            expected = 0.5 * (
                math.erfc(-(k + 0.5) / (sigma * 2**0.5)) - math.erfc(-(k - 0.5) / (sigma * 2**0.5))
            )
            got = float(row[k - int(bank.lo[t]) + 1])
            assert math.isclose(got, max(expected, PROBABILITY_MIN), rel_tol=1e-6, abs_tol=1e-12)
        assert math.isclose(float(row.sum()), 1.0, rel_tol=1e-12)


def test_escapes_code_any_distance_at_exp_golomb_cost():
    d = torch.tensor([0, 1, 2, 3, 6, 7, 2**40])
    assert escape_class(d).tolist() == [0, 1, 1, 2, 2, 3, 40]
    n = escape_class(d).double()
    pmf_bits = n + 1 + math.log2(1 - 2.0**-48)  # P(n) = 2^-(n+1) / (1 - 2^-48)
    torch.testing.assert_close(escape_bits(d), pmf_bits + n)


def test_symbols_round_trip_through_the_range_coder_with_escapes():
    bank = TableBank(
        torch.tensor([-2, 0]), torch.tensor([5, 1]),
        torch.tensor([[0.01, 0.1, 0.2, 0.4, 0.2, 0.08, 0.01], [0.1, 0.8, 0.1, 0, 0, 0, 0]]),
    )  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    symbols = torch.randint(-4, 5, (50, 7), generator=gen)
    symbols[3, 2], symbols[7, 0] = -(2**40), 2**33  # far outside
    tables = torch.randint(0, 2, (50, 7), generator=gen)
    encoder = coding.new_encoder()
    coding.encode_stage(encoder, symbols, tables, bank)
    payload = coding.finish(encoder)
    decoder = coding.new_decoder(payload)
    assert torch.equal(coding.decode_stage(decoder, tables, bank), symbols)
    ideal = float(bank.bits(symbols, tables).sum())  # the coder's 24-bit probabilities differ
    assert abs(8 * len(payload) - ideal) <= 0.01 * ideal + 64


# ------------------------------------------------------------------------------- the rates
@pytest.mark.parametrize("recipe", ["factorized-ae", "hyperprior-ae"])
def test_training_rate_is_minus_log2_of_the_noisy_likelihood(recipe):
    model = codec(recipe).train()
    h = model.features(images(4), None)
    torch.manual_seed(5)
    out = model.bottleneck(h)
    assert out.bits.shape == (4,) and bool((out.bits > 0).all())
    torch.manual_seed(5)
    noise = torch.rand_like(h) - 0.5  # the draw the bottleneck made first
    if recipe == "factorized-ae":
        y = (h + noise).view(4, -1, 6)
        lik = model.bottleneck.density.likelihood(y.permute(2, 0, 1).reshape(6, -1))
        torch.testing.assert_close(out.bits, -torch.log2(lik).reshape(6, 4, -1).sum((0, 2)))
    torch.testing.assert_close(out.z, (h + noise) if recipe == "factorized-ae" else out.z)


@pytest.mark.parametrize("recipe", ["factorized-ae", "hyperprior-ae"])
def test_evaluation_rounds_and_its_rate_is_the_files_ideal_length(recipe):
    model = codec(recipe)
    x = images()
    with torch.no_grad():
        out = model.bottleneck(model.features(x, None))
    file = compress(model, x)
    assert math.isclose(float(out.bits.double().sum()), file.ideal_bits, rel_tol=1e-6)
    payload_bits = 8 * file.header.payload_bytes
    assert abs(payload_bits - file.ideal_bits) <= 0.01 * file.ideal_bits + 64
    if recipe == "factorized-ae":
        offsets, _ = model.bottleneck.density.tables()
        q = (out.z.double().view(len(x), -1, 6) - offsets).round()
        torch.testing.assert_close(out.z.double().view(len(x), -1, 6), q + offsets)


# ---------------------------------------------------------------------------- exact decoding
@pytest.mark.parametrize("recipe", ["factorized-ae", "hyperprior-ae"])
def test_decompress_is_the_models_own_reconstruction_exactly(recipe):
    model = codec(recipe)
    x = images(11)
    file = compress(model, x, run_dir="../run")
    assert torch.equal(decompress(file.data, model), reconstruct(model, x))
    header = read_header(file.data)
    assert header.images == 11 and header.run_dir == "../run" and header.kind == "latents"
    one = compress(model, x[:1])
    assert one.header.overhead_bytes <= 40  # a one-image file is not mostly header
    assert torch.equal(decompress(one.data, model), reconstruct(model, x[:1]))


def test_the_hyper_synthesis_is_exact_whatever_the_batch():
    model = codec()
    b = model.bottleneck
    side = b.code(model.features(images(6), None))[0][0]
    together = b.conditionals(side)
    for i in range(6):  # one at a time: other kernels, other summation orders
        alone = b.conditionals(side[i : i + 1])
        assert torch.equal(alone[0], together[0][i : i + 1])
        assert torch.equal(alone[1], together[1][i : i + 1])
    z = torch.randn(2, 5, *b.side_grid, dtype=torch.float64)
    z = on_grid(z)
    exact = exact_forward(b.hyper_synthesis, z)
    assert torch.equal(on_grid(exact), exact)  # every output on the 2^-16 grid
    rounded = b.hyper_synthesis.double()
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(on_grid(p))
        torch.testing.assert_close(exact, rounded(z), atol=3 * FIXED_POINT, rtol=0)


def test_a_diverged_hyper_synthesis_is_refused_not_rounded():
    model = codec()
    with torch.no_grad():
        model.bottleneck.hyper_synthesis[0].bias.fill_(2.0**21)
    with pytest.raises(AekitError, match="exact fixed-point range"):
        compress(model, images(2))


THREADED = """
import sys, torch, aekit
torch.set_num_threads({threads})
model = aekit.load(sys.argv[1]).eval()
from aekit.compress.codec import decompress_latents
data = open(sys.argv[2], "rb").read()
latents = decompress_latents(data, model)
open(sys.argv[3], "wb").write(latents.numpy().tobytes())
"""


def test_a_file_encoded_with_one_thread_decodes_bit_exactly_with_two(tmp_path):
    x = torch.rand(60, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "x.npy", (x.numpy() * 255).astype(np.uint8))
    run = tmp_path / "run"
    args = ["train", "hyperprior-ae", "--data", tmp_path / "x.npy", "--out", run, "--epochs",
            "1", "--batch-size", "20", "--channels", "8,8", "--latent-channels", "6",
            "--hyper-channels", "5", "--no-report", "--no-progress"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    model = aekit.load(run).eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = compress(model, x[:30]).data
        here = decompress_latents(data, model)
    finally:
        torch.set_num_threads(previous)
    (tmp_path / "f.aek").write_bytes(data)
    for threads in (1, 2):
        script = tmp_path / f"decode{threads}.py"
        script.write_text(textwrap.dedent(THREADED.format(threads=threads)))
        out = tmp_path / f"latents{threads}.bin"
        subprocess.run(
            [sys.executable, str(script), str(run), str(tmp_path / "f.aek"), str(out)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        assert out.read_bytes() == here.numpy().tobytes()


# ------------------------------------------------------------------------------ bad files
@pytest.fixture(scope="module")
def small_file():
    model = codec()
    return model, compress(model, images(2)).data


def test_every_truncation_of_a_latent_file_is_an_error(small_file):
    model, data = small_file
    for length in range(len(data)):
        with pytest.raises(AekitError, match=r"truncated|bad magic") as e:
            decompress(data[:length], model)
        assert "\n" not in str(e.value)


def test_every_flipped_bit_of_a_latent_file_is_an_error(small_file):
    model, data = small_file
    for i in range(len(data)):
        for bit in (0, 3, 7):
            broken = bytearray(data)
            broken[i] ^= 1 << bit
            with pytest.raises(AekitError) as e:
                decompress(bytes(broken), model)
            assert "\n" not in str(e.value)


def test_another_models_file_is_refused(small_file):
    _, data = small_file
    with pytest.raises(AekitError, match="compressed with another model"):
        decompress(data, codec(seed=1))
    with pytest.raises(AekitError, match="compressed with another model"):
        decompress(data, codec("factorized-ae"))


def test_tables_that_come_out_differently_are_refused(small_file, monkeypatch):
    model, data = small_file
    monkeypatch.setattr(type(model.bottleneck), "identity", lambda self: "0" * 64)
    with pytest.raises(AekitError, match="probability tables rebuilt from these weights differ"):
        decompress(data, model)


def test_a_header_claiming_more_images_than_its_payload_holds_is_refused(small_file):
    from aekit.compress import container

    model, data = small_file
    header, payload = container.unpack(data)
    forged = container.pack(
        container.CompactHeader(**{**header.__dict__, "images": 10**12}), payload
    )
    with pytest.raises(AekitError, match="claims 1,000,000,000,000 images"):
        decompress(forged, model)


# ---------------------------------------------------------------------------- the objective
def test_rate_distortion_loss_is_lambda_mse_on_255_plus_bits_per_pixel():
    model = codec("factorized-ae", rate_lambda=0.02)
    x = images(5)
    with torch.no_grad():
        out = model(x)
        x_hat = model.reconstruct(x)
    bits = model.bottleneck(model.features(x, None)).bits
    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    expected = (0.02 * 255**2 * mse + bits / (16 * 16)).mean()
    torch.testing.assert_close(out.loss, expected.to(out.loss), rtol=1e-5, atol=1e-6)
    assert math.isclose(float(out.terms["bpp"]), float(bits.mean()) / 256, rel_tol=1e-5)


def test_rate_distortion_needs_an_entropy_coded_bottleneck():
    with pytest.raises(AekitError, match="objective 'rd' needs an entropy-coded bottleneck"):
        aekit.build("ae", SHAPE, objective="rd")
    with pytest.raises(AekitError, match="rate_lambda must be positive"):
        codec("factorized-ae", rate_lambda=0.0)


def test_entropy_coded_latents_lie_on_the_grid_body():
    model = codec("factorized-ae")
    assert model.config.body.kind == "grid" and model.latent_dim == 4 * 4 * 6
    ae = aekit.build("ae", SHAPE, bottleneck="hyperprior", objective="rd", channels=(8, 8),
                     latent_channels=6, hyper_channels=5)  # fmt: skip
    assert ae.config.body.kind == "grid" and ae.latent_dim == 4 * 4 * 6


# -------------------------------------------------------------------------- command line
def test_train_ae_with_a_hyperprior_then_compress_and_decompress(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = (rng.random((48, 16, 16)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    args = ["train", "ae", "--bottleneck", "hyperprior", "--objective", "rd", "--data",
            tmp_path / "x.npy", "--out", run, "--epochs", "1", "--batch-size", "16",
            "--channels", "8,8", "--latent-channels", "6", "--hyper-channels", "5",
            "--rate-lambda", "0.01", "--no-report", "--no-progress"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    out = tmp_path / "f.aek"
    capsys.readouterr()
    assert main(["compress", str(run), str(tmp_path / "x.npy"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    bpp = len(out.read_bytes()) * 8 / (48 * 16 * 16)
    assert f"{bpp:.4f} bits per pixel" in printed and "estimated" in printed
    assert main(["decompress", str(out), "-o", str(tmp_path / "dec")]) == 0
    decoded = np.load(tmp_path / "dec" / "images.npy")
    model = aekit.load(run)
    expected = reconstruct(model, torch.from_numpy(x.astype(np.float32)[:, None] / 255))
    assert np.array_equal(decoded, expected.numpy())
    assert len(encode_latents(model, expected)) == 2
    (tmp_path / "cut.aek").write_bytes(out.read_bytes()[:30])
    assert main(["decompress", str(tmp_path / "cut.aek"), "-o", str(tmp_path / "d2")]) == 1
    assert "cut.aek: the file is truncated" in capsys.readouterr().err
