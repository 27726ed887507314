"""Image quality and rate-distortion helpers checked against their mathematics: SSIM against
a window-by-window computation and the closed form for constant images, MS-SSIM's scales and
clamping, Bjøntegaard deltas on curves whose answer is known exactly, and the one-file mosaic
baselines (exact tiling, lossless codecs lossless, the amortised header)."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from aekit.compress.baselines import (
    classical_sizes,
    grid_shape,
    mosaic,
    mosaic_sizes,
    psnr,
    unmosaic,
)
from aekit.compress.quality import WEIGHTS, bd_psnr, bd_rate, ms_ssim, psnr_per_image, ssim
from aekit.errors import AekitError

C1, C2 = 0.01**2, 0.03**2


def one_line_error(call, *args, match=None, **kwargs):
    with pytest.raises(AekitError, match=match) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)


def smooth(rng, shape, sigma=1.5):
    """Random smooth images in [0, 1] (blurred noise stretched per image), like small photos."""
    x = gaussian_filter(rng.random(shape), sigma=(0,) * (len(shape) - 2) + (sigma, sigma))
    flat = x.reshape(len(x), -1)
    low, high = flat.min(1), flat.max(1)
    return ((flat - low[:, None]) / (high - low)[:, None]).reshape(shape)


def fashion_like(rng, n=100):
    """Smooth uint8 28x28 objects on a black background, as Fashion-MNIST's are."""
    x = smooth(rng, (n, 28, 28), sigma=2.0)
    yy, xx = np.mgrid[:28, :28]
    radius = rng.uniform(7, 12, size=(n, 1, 1))
    mask = (yy - 13.5) ** 2 + ((xx - 13.5) * rng.uniform(0.7, 1.3, size=(n, 1, 1))) ** 2
    return np.rint(255 * x * (mask < radius**2)).astype(np.uint8)


# ---------------------------------------------------------------------------- SSIM
def gaussian_window():
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    return np.outer(g, g)


def direct_terms(x, y):
    """Mean SSIM and mean cs over the 'valid' windows of two 2-D images, window by window."""
    w = gaussian_window()
    ssims, css = [], []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            p, q = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (w * p).sum(), (w * q).sum()
            vx, vy = (w * p * p).sum() - mx**2, (w * q * q).sum() - my**2
            cov = (w * p * q).sum() - mx * my
            cs = (2 * cov + C2) / (vx + vy + C2)
            css.append(cs)
            ssims.append((2 * mx * my + C1) / (mx**2 + my**2 + C1) * cs)
    return np.mean(ssims), np.mean(css)


def direct_halve(x):
    """2x2 means, an odd last row or column repeated (msssim.m's symmetric border)."""
    if x.shape[0] % 2:
        x = np.vstack([x, x[-1:]])
    if x.shape[1] % 2:
        x = np.hstack([x, x[:, -1:]])
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4


