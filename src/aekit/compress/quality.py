"""Image quality and rate-distortion summaries for comparing codecs: per-image PSNR, SSIM and
MS-SSIM, and Bjøntegaard deltas (BD-rate, BD-PSNR) between two rate-distortion curves.

MS-SSIM follows Wang, Simoncelli & Bovik (2003) and their reference msssim.m, whose 11x11
window does not fit five scales of small images: the number of scales used is part of the
number and is stated next to it (see `ms_ssim`). BD-rate is the single figure standards work
reports for "how many bits does b save over a at equal quality"; it depends on the
interpolation (`method`) and the PSNR interval, so both are arguments.
"""

from __future__ import annotations

import math

import numpy as np

from aekit.errors import AekitError

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Wang et al.'s exponents of the five scales, finest first."""

WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
"""The Gaussian window's side and standard deviation, and the stabilising constants' factors
(C1 = (K1·L)², C2 = (K2·L)² with data range L = 1)."""


# ---------------------------------------------------------------------------- PSNR
def psnr_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each image's PSNR in dB, 10·log10(1 / MSE) for images in [0, 1] (peak 1), its MSE over
    all its pixels and channels; infinite for an image reproduced exactly. The mean of these is
    `aekit.compress.baselines.psnr`."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 2 or len(x) == 0:
        raise AekitError(f"psnr needs two image batches of one shape; got {x.shape} and {y.shape}")
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1 / mse)


