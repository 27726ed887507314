"""The defaults that let the discrete bottlenecks' papers show: each default beside the paper's
plain setting, 3 seeds, mean ± sd.

- VQ-VAE on Fashion-MNIST (official 60,000 / 10,000 split, grey levels, Bernoulli likelihood,
  the default conv body: a 7x7 grid of 16-dimensional vectors, K=512 codes; Adam 1e-3,
  batch 128, one epoch): the paper's N(0, I) codebook; dead-code restarts (CVQ-VAE, the new
  default); k-means initialisation on top; and the rotation trick (Fifty et al. 2024) against
  straight-through, once with restarts and once with a k-means-initialised codebook and no
  restarts (the rotation paper's own runs have neither restarts nor a collapsed start).
- FSQ 8,5,5,5 on an MLP (784-512-256-16) over the same data, batch 64 (the CLI's), one epoch:
  the paper's tanh bound alone against batch-normalised pre-activations (the new default).
- BatchTopK on synthetic activations (d=32, 128 true features, 4 active; 16,384 training
  rows, 4,096 held out; 256 latents): held-out L0 against k for k = 4 and 32, in the quick
  suite's short schedule (5 epochs of batches of 512) and the SAE default (one epoch of
  batches of 4,096), with the threshold of the moving average alone (the old inference
  threshold, read before the end-of-epoch calibration replaces it) and the calibrated one.

Usage, MSE (per pixel, on the test images) and perplexity come from `aekit.eval.evaluate`.

    python benchmarks/quantizer_defaults.py --data-root ../shared/data

Writes benchmarks/results/quantizer_defaults.json and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import aekit
from aekit.data import DataConfig, TensorData, load_data
from aekit.eval import evaluate
from aekit.registry import get_recipe
from aekit.train import TrainConfig, Trainer

SEEDS = (0, 1, 2)
VQ: dict[str, dict] = {
    "paper (N(0, I) codebook)": {"restart": False},
    "restart (default)": {},
    "k-means + restart": {"kmeans_init": 10},
    "rotation + restart": {"rotation": True},
    "k-means, straight-through": {"restart": False, "kmeans_init": 10},
    "k-means, rotation": {"restart": False, "kmeans_init": 10, "rotation": True},
}
FSQ: dict[str, dict] = {
    "paper (tanh bound alone)": {"pre_norm": "none"},
    "batch-normalised (default)": {},
}


def train_image(recipe: str, options: dict, splits, seed: int, batch_size: int) -> dict:
    torch.manual_seed(seed)
    model = aekit.build(recipe, splits.train.shape, **options)
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, seed=seed, progress=False)
    start = time.perf_counter()
    Trainer(model, splits.train, None, config).fit()
    seconds = time.perf_counter() - start
    m = evaluate(model, splits.test)
    return {
        "usage": m["codebook_usage"],
        "perplexity": m["codebook_perplexity"],
        "mse": m["mse"],
        "seconds": seconds,
    }


class ReadThreshold:
    """Records BatchTopK's moving-average threshold just before the epoch's calibration."""

    def __init__(self, model) -> None:
        self.moving_average: float | None = None
        bottleneck = model.bottleneck
        calibrate = bottleneck.calibrate

        def wrapped(features):
            self.moving_average = float(bottleneck.threshold)
            calibrate(features)

        bottleneck.calibrate = wrapped


def batchtopk_rows(seeds) -> list[dict]:
    from aekit.data.activations.synthetic import make_sparse_data

    x, _, _ = make_sparse_data(16384 + 4096, 32, 128, active=4.0, seed=0)
    train, test = TensorData(x[:16384]), TensorData(x[16384:])
    rows = []
    for k in (4, 32):
        for schedule, (epochs, batch) in {"5 x 512": (5, 512), "1 x 4096": (1, 4096)}.items():
            for seed in seeds:
                torch.manual_seed(seed)
                model = aekit.build("sae-batchtopk", (32,), latent_dim=256, k=k)
                reader = ReadThreshold(model)
                defaults = get_recipe("sae-batchtopk").train_defaults(256)
                config = TrainConfig(
                    **{**defaults, "epochs": epochs, "batch_size": batch},
                    seed=seed, progress=False,
                )  # fmt: skip
                Trainer(model, train, None, config).fit()
                calibrated = evaluate(model, test)
                model.bottleneck.threshold.fill_(reader.moving_average)
                moving = evaluate(model, test)
                row = {"k": k, "schedule": schedule, "seed": seed}
                row.update(l0_moving_average=moving["l0"], l0_calibrated=calibrated["l0"])
                row.update(fvu_moving_average=moving["fvu"], fvu_calibrated=calibrated["fvu"])
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def mean_sd(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def image_table(rows: list[dict], title: str) -> str:
    lines = [f"| {title} | usage | perplexity | MSE |", "|---|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        cells = [
            mean_sd([100 * r["usage"] for r in mine], 1) + " %",
            mean_sd([r["perplexity"] for r in mine], 0),
            mean_sd([r["mse"] for r in mine], 4),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def batchtopk_table(rows: list[dict]) -> str:
    lines = [
        "| k | schedule | L0, moving average | L0, calibrated | FVU, moving average "
        "| FVU, calibrated |",
        "|---|---|---|---|---|---|",
    ]
    for k in (4, 32):
        for schedule in ("5 x 512", "1 x 4096"):
            mine = [r for r in rows if r["k"] == k and r["schedule"] == schedule]
            cells = [mean_sd([r[key] for r in mine], d) for key, d in (
                ("l0_moving_average", 2), ("l0_calibrated", 2),
                ("fvu_moving_average", 3), ("fvu_calibrated", 3),
            )]  # fmt: skip
            lines.append(f"| {k} | {schedule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/quantizer_defaults.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = SEEDS[: args.seeds]
    spec = DataConfig(
        source="fashion-mnist", data_dir=str(Path(args.data_root) / "fashion-mnist"),
        val_fraction=0.0,
    )  # fmt: skip
    splits = load_data(spec)
    result: dict = {"threads": args.threads, "seeds": list(seeds), "vq": [], "fsq": []}
    for family, variants, recipe, batch, extra in (
        ("vq", VQ, "vqvae", 128, {}),
        ("fsq", FSQ, "fsq", 64, {"body": "mlp"}),
    ):
        for name, options in variants.items():
            for seed in seeds:
                row = {"variant": name, "seed": seed}
                row.update(train_image(recipe, {**extra, **options}, splits, seed, batch))
                print(json.dumps(row), flush=True)
                result[family].append(row)
    result["batchtopk"] = batchtopk_rows(seeds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(image_table(result["vq"], "VQ-VAE, K=512, conv, 1 epoch"))
    print()
    print(image_table(result["fsq"], "FSQ 8,5,5,5, MLP, 1 epoch"))
    print()
    print(batchtopk_table(result["batchtopk"]))


if __name__ == "__main__":
    main()