def test_ssim_agrees_with_a_window_by_window_computation():
    rng = np.random.default_rng(0)
    a = smooth(rng, (2, 13, 12))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    expected = [direct_terms(x, y)[0] for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(ssim(a, b), expected, rtol=0, atol=1e-12)


def test_two_scale_ms_ssim_agrees_with_a_direct_computation():
    rng = np.random.default_rng(1)
    a = smooth(rng, (1, 23, 22))  # halves to 12x11: two scales fit, odd sides on the way
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    _, cs1 = direct_terms(a[0], b[0])
    ssim2, _ = direct_terms(direct_halve(a[0]), direct_halve(b[0]))
    w1, w2 = np.asarray(WEIGHTS[:2]) / sum(WEIGHTS[:2])
    np.testing.assert_allclose(ms_ssim(a, b), [cs1**w1 * ssim2**w2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ms_ssim(a, b, scales=2), ms_ssim(a, b), rtol=0, atol=0)


def test_constant_images_have_the_closed_form_luminance_term():
    means = [(0.2, 0.7), (0.5, 0.5), (0.0, 1.0), (0.9, 0.3)]
    a = np.stack([np.full((28, 28), m1) for m1, _ in means])
    b = np.stack([np.full((28, 28), m2) for _, m2 in means])
    luminance = np.array([(2 * m1 * m2 + C1) / (m1**2 + m2**2 + C1) for m1, m2 in means])
    np.testing.assert_allclose(ssim(a, b), luminance, rtol=1e-12)
    np.testing.assert_allclose(ms_ssim(a, b, scales=1), luminance, rtol=1e-12)
    # Variances are 0 at every scale, so every cs is 1 and only the coarsest luminance counts.
    w2 = WEIGHTS[1] / (WEIGHTS[0] + WEIGHTS[1])
    np.testing.assert_allclose(ms_ssim(a, b), luminance**w2, rtol=1e-12)


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(2)
    for a in (smooth(rng, (6, 28, 28)), smooth(rng, (3, 3, 32, 32)), smooth(rng, (2, 1, 64, 48))):
        np.testing.assert_allclose(ms_ssim(a, a), 1, rtol=0, atol=1e-12)
        previous = np.ones(len(a))
        for sigma in (0.02, 0.05, 0.1, 0.2):
            b = np.clip(a + sigma * rng.standard_normal(a.shape), 0, 1)
            value = ms_ssim(a, b)
            assert value.shape == (len(a),)
            assert ((value > 0) & (value < 1)).all()
            assert (value < previous).all()
            np.testing.assert_allclose(ms_ssim(b, a), value, rtol=0, atol=1e-12)
            previous = value


def test_colour_ms_ssim_is_the_mean_of_its_channels():
    rng = np.random.default_rng(3)
    a = smooth(rng, (2, 3, 40, 40))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    per_channel = np.stack([ms_ssim(a[:, c], b[:, c]) for c in range(3)], 1)
    np.testing.assert_allclose(ms_ssim(a, b), per_channel.mean(1), rtol=1e-12)


def test_negative_structure_is_clamped_to_zero_not_nan():
    rng = np.random.default_rng(4)
    a = smooth(rng, (3, 28, 28))
    assert (ssim(a, 1 - a) < 0).all()
    np.testing.assert_array_equal(ms_ssim(a, 1 - a), 0)


def test_ms_ssim_refuses_what_it_cannot_measure():
    a = np.zeros((2, 28, 28))
    one_line_error(ms_ssim, a, a, scales=3, match="at most 2 scale")
    one_line_error(ms_ssim, a, a, scales=0)
    one_line_error(ms_ssim, a[:, :10], a[:, :10], match="11x11")
    one_line_error(ssim, a[:, :10], a[:, :10], match="11x11")
    one_line_error(ms_ssim, a, a[:1])
    one_line_error(ms_ssim, a, a + 2, match=r"\[0, 1\]")
    one_line_error(ms_ssim, a, np.full_like(a, np.nan))


def test_psnr_per_image_averages_to_psnr():
    rng = np.random.default_rng(5)
    a = rng.random((4, 1, 8, 8))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    per = psnr_per_image(a, b)
    mse = ((a - b) ** 2).reshape(4, -1).mean(1)
    np.testing.assert_allclose(per, 10 * np.log10(1 / mse))
    assert per.mean() == pytest.approx(psnr(a, b), rel=1e-12)
    assert psnr_per_image(a, a)[0] == math.inf
    one_line_error(psnr_per_image, a, b[:2])


# ---------------------------------------------------------------------------- Bjøntegaard
RATE = np.array([0.12, 0.25, 0.5, 0.9, 1.7])
PSNR = np.array([21.0, 24.5, 27.0, 30.5, 33.0])


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_and_bd_psnr_of_known_shifts(method):
    assert bd_rate(RATE, PSNR, RATE, PSNR, method=method) == pytest.approx(0, abs=1e-9)
    assert bd_psnr(RATE, PSNR, RATE, PSNR, method=method) == pytest.approx(0, abs=1e-9)
    assert bd_rate(RATE, PSNR, RATE * 0.7, PSNR, method=method) == pytest.approx(-30, abs=1e-9)
    assert bd_rate(RATE * 0.7, PSNR, RATE, PSNR, method=method) == pytest.approx(
        100 / 0.7 - 100, abs=1e-9
    )
    assert bd_psnr(RATE, PSNR, RATE, PSNR + 1, method=method) == pytest.approx(1, abs=1e-9)
    # Order of the points does not matter.
    shuffled = [3, 0, 4, 2, 1]
    assert bd_rate(RATE, PSNR, RATE[shuffled] * 0.7, PSNR[shuffled], method=method) == (
        pytest.approx(-30, abs=1e-9)
    )


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_averages_over_the_overlap_and_the_given_interval(method):
    # log-rates linear in PSNR, which both interpolations reproduce exactly: the log-ratio is
    # 0.05·(p - 20), so its mean over [lo, hi] is 0.05·((lo + hi) / 2 - 20).
    p_a, p_b = np.linspace(20, 34, 6), np.linspace(22, 38, 5)
    r_a, r_b = 0.1 * np.exp(0.20 * (p_a - 20)), 0.1 * np.exp(0.25 * (p_b - 20))

    def expected(lo, hi):
        return (math.exp(0.05 * ((lo + hi) / 2 - 20)) - 1) * 100

    assert bd_rate(r_a, p_a, r_b, p_b, method=method) == pytest.approx(expected(22, 34), abs=1e-9)
    got = bd_rate(r_a, p_a, r_b, p_b, lo=25, hi=30, method=method)
    assert got == pytest.approx(expected(25, 30), abs=1e-9)
    got = bd_rate(r_a, p_a, r_b, p_b, lo=0, hi=99, method=method)
    assert got == pytest.approx(expected(22, 34), abs=1e-9)


def test_bd_refuses_curves_it_cannot_compare():
    one_line_error(bd_rate, RATE[:2], PSNR[:2], RATE, PSNR + 20, match="overlap")
    one_line_error(bd_rate, RATE, PSNR, RATE, PSNR, lo=30, hi=25, match="overlap")
    one_line_error(bd_psnr, RATE, PSNR, RATE * 100, PSNR, match="overlap")
    one_line_error(bd_rate, RATE[:3], PSNR[:3], RATE, PSNR, method="cubic", match="at least 4")
    assert bd_rate(RATE[:2], PSNR[:2], RATE[:2], PSNR[:2]) == pytest.approx(0, abs=1e-12)
    one_line_error(bd_rate, RATE[:1], PSNR[:1], RATE, PSNR, match="at least 2")
    one_line_error(bd_rate, RATE - 0.12, PSNR, RATE, PSNR, match="rate <= 0")
    one_line_error(bd_rate, RATE, [21, 24, 24, 30, 33], RATE, PSNR, match="distinct")
    one_line_error(bd_psnr, [0.1, 0.2, 0.2, 0.5, 1], PSNR, RATE, PSNR, match="distinct")
    one_line_error(bd_rate, RATE, PSNR[:4], RATE, PSNR)
    one_line_error(bd_rate, RATE, PSNR, RATE, PSNR, method="linear", match="method")
    one_line_error(bd_rate, RATE, [21, 24, np.nan, 30, 33], RATE, PSNR, match="non-finite")


# ---------------------------------------------------------------------------- mosaics
def test_mosaic_tiles_row_by_row_and_unmosaic_inverts_it():
    assert [grid_shape(n) for n in (1, 2, 3, 4, 5, 7, 10, 100)] == [
        (1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3), (3, 4), (10, 10)
    ]  # fmt: skip
    rng = np.random.default_rng(6)
    for shape in ((7, 5, 6), (7, 1, 5, 6), (7, 3, 5, 6), (1, 4, 4)):
        x = rng.integers(1, 256, size=shape, dtype=np.uint8)
        m = mosaic(x)
        rows, columns = grid_shape(len(x))
        h, w = shape[-2:]
        assert m.shape == (*shape[1:-2], rows * h, columns * w)
        for i, image in enumerate(x):
            r, c = divmod(i, columns)
            np.testing.assert_array_equal(m[..., r * h : (r + 1) * h, c * w : (c + 1) * w], image)
        assert (m == 0).sum() == (rows * columns - len(x)) * math.prod(shape[1:])
        np.testing.assert_array_equal(unmosaic(m, len(x), shape[1:]), x)
    one_line_error(unmosaic, mosaic(x), 2, (4, 5))
    one_line_error(unmosaic, np.zeros((15, 18), np.uint8), 7, (5,))


def test_lossless_mosaics_are_lossless_and_lossy_ones_keep_the_shape():
    rng = np.random.default_rng(7)
    grey = fashion_like(rng, 10)
    rgb = np.rint(255 * smooth(rng, (5, 3, 20, 20))).astype(np.uint8)
    for x in (grey, grey[:, None], rgb):
        pixels = len(x) * x.shape[-2] * x.shape[-1]
        for codec in ("png", "webp-lossless"):
            result = mosaic_sizes(x, codec)
            np.testing.assert_array_equal(result.decoded, x)
            assert result.sizes.shape == (1,) and result.grid == grid_shape(len(x))
            assert result.bits_per_pixel == 8 * result.total_bytes / pixels
        for codec, quality in (("jpeg", 50), ("webp", 50)):
            for result in (classical_sizes(x, codec, quality), mosaic_sizes(x, codec, quality)):
                assert result.decoded.shape == x.shape and result.decoded.dtype == np.uint8
                value = psnr(result.decoded / 255, x / 255)
                assert 15 < value < math.inf


def test_one_mosaic_file_is_smaller_than_a_file_per_image():
    x = fashion_like(np.random.default_rng(8), 100)
    for quality in (10, 50):
        each = classical_sizes(x, "jpeg", quality)
        one = mosaic_sizes(x, "jpeg", quality)
        assert each.sizes.shape == (100,) and one.sizes.shape == (1,)
        assert one.total_bytes < each.total_bytes
        assert one.bits_per_pixel == 8 * one.total_bytes / (100 * 28 * 28)
        assert one.bits_per_pixel < each.bits_per_pixel


def test_classical_codecs_refuse_bad_input_in_one_line():
    x = np.zeros((4, 8, 8), np.uint8)
    one_line_error(classical_sizes, x, "jpeg", match="quality")
    one_line_error(mosaic_sizes, x, "jpeg", 96, match="1..95")
    one_line_error(mosaic_sizes, x, "jpeg", 0, match="1..95")
    one_line_error(mosaic_sizes, x, "webp", 101, match="0..100")
    one_line_error(mosaic_sizes, x, "png", 50, match="quality")
    one_line_error(mosaic_sizes, x, "jpeg", 50.5, match="integer")
    one_line_error(mosaic_sizes, x, "gif", match="codec")
    one_line_error(mosaic_sizes, x.astype(np.float32), "png", match="uint8")
    one_line_error(mosaic, x[:0])
    one_line_error(mosaic_sizes, np.zeros((2, 2, 8, 8), np.uint8), "png", match="channels")
    wide = np.zeros((4, 1, 8200), np.uint8)  # a 2x2 grid 16400 px wide
    for codec, quality in (("webp", 50), ("webp-lossless", None)):
        one_line_error(mosaic_sizes, wide, codec, quality, match="16383")
