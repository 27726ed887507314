"""Out-of-distribution detection on images: a VAE trained on Fashion-MNIST scores the
Fashion-MNIST test images (in) against the MNIST test images (out), every score of
`aekit.eval.anomaly` from the same run; ROC-AUC with MNIST as the positive class.

The known trap, measured here rather than assumed: the likelihood of a model trained on
Fashion-MNIST is higher on MNIST digits than on its own test images (Nalisnick et al. 2019,
*Do deep generative models know what they don't know?*), so -log p(x) ranks the outliers as the
most normal rows (ROC-AUC below 0.5). The input-complexity score (Serrà et al. 2020) subtracts
the PNG length of each image and fixes it.

    python benchmarks/image_ood.py --fashion ../shared/data/fashion-mnist \\
        --mnist ../shared/data/mnist --epochs 10 --seeds 0,1,2

Both sides binarised once with a fixed seed, as the VAE's evaluation data is; reference
statistics (code mean and covariance, residual variances) from 20,000 training images; -log p(x)
by importance sampling with k=100. Results: benchmarks/results/image_ood.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from common import RESULTS

from aekit.bench.provenance import environment
from aekit.cli import main as aekit
from aekit.detector import score_with_run
from aekit.io import atomic_write_json

SCORES = [
    "nll",
    "elbo",
    "complexity",
    "reconstruction",
    "scaled-reconstruction",
    "mahalanobis",
    "reconstruction+mahalanobis",
    "scaled-reconstruction+mahalanobis",
]


def one_seed(args: argparse.Namespace, seed: int, workdir: Path) -> dict:
    run = workdir / f"vae-seed{seed}"
    start = time.perf_counter()
    flags = ["--data", "fashion-mnist", "--data-dir", args.fashion, "--epochs", str(args.epochs)]
    flags += ["--seed", str(seed), "--out", str(run), "--no-report", "--no-eval", "--quiet"]
    if aekit(["train", "vae", *flags]) != 0:
        raise SystemExit("training failed")
    train_seconds = time.perf_counter() - start
    common = {"nll_k": args.nll_k, "seed": seed}
    inside = score_with_run(run, SCORES, **common)
    # MNIST's 10,000 test images are all there is here: every one of them is an outlier
    outside = score_with_run(
        run, SCORES, source="mnist", data_dir=args.mnist, split="all", **common
    )
    labels = np.r_[np.zeros(len(inside["nll"])), np.ones(len(outside["nll"]))]
    auc = {s: float(roc_auc_score(labels, np.r_[inside[s], outside[s]])) for s in SCORES}
    pixels = 784 * np.log(2)
    row = {
        "seed": seed,
        "roc_auc": auc,
        "nll_bits_per_dim_in": float(inside["nll"].mean() / pixels),
        "nll_bits_per_dim_out": float(outside["nll"].mean() / pixels),
        "train_seconds": train_seconds,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion", required=True, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--mnist", required=True, help="folder of the MNIST t10k IDX files")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--nll-k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        rows = [one_seed(args, seed, Path(workdir)) for seed in seeds]

    def mean_sd(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    table = ["| score | ROC-AUC (MNIST = out) |", "|---|---:|"]
    table += [f"| {s} | {mean_sd([r['roc_auc'][s] for r in rows])} |" for s in SCORES]
    bits_in = mean_sd([r["nll_bits_per_dim_in"] for r in rows])
    bits_out = mean_sd([r["nll_bits_per_dim_out"] for r in rows])
    table.append(
        f"\n-log p(x) bits/dim (k={args.nll_k}): Fashion-MNIST test {bits_in}, MNIST {bits_out}"
    )
    print("\n".join(table))
    command = "python benchmarks/image_ood.py " + " ".join(sys.argv[1:])
    atomic_write_json(
        RESULTS / "image_ood.json",
        {"command": command, "rows": rows, "table": "\n".join(table), "provenance": environment()},
    )


if __name__ == "__main__":
    main()
