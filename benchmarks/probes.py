"""Frozen-code probes (`aekit eval RUN --probe linear,knn`) of aekit's image autoencoders
against the same probes on the raw pixels, Fashion-MNIST's official split (60,000 training
images for the fit, 10,000 test images scored).

The pixel floor: `aekit.eval.probes.probe` on the flattened [0, 1] pixels. The models: each
recipe trained by `aekit train RECIPE --data fashion-mnist` with its defaults for `--epochs`
epochs per seed, then probed on its codes of the whole training split (binarised once where
training binarised it) by `aekit eval RUN --probe linear,knn --nll-k 0`, the command a user
runs. Mean ± sd over seeds; training seconds beside (the machine is shared: read them as
rough).

    python benchmarks/probes.py --epochs 2 --seeds 0,1,2 \
        --pixels-from benchmarks/results/peers-probes-pixels.json   # docs/benchmarks.md
    python benchmarks/probes.py --epochs 5 --seeds 0,1,2        # issue 14's protocol

Writes benchmarks/results/peers-probes.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import save_result

from aekit.cli import main as aekit
from aekit.data import DataConfig, load_data
from aekit.eval.probes import PROBES, probe

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("linear", "knn20_cosine", "knn5_euclidean")


def pixel_floor(data_dir: str) -> dict[str, dict]:
    spec = DataConfig(source="fashion-mnist", data_dir=data_dir, val_fraction=0, binarize=False)
    splits = load_data(spec)
    train, test = splits.train, splits.test
    start = time.perf_counter()
    results = probe(
        list(PROBES),
        train.x.flatten(1).numpy(),
        train.y.numpy(),
        test.x.flatten(1).numpy(),
        test.y.numpy(),
    )
    seconds = time.perf_counter() - start
    print(f"pixels: { ({n: round(r.accuracy, 4) for n, r in results.items()}) } ({seconds:.0f} s)")
    return {"probes": {n: r.to_dict() for n, r in results.items()}, "probe_seconds": seconds}


def probe_recipe(recipe: str, seed: int, args: argparse.Namespace, scratch: Path) -> dict:
    run = scratch / f"{recipe}-{seed}"
    train = [
        *("train", recipe, "--data", "fashion-mnist", "--data-dir", args.data_dir),
        *("--val-fraction", "0", "--epochs", str(args.epochs), "--seed", str(seed)),
        *("--no-eval", "--no-report", "--no-progress", "--quiet", "--out", str(run)),
    ]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if aekit(train) != 0:
            raise SystemExit(f"aekit {' '.join(train)} failed")
        trained = time.perf_counter() - start
        if aekit(["eval", str(run), "--probe", ",".join(PROBES), "--nll-k", "0"]) != 0:
            raise SystemExit(f"aekit eval {run} --probe failed")
    probed = time.perf_counter() - start - trained
    probes = json.loads((run / "eval.json").read_text())["metrics"]["probe"]
    print(
        f"{recipe} seed {seed}: { ({n: round(p['accuracy'], 4) for n, p in probes.items()}) } "
        f"(trained {trained:.0f} s, probed {probed:.0f} s)",
        flush=True,
    )
    return {"seed": seed, "train_seconds": trained, "probe_seconds": probed, "probes": probes}


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def table(floor: dict, rows: dict[str, list[dict]], epochs: int) -> str:
    lines = [
        "| features | epochs | seeds | linear % | k-NN k=20 cosine % | k-NN k=5 Euclidean % |",
        "|---|---|---|---|---|---|",
        "| raw pixels | - | - | "
        + " | ".join(mean_sd([floor["probes"][n]["accuracy"]]) for n in NAMES)
        + " |",
    ]
    for recipe, runs in rows.items():
        cells = [mean_sd([r["probes"][n]["accuracy"] for r in runs]) for n in NAMES]
        lines.append(
            f"| aekit {recipe} codes | {epochs} | {len(runs)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--recipes", default="ae,dae,vae,ksae")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pixels-from", help="a results file whose pixel floor to reuse instead of measuring it"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.pixels_from:
        floor = json.loads(Path(args.pixels_from).read_text())["pixels"]
    else:
        floor = pixel_floor(args.data_dir)
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in filter(None, args.recipes.split(",")):
            rows[recipe] = [
                probe_recipe(recipe, int(seed), args, Path(scratch))
                for seed in args.seeds.split(",")
            ]
    markdown = table(floor, rows, args.epochs)
    print("\n" + markdown)
    payload = {
        "protocol": "Fashion-MNIST official split: probes fitted on the 60,000 training "
        "images' codes (or pixels), scored on the 10,000 test images; aekit eval --probe",
        "epochs": args.epochs,
        "threads": args.threads,
        "pixels": floor,
        "pixels_from": args.pixels_from,
        "recipes": rows,
        "table": markdown,
    }
    print(f"wrote {save_result('probes', payload)}")


if __name__ == "__main__":
    main()
