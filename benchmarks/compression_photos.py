"""Colour photographs: a mean-scale hyperprior trained on crops of one photograph, tested on
another, against JPEG and WebP of the same pixels.

The only colour photographs on this machine without a download are the two that scikit-learn
ships (`load_sample_images`: china.jpg and flower.jpg, 427 x 640, themselves JPEG files). The
codec trains on random 64 x 64 crops of china.jpg (with flips) and is tested on flower.jpg's
top-left 384 x 640, cut into 60 tiles of 64 x 64 coded in one `.aek` file (the model is fully
convolutional but its latent grid is fixed by the training size, so it codes tiles; their
borders cost it, as JPEG's 8 x 8 blocks cost JPEG). JPEG (4:2:0) and WebP code the same
384 x 640 region as one image. bpp = file bits / (384 x 640); PSNR over all RGB values of the
region. This is one training photograph and minutes of CPU, far from the papers' data sets
and budgets: it measures what the code does on colour, not what the method can reach.

    python benchmarks/compression_photos.py --steps 5000

Writes benchmarks/results/compression_photos.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit.data import TensorData
from aekit.errors import TrainingDiverged
from aekit.train import TrainConfig, Trainer

TILE = 64
LAMBDAS = (0.01, 0.03, 0.1)
NET = {"channels": (64, 64, 64, 64), "latent_channels": 64, "hyper_channels": 64}


def photos() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return china, flower[: 6 * TILE, : 10 * TILE]


def crops(image: np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    h, w, _ = image.shape
    out = np.empty((n, 3, TILE, TILE), dtype=np.float32)
    for i in range(n):
        y, x = rng.integers(0, h - TILE + 1), rng.integers(0, w - TILE + 1)
        crop = image[y : y + TILE, x : x + TILE].transpose(2, 0, 1) / 255
        out[i] = crop[:, :, ::-1] if rng.random() < 0.5 else crop
    return torch.from_numpy(out)


def tiles(region: np.ndarray) -> torch.Tensor:
    h, w, _ = region.shape
    t = region.reshape(h // TILE, TILE, w // TILE, TILE, 3).transpose(0, 2, 4, 1, 3)
    return torch.from_numpy(t.reshape(-1, 3, TILE, TILE).astype(np.float32) / 255)


def untile(t: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape[0] // TILE, shape[1] // TILE
    return t.reshape(rows, cols, 3, TILE, TILE).transpose(0, 3, 1, 4, 2).reshape(*shape, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
    return float(10 * np.log10(1 / mse))


def classical(region: np.ndarray) -> list[dict]:
    from PIL import Image

    rows = []
    for codec, qualities in (("JPEG", range(5, 96, 5)), ("WEBP", range(0, 101, 5))):
        for q in qualities:
            buffer = io.BytesIO()
            Image.fromarray(region).save(buffer, format=codec, quality=q, optimize=True)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            bpp = 8 * buffer.tell() / (region.shape[0] * region.shape[1])
            rows.append({"codec": codec.lower(), "quality": q, "bpp": bpp,
                         "psnr": psnr(decoded, region)})  # fmt: skip
    return rows


def at_30_db(points: list[tuple[float, float]]) -> float | None:
    """bpp at 30 dB, interpolated in log(bpp) (None when the curve does not reach it)."""
    points = sorted(points)
    psnrs = [p for p, _ in points]
    if not psnrs[0] <= 30 <= psnrs[-1]:
        return None
    return float(np.exp(np.interp(30, psnrs, np.log([b for _, b in points]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--runs", default="benchmarks/runs/compression_photos")
    parser.add_argument("--out", default="benchmarks/results/compression_photos.json")
    args = parser.parse_args()
    from aekit.compress import compress, decompress

    china, region = photos()
    batch = 16
    train = TensorData(crops(china, args.steps * batch // 10))
    test = tiles(region)
    rows = []
    for lam in LAMBDAS:
        out = Path(args.runs) / f"hyperprior_lambda{lam:g}"
        done = out / "bench_train.json"
        if not done.is_file():
            torch.manual_seed(0)
            model = aekit.build("hyperprior-ae", (3, TILE, TILE), rate_lambda=lam, **NET)
            config = TrainConfig(epochs=10, batch_size=batch, seed=0, progress=False, out=str(out))
            start = time.perf_counter()
            try:
                Trainer(model, train, None, config).fit()
            except TrainingDiverged as e:
                rows.append({"lambda": lam, "diverged": str(e)})
                print(json.dumps(rows[-1]), flush=True)
                continue
            done.write_text(json.dumps({"seconds": time.perf_counter() - start}))
        seconds = json.loads(done.read_text())["seconds"]
        model = aekit.load(out).eval()
        file = compress(model, test)
        decoded = decompress(file.data, model).numpy()
        image = np.clip(np.rint(untile(decoded, region.shape[:2]) * 255), 0, 255).astype(np.uint8)
        row = {
            "lambda": lam,
            "bpp": 8 * len(file.data) / (region.shape[0] * region.shape[1]),
            "estimated_bpp": file.ideal_bits_per_pixel
            * 60
            * TILE
            * TILE
            / (region.shape[0] * region.shape[1]),
            "psnr": psnr(image, region),
            "train_s": seconds,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    baselines = classical(region)
    summary = {
        "hyperprior": at_30_db([(r["psnr"], r["bpp"]) for r in rows if "bpp" in r]),
        **{
            c: at_30_db([(r["psnr"], r["bpp"]) for r in baselines if r["codec"] == c])
            for c in ("jpeg", "webp")
        },
    }
    meta = {"command": f"python benchmarks/compression_photos.py --steps {args.steps}",
            "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip
    Path(args.out).write_text(json.dumps(
        {"meta": meta, "rows": rows, "baselines": baselines, "bpp_at_30_db": summary}, indent=1
    ))  # fmt: skip
    print("| codec | bpp at 30 dB |\n|---|---|")
    for name, value in summary.items():
        print(f"| {name} | {'not reached' if value is None else f'{value:.3f}'} |")
    print("\n| hyperprior λ | bpp (file) | PSNR (dB) |\n|---|---|---|")
    for r in rows:
        if "bpp" in r:
            print(f"| {r['lambda']:g} | {r['bpp']:.3f} | {r['psnr']:.2f} |")
        else:
            print(f"| {r['lambda']:g} | diverged (non-finite loss) | — |")


if __name__ == "__main__":
    main()
