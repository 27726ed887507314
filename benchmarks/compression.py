"""Rate-distortion on Fashion-MNIST: learned codecs (factorized prior, mean-scale hyperprior,
discrete codes) against JPEG, WebP and PNG, every rate the size of a real file.

Protocol. Every learned model trains on the official 60,000 training images (no validation
split) for the same number of epochs, batch 64, Adam (the codecs' recipe: lr 1e-3, gradient
clipping at 1; the discrete codes: lr 1e-3); it is then measured on the 10,000 test images:
one `.aek` file holds all of them, its size in bits over 10,000 x 784 pixels is the rate
(header and checksums included), and the decoded file gives the distortion. The estimated
rate (the model's own code length, header excluded) is printed beside it.

- factorized-ae / hyperprior-ae at their recipe defaults: GDN transforms, two stride-2
  stages of 64 channels, a 7x7 latent grid of 16 (factorized) or 64 channels (hyperprior,
  with 64 side channels on 2x2), one model per --rate-lambda (loss = lambda x MSE on 0-255 +
  bpp);
- discrete codes (the quantizers benchmark's networks, channels 32, 64): VQ K=1024, FSQ
  8,5,5,5 and residual VQ 4x256 with quantizer dropout truncated to 1..4 stages, each coded
  under its fitted per-position index prior;
- classical codecs on the same uint8 test images: JPEG and WebP at a sweep of qualities and
  PNG (lossless), both as one file per image (each paying its container) and as ONE mosaic
  file of all 10,000 images (100 x 100 tiles), the fair comparison for a batch codec whose
  header is amortised over the batch.

Distortion: PSNR as the mean over images of 10 log10(1 / MSE_image) (images in [0, 1]; also
the pooled 10 log10(1 / mean MSE), which is 0.2-0.5 dB lower here), and MS-SSIM with the two
scales a 28x28 image holds (`aekit.compress.quality.ms_ssim`). BD-rate (piecewise cubic,
`bd_rate`) of each curve against JPEG-mosaic over 18-28 dB of per-image PSNR.

    python benchmarks/compression.py --data-root ../shared/data --epochs 6
    python benchmarks/compression.py --tables-only      # the tables and figure again

Resumable: trained runs and measured rows in --runs are reused. Writes
benchmarks/results/compression.json and compression.png and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit.data import DataConfig, load_data
from aekit.train import TrainConfig, Trainer

LAMBDAS = (0.00025, 0.0015, 0.01)
DISCRETE: dict[str, tuple[str, dict]] = {
    "VQ K=1024": ("vqvae", {"codebook_size": 1024, "channels": (32, 64)}),
    "FSQ 8,5,5,5": ("fsq", {"levels": (8, 5, 5, 5), "channels": (32, 64)}),
    "RVQ 4x256 dropout": (
        "rqvae",
        {"codebook_size": 256, "stages": 4, "quantizer_dropout": 0.5, "channels": (32, 64)},
    ),
}
JPEG_QUALITIES = (1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
BD_RANGE = (18.0, 28.0)


def models(args) -> dict[str, tuple[str, dict]]:
    out = {}
    for lam in args.lambdas:
        out[f"factorized λ={lam:g}"] = ("factorized-ae", {"rate_lambda": lam})
        out[f"hyperprior λ={lam:g}"] = ("hyperprior-ae", {"rate_lambda": lam})
    return {**out, **DISCRETE}


def run_dir(args, name: str) -> Path:
    safe = name.replace(" ", "_").replace(",", "-").replace("=", "").replace("λ", "lambda")
    return Path(args.runs) / safe


def train(name: str, recipe: str, options: dict, splits, args) -> None:
    out = run_dir(args, name)
    if (out / "bench_train.json").is_file():
        return
    torch.manual_seed(0)
    model = aekit.build(recipe, splits.train.shape, **options)
    config = TrainConfig(
        epochs=args.epochs, batch_size=64, seed=0, progress=False, out=str(out),
        **({} if recipe.endswith("-ae") else {"lr": 1e-3}),
    )  # fmt: skip
    start = time.perf_counter()
    Trainer(model, splits.train, None, config).fit()
    seconds = time.perf_counter() - start
    record = {"seconds": seconds, "threads": torch.get_num_threads()}
    (out / "bench_train.json").write_text(json.dumps(record))
    print(json.dumps({"trained": name, **record}), flush=True)


def family(name: str, recipe: str) -> str:
    """The curve a model belongs to: one per codec recipe, residual VQ's stage prefixes one
    curve, any other discrete code its own point."""
    return {"factorized-ae": "factorized", "hyperprior-ae": "hyperprior"}.get(
        recipe, "RVQ 1..4 stages" if recipe == "rqvae" else name
    )


def distortion(decoded: np.ndarray, x: np.ndarray) -> dict:
    from aekit.compress.quality import ms_ssim

    mse = ((decoded.astype(np.float64) - x) ** 2).reshape(len(x), -1).mean(1)
    with np.errstate(divide="ignore"):
        per_image = 10 * np.log10(1 / mse)
    return {
        "psnr": float(np.mean(np.minimum(per_image, 100.0))),
        "psnr_pooled": float(min(10 * np.log10(1 / max(mse.mean(), 1e-20)), 100.0)),
        "ms_ssim": float(np.mean(ms_ssim(np.clip(decoded, 0, 1), x))),
        "mse": float(mse.mean()),
    }


def measure(name: str, recipe: str, splits, args, stages: int | None = None) -> dict:
    from aekit.compress import compress, decompress
    from aekit.compress.codec import reconstruct

    out = run_dir(args, name)
    cache = out / f"bench_measure{'' if stages is None else f'-{stages}'}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    model = aekit.load(out).eval()
    if not model.bottleneck.has_rate and model.latent_density is None:
        from aekit.compress import fit_index_prior  # what `aekit train` fits at the end

        model.latent_density = fit_index_prior(model, splits.train)
    x = splits.test.x
    start = time.perf_counter()
    file = compress(model, x, stages=stages)
    encode_s = time.perf_counter() - start
    path = Path(args.runs) / "files" / f"{out.name}{'' if stages is None else f'-{stages}'}.aek"
    path.parent.mkdir(parents=True, exist_ok=True)
    file.save(path)
    start = time.perf_counter()
    decoded = decompress(path.read_bytes(), model)
    decode_s = time.perf_counter() - start
    row = {
        "model": name,
        "recipe": recipe,
        "family": family(name, recipe),
        "bpp": 8 * path.stat().st_size / (len(x) * 28 * 28),
        "estimated_bpp": file.ideal_bits_per_pixel,
        "file_bytes": path.stat().st_size,
        "header_bytes": file.header.overhead_bytes,
        "encode_s": encode_s,
        "decode_s": decode_s,
        **distortion(decoded.numpy(), x.numpy()),
    }
    if stages is not None:
        row["stages"] = stages
    if model.bottleneck.has_rate:
        row["lambda"] = model.config.objective.options.rate_lambda
        expected = reconstruct(model, x)
        row["decoded_equals_reconstruction"] = bool(torch.equal(decoded, expected))
        single = [compress(model, x[i : i + 1]) for i in range(100)]
        row["single_image_header_bytes"] = single[0].header.overhead_bytes
        row["single_image_mean_bytes"] = float(np.mean([len(f) for f in single]))
    cache.write_text(json.dumps(row))
    print(json.dumps(row), flush=True)
    return row


def classical(test_x: torch.Tensor) -> list[dict]:
    from aekit.compress.baselines import classical_sizes, mosaic_sizes

    images = (test_x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()[:, 0]
    x = images.astype(np.float64)[:, None] / 255
    rows = []
    for codec, qualities in (
        ("png", (None,)), ("jpeg", JPEG_QUALITIES), ("webp", WEBP_QUALITIES),
    ):  # fmt: skip
        for quality in qualities:
            for layout, run in (("per image", classical_sizes), ("mosaic", mosaic_sizes)):
                result = run(images, codec, quality)
                decoded = result.decoded.astype(np.float64)[:, None] / 255
                rows.append(
                    {"codec": codec, "layout": layout, "quality": quality,
                     "bpp": result.bits_per_pixel, **distortion(decoded, x)}
                )  # fmt: skip
    return rows


def curve(rows: list[dict]) -> tuple[list[float], list[float]]:
    points = sorted({(r["psnr"], r["bpp"]) for r in rows})
    return [b for _, b in points], [p for p, _ in points]


def bd_rates(rows: list[dict], baselines: list[dict]) -> list[dict]:
    """BD-rate of each family's curve against JPEG-mosaic (and WebP-mosaic), over the
    overlap of their PSNR ranges with 18-28 dB."""
    from aekit.compress.quality import bd_rate
    from aekit.errors import AekitError

    anchors = {
        f"{c.upper()} mosaic": [r for r in baselines if r["codec"] == c and r["layout"] == "mosaic"]
        for c in ("jpeg", "webp")
    }
    anchors["JPEG per image"] = [
        r for r in baselines if r["codec"] == "jpeg" and r["layout"] == "per image"
    ]
    families = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    out = []
    for family, members in families.items():
        if len(members) < 2:
            continue
        rate_b, psnr_b = curve(members)
        for anchor, points in anchors.items():
            rate_a, psnr_a = curve(points)
            lo = max(BD_RANGE[0], min(psnr_a), min(psnr_b))
            hi = min(BD_RANGE[1], max(psnr_a), max(psnr_b))
            try:
                value = bd_rate(rate_a, psnr_a, rate_b, psnr_b, lo=BD_RANGE[0], hi=BD_RANGE[1])
            except AekitError as e:
                value, lo, hi = None, None, str(e)
            out.append({"curve": family, "anchor": anchor, "bd_rate": value, "over": [lo, hi]})
    return out


def matched_bpp(points: list[dict], psnr: float) -> float | None:
    """The anchor's bpp at this PSNR, interpolated linearly in log(bpp) between the two
    qualities that bracket it (None outside its curve)."""
    rates, psnrs = curve(points)
    if not psnrs[0] <= psnr <= psnrs[-1]:
        return None
    return float(np.exp(np.interp(psnr, psnrs, np.log(rates))))


def figure(rows: list[dict], baselines: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, label in (
        (axes[0], "psnr", "PSNR (dB, mean over images)"),
        (axes[1], "ms_ssim", "MS-SSIM (2 scales), as -10 log10(1 - MS-SSIM) dB"),
    ):

        def y(r, key=key):
            return r[key] if key == "psnr" else -10 * np.log10(max(1 - r[key], 1e-12))

        for codec, style in (("jpeg", "C7"), ("webp", "C5")):
            for layout, dash in (("mosaic", "-"), ("per image", ":")):
                pts = sorted(
                    (r for r in baselines if r["codec"] == codec and r["layout"] == layout),
                    key=lambda r: r["bpp"],
                )
                ax.plot([r["bpp"] for r in pts], [y(r) for r in pts], dash, color=style,
                        marker=".", label=f"{codec.upper()} {layout}")  # fmt: skip
        families: dict[str, list[dict]] = {}
        for r in rows:
            families.setdefault(r["family"], []).append(r)
        for i, (family, members) in enumerate(families.items()):
            pts = sorted(members, key=lambda r: r["bpp"])
            ax.plot([r["bpp"] for r in pts], [y(r) for r in pts], "-o", color=f"C{i}",
                    ms=4, label=family)  # fmt: skip
        png = next(r for r in baselines if r["codec"] == "png" and r["layout"] == "mosaic")
        ax.axvline(png["bpp"], color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (real files)")
        ax.set_ylabel(label)
        if key == "psnr":
            ax.axhspan(*BD_RANGE, color="0.93", zorder=-1)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Fashion-MNIST, 10,000 test images: rate-distortion (PNG mosaic: grey line)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def tables(rows: list[dict], baselines: list[dict], bd: list[dict]) -> str:
    mosaic = {
        c: [r for r in baselines if r["codec"] == c and r["layout"] == "mosaic"]
        for c in ("jpeg", "webp")
    }
    lines = [
        "| model | bpp (file) | estimated bpp | PSNR (dB) | pooled PSNR | MS-SSIM | "
        "JPEG mosaic bpp at that PSNR | WebP mosaic bpp | one-image file (bytes, header) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["family"], r["bpp"])):
        single = (
            f"{r['single_image_mean_bytes']:.0f}, {r['single_image_header_bytes']}"
            if "single_image_mean_bytes" in r
            else "—"
        )
        name = r["model"] if "stages" not in r else f"{r['model']} ({r['stages']} stages)"
        lines.append(
            f"| {name} "
            f"| {r['bpp']:.3f} | {r['estimated_bpp']:.3f} | {r['psnr']:.2f} "
            f"| {r['psnr_pooled']:.2f} | {r['ms_ssim']:.4f} "
            f"| {fmt(matched_bpp(mosaic['jpeg'], r['psnr']))} "
            f"| {fmt(matched_bpp(mosaic['webp'], r['psnr']))} | {single} |"
        )
    lines += ["", "| codec | layout | quality | bpp | PSNR (dB) | pooled PSNR | MS-SSIM |"]
    lines.append("|---|---|---|---|---|---|---|")
    for r in baselines:
        q = "lossless" if r["quality"] is None else str(r["quality"])
        lines.append(
            f"| {r['codec'].upper()} | {r['layout']} | {q} | {r['bpp']:.3f} "
            f"| {min(r['psnr'], 100):.2f} | {min(r['psnr_pooled'], 100):.2f} | {r['ms_ssim']:.4f} |"
        )
    lines += ["", "| curve | anchor | BD-rate over the PSNR overlap within 18-28 dB |"]
    lines.append("|---|---|---|")
    for b in bd:
        if b["bd_rate"] is None:
            lines.append(f"| {b['curve']} | {b['anchor']} | — ({b['over'][1]}) |")
        else:
            lo, hi = b["over"]
            lines.append(
                f"| {b['curve']} | {b['anchor']} | {b['bd_rate']:+.1f} % ({lo:.1f}-{hi:.1f} dB) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--lambdas", type=lambda s: tuple(float(v) for v in s.split(",")), default=LAMBDAS
    )
    parser.add_argument("--only", nargs="*", help="train and measure only these model names")
    parser.add_argument("--runs", default="benchmarks/runs/compression")
    parser.add_argument("--out", default="benchmarks/results/compression.json")
    parser.add_argument(
        "--tables-only", action="store_true", help="print the tables of the saved results"
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.tables_only:
        saved = json.loads(out.read_text())
        for r in saved["rows"]:
            r["family"] = family(r["model"], r["recipe"])
        bd = bd_rates(saved["rows"], saved["baselines"])
        saved["bd_rate"] = bd
        out.write_text(json.dumps(saved, indent=1))
        figure(saved["rows"], saved["baselines"], out.with_suffix(".png"))
        print(tables(saved["rows"], saved["baselines"], bd))
        return
    spec = DataConfig(
        source="fashion-mnist", data_dir=str(Path(args.data_root) / "fashion-mnist"),
        val_fraction=0.0,
    )  # fmt: skip
    splits = load_data(spec)
    chosen = {k: v for k, v in models(args).items() if not args.only or k in args.only}
    for name, (recipe, options) in chosen.items():
        train(name, recipe, options, splits, args)
    rows = []
    for name, (recipe, options) in chosen.items():
        rows.append(measure(name, recipe, splits, args))
        if recipe == "rqvae":
            rows += [
                measure(name, recipe, splits, args, stages=s) for s in range(1, options["stages"])
            ]
    baselines = classical(splits.test.x)
    bd = bd_rates(rows, baselines)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": f"python benchmarks/compression.py --data-root {args.data_root} "
        f"--epochs {args.epochs} --lambdas {','.join(f'{v:g}' for v in args.lambdas)}",
        "torch": torch.__version__,
        "aekit": aekit.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    result = {"meta": meta, "rows": rows, "baselines": baselines, "bd_rate": bd}
    out.write_text(json.dumps(result, indent=1))
    figure(rows, baselines, out.with_suffix(".png"))
    print(tables(rows, baselines, bd))


if __name__ == "__main__":
    main()