# ---------------------------------------------------------------------------- SSIM
def _planes(a, b):
    """Two batches (N, H, W) or (N, C, H, W) in [0, 1] as float64 tensors (N, C, H, W)."""
    import torch

    def tensor(x):
        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float64)
        return torch.from_numpy(np.array(x, dtype=np.float64))

    x, y = tensor(a), tensor(b)
    if x.shape != y.shape or x.ndim not in (3, 4) or x.shape[0] == 0:
        raise AekitError(
            "ssim needs two image batches (N, H, W) or (N, C, H, W) of one shape; "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    for z in (x, y):
        if not bool(torch.isfinite(z).all()) or float(z.min()) < 0 or float(z.max()) > 1:
            raise AekitError("ssim takes images in [0, 1] (data range 1); clip them first")
    return (x[:, None], y[:, None]) if x.ndim == 3 else (x, y)


def _fitting_scales(h: int, w: int) -> int:
    """How many scales fit: each halving (rounded up) must leave at least WINDOW px a side."""
    scales = 0
    while min(h, w) >= WINDOW and scales < len(WEIGHTS):
        scales += 1
        h, w = -(-h // 2), -(-w // 2)
    return scales


def _window(side: int):
    """The 'valid' 1-D Gaussian filtering of a side of `side` px as a (side - 10, side) matrix:
    the images are filtered by matrix products, which BLAS does far faster than a float64
    conv2d on a CPU for the small images this is for."""
    import torch

    g = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    g = torch.exp(-(g**2) / (2 * SIGMA**2))
    g = g / g.sum()
    rows = side - WINDOW + 1
    band = torch.zeros(rows, side, dtype=torch.float64)
    for i in range(rows):
        band[i, i : i + WINDOW] = g
    return band


def _ssim_terms(x, y):
    """Per plane (N, C) the means over the 'valid' SSIM map of l·cs (SSIM) and of cs alone."""
    left, right = _window(x.shape[-2]), _window(x.shape[-1]).T
    mx, my, xx, yy, xy = (left @ z @ right for z in (x, y, x * x, y * y, x * y))
    c1, c2 = K1**2, K2**2
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    cs = (2 * cov + c2) / (vx + vy + c2)
    luminance = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return (luminance * cs).mean((-2, -1)), cs.mean((-2, -1))


def _halve(z):
    """Wang's 2x2 average then keep every other pixel; an odd last row or column is averaged
    with itself (msssim.m's 'symmetric' filter), so a side of s becomes ceil(s / 2)."""
    import torch.nn.functional as F

    h, w = z.shape[-2:]
    if h % 2 or w % 2:
        z = F.pad(z, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(z, 2)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each image's SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) of images in [0, 1], (N, H, W)
    or (N, C, H, W): the mean of the SSIM map over the 'valid' positions of an 11x11 Gaussian
    window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, computed per channel and averaged
    over channels; shape (N,). Not clamped: it can be negative. Images need at least 11 px a
    side."""
    import torch

    x, y = _planes(a, b)
    if min(x.shape[-2:]) < WINDOW:
        raise AekitError(
            f"ssim needs images of at least {WINDOW}x{WINDOW} px; got {tuple(x.shape)}"
        )
    with torch.no_grad():
        return _ssim_terms(x, y)[0].mean(1).numpy()


def ms_ssim(a: np.ndarray, b: np.ndarray, *, scales: int | None = None) -> np.ndarray:
    """Each image's multi-scale SSIM (Wang, Simoncelli & Bovik 2003) of images in [0, 1],
    (N, H, W) or (N, C, H, W); shape (N,), 1 for identical images.

    At scale j = 1..M the images are filtered with an 11x11 Gaussian window (sigma 1.5, 'valid'
    positions only; K1 = 0.01, K2 = 0.03, data range 1), and between scales halved by 2x2
    averaging (an odd side rounded up, as msssim.m does). MS-SSIM = SSIM_M^w_M · prod_{j<M}
    cs_j^w_j, each term the mean of its map over the valid positions, with Wang's weights
    (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), finest first. A colour image's value is the mean
    of its channels' values.

    Convention to state next to any number: five scales need 161 px a side. `scales=None`
    uses as many as fit, the coarsest at least 11 px (28x28 Fashion-MNIST: 2 scales, 28 and
    14 px; 32x32: 2; 64x64: 3; 161x161 and up: 5), with the first `scales` weights renormalised
    to sum to 1 (all five are used as published, summing to 1.0001, so that full-size numbers
    match the reference implementations'); a given `scales` (1..5) that does not fit is
    refused. `scales=1` is SSIM clamped at 0.
    A negative cs or SSIM term (anti-correlated structure) is clamped to 0 before the power,
    so it gives MS-SSIM 0 rather than NaN.
    """
    import torch

    x, y = _planes(a, b)
    fits = _fitting_scales(*x.shape[-2:])
    if fits == 0:
        raise AekitError(
            f"ms_ssim needs images of at least {WINDOW}x{WINDOW} px; got {tuple(x.shape)}"
        )
    if scales is None:
        scales = fits
    elif isinstance(scales, bool) or not isinstance(scales, (int, np.integer)) or scales < 1:
        raise AekitError(f"ms_ssim scales must be an integer 1..{len(WEIGHTS)} (got {scales!r})")
    elif scales > fits:
        raise AekitError(
            f"ms_ssim of {x.shape[-2]}x{x.shape[-1]} images fits at most {fits} scale(s) with "
            f"an {WINDOW}-px window (coarsest side at least {WINDOW}); got scales={scales}"
        )
    weights = np.asarray(WEIGHTS[:scales])
    if scales < len(WEIGHTS):
        weights = weights / math.fsum(weights)
    with torch.no_grad():
        value = torch.ones(x.shape[:2], dtype=torch.float64)
        for j, weight in enumerate(weights):
            both, cs = _ssim_terms(x, y)
            term = both if j == scales - 1 else cs
            value = value * term.clamp(min=0) ** float(weight)
            if j < scales - 1:
                x, y = _halve(x), _halve(y)
    return value.mean(1).numpy()


# ---------------------------------------------------------------------------- Bjøntegaard
METHODS = ("pchip", "cubic")
"""`pchip`: piecewise cubic Hermite interpolation through the points (scipy's
PchipInterpolator), the variant of recent standards work; `cubic`: the least-squares
3rd-order polynomial of the original VCEG-M33 (Bjøntegaard 2001)."""


def _curve(rate, quality, name: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """One curve's points as float64 (rate, quality), sorted by quality, after checking."""
    r, q = np.asarray(rate, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    if r.ndim != 1 or r.shape != q.shape:
        raise AekitError(
            f"curve {name}: rates and qualities must be 1-D of one length; got {r.shape}, {q.shape}"
        )
    need = 4 if method == "cubic" else 2
    if len(r) < need:
        raise AekitError(f"curve {name} has {len(r)} point(s); {method} needs at least {need}")
    if not (np.isfinite(r).all() and np.isfinite(q).all()):
        raise AekitError(f"curve {name} has a non-finite rate or quality")
    if (r <= 0).any():
        raise AekitError(f"curve {name} has a rate <= 0; rates are compared in log scale")
    order = np.argsort(q, kind="stable")
    return r[order], q[order]


def _delta(x_a, y_a, x_b, y_b, lo, hi, method: str, what: str) -> float:
    """The mean over the overlap of x (intersected with [lo, hi]) of y_b(x) - y_a(x), each y
    interpolated as a function of x by `method`; each curve's x sorted."""
    if method not in METHODS:
        raise AekitError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    for x, name in ((x_a, "a"), (x_b, "b")):
        if method == "pchip" and (np.diff(x) <= 0).any():
            raise AekitError(
                f"curve {name} repeats a {what}; pchip needs distinct ones (drop the duplicates)"
            )
    start, end = max(x_a[0], x_b[0]), min(x_a[-1], x_b[-1])
    if lo is not None:
        start = max(start, lo)
    if hi is not None:
        end = min(end, hi)
    if not end > start:
        raise AekitError(f"the two curves' {what} ranges (within lo, hi) do not overlap")

    def integral(x, y) -> float:
        if method == "cubic":
            antiderivative = np.polyint(np.polyfit(x, y, 3))
            return float(np.polyval(antiderivative, end) - np.polyval(antiderivative, start))
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(x, y).integrate(start, end))

    return (integral(x_b, y_b) - integral(x_a, y_a)) / (end - start)


def bd_rate(
    rate_a,
    psnr_a,
    rate_b,
    psnr_b,
    *,
    lo: float | None = None,
    hi: float | None = None,
    method: str = "pchip",
) -> float:
    """Bjøntegaard delta rate of curve b against anchor a, in percent: how much more rate b
    needs than a for the same PSNR, averaged over PSNR (negative: b needs fewer bits).

    log(rate) is interpolated as a function of PSNR for each curve (see METHODS), both are
    integrated over the overlap of the curves' PSNR ranges, intersected with [lo, hi] dB when
    given, and the result is (exp(mean of log(rate_b) - log(rate_a)) - 1)·100. Rates in any
    positive unit, the same for both (bits per pixel, bytes). pchip needs 2 points a curve and
    distinct PSNRs; cubic needs 4. Outside the overlap nothing is extrapolated."""
    r_a, q_a = _curve(rate_a, psnr_a, "a", method)
    r_b, q_b = _curve(rate_b, psnr_b, "b", method)
    mean = _delta(q_a, np.log(r_a), q_b, np.log(r_b), lo, hi, method, "PSNR")
    return (math.exp(mean) - 1) * 100


def bd_psnr(
    rate_a,
    psnr_a,
    rate_b,
    psnr_b,
    *,
    lo: float | None = None,
    hi: float | None = None,
    method: str = "pchip",
) -> float:
    """Bjøntegaard delta PSNR of curve b against anchor a, in dB: how much higher b's PSNR is
    than a's at the same rate, averaged over log(rate) (positive: b is better).

    PSNR is interpolated as a function of log(rate) by `method` (see METHODS) and integrated
    over the overlap of the curves' log-rate ranges, intersected with [log(lo), log(hi)] when
    rates `lo`, `hi` are given. pchip needs distinct rates a curve; cubic needs 4 points."""
    r_a, q_a = _curve(rate_a, psnr_a, "a", method)
    r_b, q_b = _curve(rate_b, psnr_b, "b", method)
    order_a, order_b = np.argsort(r_a, kind="stable"), np.argsort(r_b, kind="stable")
    for bound, name in ((lo, "lo"), (hi, "hi")):
        if bound is not None and not bound > 0:
            raise AekitError(f"bd_psnr's {name} is a rate and must be > 0 (got {bound})")
    return _delta(
        np.log(r_a[order_a]),
        q_a[order_a],
        np.log(r_b[order_b]),
        q_b[order_b],
        None if lo is None else math.log(lo),
        None if hi is None else math.log(hi),
        method,
        "rate",
    )
