"""Discrete bottlenecks side by side on Fashion-MNIST: fidelity, codebook health, real files.

Every model has the same fully convolutional networks (two stride-2 stages of 32 and 64
channels, a 7x7 grid of 16-dimensional code vectors for VQ; the code width of FSQ/LFQ/BSQ is
their number of dimensions), the same optimiser (Adam, lr 1e-3), batch size 128 and number of
epochs, on the grey-level official 60,000 / 10,000 split (no validation split).

Columns, all on the 10,000 test images:
- MSE per pixel and PSNR of the decoded mean (images in [0, 1]; PSNR is the mean over images
  of 10 log10(1 / MSE_image), clamped at 100 dB for an exact image);
- codebook usage (fraction of codes used on the test set), perplexity, dead codes;
- bpp of a real `.aek` file holding all test images (file bytes x 8 / pixels, header and
  checksum included), and the ideal bpp (cross-entropy of the test codes under the fitted
  per-position categorical prior);
- training throughput: images/s of optimisation steps (forward, backward, Adam) on batches
  of 128, measured after training with the models interleaved (A B C ... A B C ...), the
  median of 5 rounds of 20 steps, as a ratio to plain VQ's.

The rate-distortion figure adds residual VQ truncated to 1..4 stages (one model trained with
quantizer dropout), FSQ at three level settings, and PNG (lossless) and WebP (lossy, quality
5..100) of the same images, each image its own file.

    python benchmarks/quantizers.py --data-root ../shared/data --epochs 1

Training is resumable (models already in --runs are reused). Writes
benchmarks/results/quantizers.json, benchmarks/results/rate_distortion.png and prints the
Markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit.data import DataConfig, load_data
from aekit.eval import evaluate
from aekit.train import TrainConfig, Trainer

NET = {"channels": (32, 64)}
MODELS: dict[str, tuple[str, dict]] = {
    "VQ K=1024": ("vqvae", {"codebook_size": 1024}),
    "VQ K=1024 no restart (paper)": ("vqvae", {"codebook_size": 1024, "restart": False}),
    "VQ K=1024 EMA": ("vqvae", {"codebook_size": 1024, "ema": True}),
    "VQ K=1024 rotation": ("vqvae", {"codebook_size": 1024, "rotation": True}),
    "VQ K=1024 SimVQ": ("vqvae", {"codebook_size": 1024, "simvq": True, "restart": False}),
    "RVQ 4x256 dropout": (
        "rqvae",
        {"codebook_size": 256, "stages": 4, "quantizer_dropout": 0.5},
    ),
    "FSQ 8,5,5,5": ("fsq", {"levels": (8, 5, 5, 5)}),
    "FSQ 5,3": ("fsq", {"levels": (5, 3)}),
    "FSQ 8,8,8,5,5,5": ("fsq", {"levels": (8, 8, 8, 5, 5, 5)}),
    "LFQ 10 bits": ("lfq", {"bits": 10}),
    "BSQ 10 bits": ("bsq", {"bits": 10}),
}
MAIN_TABLE = [
    "VQ K=1024",
    "VQ K=1024 no restart (paper)",
    "VQ K=1024 EMA",
    "VQ K=1024 rotation",
    "VQ K=1024 SimVQ",
    "RVQ 4x256 dropout",
    "FSQ 8,5,5,5",
    "LFQ 10 bits",
    "BSQ 10 bits",
]


def run_dir(args, name: str) -> Path:
    return Path(args.runs) / name.replace(" ", "_").replace(",", "-").replace("=", "")


def train(name: str, splits, args) -> float:
    """Trains the model into its run directory (once) and returns images/s of that run (a
    rough figure: see `throughput` for the comparison)."""
    out = run_dir(args, name)
    done = out / "bench_train.json"
    if done.is_file():
        return json.loads(done.read_text())["images_per_second"]
    recipe, options = MODELS[name]
    torch.manual_seed(0)
    model = aekit.build(recipe, splits.train.shape, **NET, **options)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=0, progress=False,
        out=str(out),
    )  # fmt: skip
    start = time.perf_counter()
    Trainer(model, splits.train, None, config).fit()
    rate = args.epochs * len(splits.train) / (time.perf_counter() - start)
    done.write_text(json.dumps({"images_per_second": rate, "threads": torch.get_num_threads()}))
    return rate


def throughput(names: list[str], x: torch.Tensor, rounds: int = 5, steps: int = 20) -> dict:
    """Median images/s of training steps per model, the models interleaved round by round so
    that load on a shared machine hits them alike."""
    models, optimisers = {}, {}
    for name in names:
        recipe, options = MODELS[name]
        torch.manual_seed(0)
        models[name] = aekit.build(recipe, tuple(x.shape[1:]), **NET, **options).train()
        optimisers[name] = torch.optim.Adam(models[name].parameters(), lr=1e-3)
    batches = x[: steps * 128].split(128)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            model, optimiser = models[name], optimisers[name]
            start = time.perf_counter()
            for step, batch in enumerate(batches):
                optimiser.zero_grad(set_to_none=True)
                model.backward(model(batch, step=step))
                optimiser.step()
            rates[name].append(len(batches) * 128 / (time.perf_counter() - start))
    return {name: float(np.median(r)) for name, r in rates.items()}


PRIORS: dict = {}


def measure(name: str, splits, args, stages: int | None = None) -> dict:
    # Imported here so that training (--train-only) needs nothing but the models.
    from aekit.compress import fit_index_prior
    from aekit.compress.baselines import psnr
    from aekit.compress.codec import compress_indices, decompress_indices

    out = run_dir(args, name)
    model = aekit.load(out)
    test = splits.test
    if name not in PRIORS:  # the truncated RVQ codes reuse the full model's prior
        PRIORS[name] = fit_index_prior(model, splits.train)
    prior = PRIORS[name]
    model.latent_density = prior
    row: dict = {"model": name, "recipe": MODELS[name][0], "options": MODELS[name][1]}
    x = test.x
    indices = torch.cat([model.encode_indices(b) for b in x.split(1000)])
    if stages is not None:
        indices = indices[..., :stages]
        row["stages"] = stages
    path = Path(args.files) / f"{out.name}{'' if stages is None else f'-{stages}'}.aek"
    path.parent.mkdir(parents=True, exist_ok=True)
    compress_indices(model, indices, run_dir=out, prior=prior).save(path)
    decoded_indices = decompress_indices(path.read_bytes(), model, prior=prior)
    assert torch.equal(decoded_indices, indices), "entropy coding must be exact"
    recon = torch.cat([model.decode_indices(b) for b in decoded_indices.split(1000)])
    pixels = x[0].numel() * len(x)
    row.update(
        bpp=path.stat().st_size * 8 / pixels,
        ideal_bpp=-prior.log2_prob(indices).sum().item() / pixels,
        psnr=psnr(recon, x),
        mse=float((recon - x).pow(2).mean()),
        file_bytes=path.stat().st_size,
    )
    if stages is None:
        # One pass gives the test loss and the codebook health together.
        metrics = evaluate(model, test, detailed=True)
        keys = ("codebook_usage", "codebook_perplexity", "dead_codes", "codebook_size")
        row.update({k: metrics[k] for k in (*keys, "quantization_error")})
        row["test_loss"] = metrics["loss"]
    print(json.dumps(row), flush=True)
    return row


def classical(test_x: torch.Tensor) -> list[dict]:
    """PNG (lossless) and WebP at a sweep of qualities on the same test images."""
    from aekit.compress.baselines import classical_sizes, psnr

    images = (test_x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    rows = []
    sweep = [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    for codec, qualities in (("png", [None]), ("webp", sweep)):
        for quality in qualities:
            result = classical_sizes(images, codec, quality)
            rec = torch.from_numpy(result.decoded.astype(np.float32) / 255).reshape(test_x.shape)
            row = {"codec": codec, "quality": quality, "bpp": result.bits_per_pixel}
            rows.append({**row, "psnr": psnr(rec, test_x.float())})
    return rows


def matched_webp_bpp(webp: list[dict], target_psnr: float) -> float | None:
    """The WebP bpp at the model's PSNR, interpolated linearly between the two qualities
    that bracket it (None outside the sweep)."""
    points = sorted((r["psnr"], r["bpp"]) for r in webp)
    for (p0, b0), (p1, b1) in itertools.pairwise(points):
        if p0 <= target_psnr <= p1:
            return b0 + (b1 - b0) * (target_psnr - p0) / max(p1 - p0, 1e-9)
    return None


def figure(rows: list[dict], baselines: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    webp = sorted((r for r in baselines if r["codec"] == "webp"), key=lambda r: r["bpp"])
    ax.plot([r["bpp"] for r in webp], [r["psnr"] for r in webp], "k--", marker=".", label="WebP")
    rvq = sorted((r for r in rows if "stages" in r), key=lambda r: r["stages"])
    if rvq:
        ax.plot([r["bpp"] for r in rvq], [r["psnr"] for r in rvq], "-o", label="RVQ 1..4 stages")
    fsq = sorted((r for r in rows if r["recipe"] == "fsq"), key=lambda r: r["bpp"])
    ax.plot([r["bpp"] for r in fsq], [r["psnr"] for r in fsq], "-s", label="FSQ levels")
    for r in rows:
        if "stages" in r or r["recipe"] == "fsq":
            continue
        ax.scatter(r["bpp"], r["psnr"], label=r["model"], s=25)
    png = next(r for r in baselines if r["codec"] == "png")
    ax.axvline(png["bpp"], color="grey", lw=0.8)
    ax.text(png["bpp"], ax.get_ylim()[0] + 1, " PNG (lossless)", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (real files)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Fashion-MNIST test set: rate-distortion")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(value, digits=2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def tables(rows: list[dict], baselines: list[dict]) -> str:
    webp = [r for r in baselines if r["codec"] == "webp"]
    main = {r["model"]: r for r in rows if "stages" not in r}
    base = main.get("VQ K=1024", {}).get("images_per_second")
    lines = [
        "| model | MSE | PSNR (dB) | usage | perplexity | dead codes | bpp (file) | ideal bpp "
        "| WebP bpp at same PSNR | train images/s vs plain VQ |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [*MAIN_TABLE, *(n for n in main if n not in MAIN_TABLE)]:
        if name not in main:
            continue
        r = main[name]
        sizes = r["codebook_size"]
        size = f"{sum(sizes)}" + (f" ({len(sizes)}x{sizes[0]})" if len(sizes) > 1 else "")
        ratio = r["images_per_second"] / base if base else None
        lines.append(
            f"| {name} | {r['mse']:.4f} | {r['psnr']:.2f} | {100 * r['codebook_usage']:.1f} % "
            f"| {r['codebook_perplexity']:.0f} | {r['dead_codes']} of {size} "
            f"| {r['bpp']:.3f} | {r['ideal_bpp']:.3f} "
            f"| {fmt(matched_webp_bpp(webp, r['psnr']), 3)} | {fmt(ratio)} |"
        )
    lines += ["", "| residual VQ stages | bpp (file) | PSNR (dB) |", "|---|---|---|"]
    for r in sorted((r for r in rows if "stages" in r), key=lambda r: r["stages"]):
        lines.append(f"| {r['stages']} | {r['bpp']:.3f} | {r['psnr']:.2f} |")
    lines += ["", "| classical codec | bpp | PSNR (dB) |", "|---|---|---|"]
    for r in baselines:
        q = "lossless" if r["quality"] is None else f"quality {r['quality']}"
        lines.append(f"| {r['codec'].upper()} {q} | {r['bpp']:.3f} | {fmt(r['psnr'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--runs", default="benchmarks/runs/quantizers")
    parser.add_argument("--files", default="benchmarks/runs/quantizers/files")
    parser.add_argument("--out", default="benchmarks/results/quantizers.json")
    parser.add_argument("--train-only", action="store_true")
    args = parser.parse_args()
    spec = DataConfig(
        source="fashion-mnist", data_dir=str(Path(args.data_root) / "fashion-mnist"),
        val_fraction=0.0,
    )  # fmt: skip
    splits = load_data(spec)
    for name in args.models:
        train(name, splits, args)
    if args.train_only:
        return
    rates = throughput(args.models, splits.train.x)
    print(json.dumps({"images_per_second": rates}), flush=True)
    rows = []
    for name in args.models:
        row = measure(name, splits, args)
        row["images_per_second"] = rates[name]
        rows.append(row)
        if MODELS[name][0] == "rqvae":
            stages = MODELS[name][1]["stages"]
            rows += [measure(name, splits, args, stages=s) for s in range(1, stages + 1)]
    baselines = classical(splits.test.x)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": f"python benchmarks/quantizers.py --data-root {args.data_root} "
        f"--epochs {args.epochs} --batch-size {args.batch_size}",
        "torch": torch.__version__,
        "aekit": aekit.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows, "baselines": baselines}, indent=1))
    figure(rows, baselines, out.with_name("rate_distortion.png"))
    print(tables(rows, baselines))


if __name__ == "__main__":
    main()
