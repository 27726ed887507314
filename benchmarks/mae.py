"""The masked autoencoder on Fashion-MNIST's official split (60,000 training / 10,000 test
images), three parts, each its own results file:

finetune (peers-mae.json): per seed, `aekit train mae` with its defaults for --epochs epochs
    on the 60,000 training images without labels, then
    - frozen probes `aekit eval RUN --probe linear,knn` (as benchmarks/probes.py runs them
      for ae, dae, vae, ksae, whose figures and training seconds it quotes, and the raw
      pixels' floor from --pixels-from);
    - the fine-tuning probe (`aekit.eval.probes.finetune`, encoder + linear head) on all
      60,000 labels for --finetune-epochs, and on a random --subset of labelled images
      (the same images for both arms of a seed) for --subset-epochs;
    - the same ViT from scratch (the same config, untrained) under the same two budgets.
sweep (peers-mae-sweep.json): seed 0 pre-trained at each --ratios mask ratio for --epochs,
    its frozen probes and the subset fine-tuning.
training (peers-mae-training.json): seed 0 pre-trained for each of --epochs-list, its frozen
    probes: how the gap to the pixels moves with training time.
speed (peers-mae-speed.json): images/s of one training step (forward, backward, AdamW) at
    mask ratio 0.75 against 0 (every patch through the encoder), batch 256, interleaved,
    medians, at 2 threads and at 1.

    python benchmarks/mae.py finetune --seeds 0,1,2 --epochs 3 \
        --pixels-from benchmarks/results/peers-probes-pixels.json
    python benchmarks/mae.py sweep --ratios 0.5,0.9 --epochs 3   # 0.75: finetune's seed 0
    python benchmarks/mae.py training --epochs-list 1
    python benchmarks/mae.py speed
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
from peers.common import interleave, median_after_warmup, save_result

import aekit
from aekit.cli import main as aekit_cli
from aekit.data import DataConfig, load_data
from aekit.eval.probes import finetune

ROOT = Path(__file__).resolve().parent.parent
FROZEN = ("linear", "knn20_cosine", "knn5_euclidean")


LIMIT: list[str] = []
"""`--limit N` for a smoke run: N training images everywhere (the figures need none)."""


def fashion(data_dir: str):
    spec = DataConfig(source="fashion-mnist", data_dir=data_dir, val_fraction=0)
    splits = load_data(spec)
    if LIMIT:
        return splits.train.subset(slice(0, int(LIMIT[1]))), splits.test
    return splits.train, splits.test


def pretrain(run: Path, seed: int, epochs: int, data_dir: str, *extra: str) -> float:
    argv = [
        *("train", "mae", "--data", "fashion-mnist", "--data-dir", data_dir, *LIMIT),
        *("--val-fraction", "0", "--epochs", str(epochs), "--seed", str(seed), *extra),
        *("--no-eval", "--no-report", "--no-progress", "--quiet", "--out", str(run)),
    ]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if aekit_cli(argv) != 0:
            raise SystemExit(f"aekit {' '.join(argv)} failed")
    return time.perf_counter() - start


def frozen_probes(run: Path) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        if aekit_cli(["eval", str(run), "--probe", "linear,knn", "--nll-k", "0"]) != 0:
            raise SystemExit(f"aekit eval {run} --probe failed")
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    keep = ("loss", "masked_mse", "loss_predict_zero", "loss_patch_mean")
    return {"probe": metrics["probe"], **{k: metrics[k] for k in keep}}


def tuned(model, train, test, rows, epochs: int, seed: int) -> dict:
    start = time.perf_counter()
    x, y = (train.x, train.y) if rows is None else (train.x[rows], train.y[rows])
    result = finetune(model, x, y, test.x, test.y, epochs=epochs, seed=seed)
    return {**result.to_dict(), "seconds": time.perf_counter() - start}


def subset_rows(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(1000 + seed))[:size]


def scratch_like(model, seed: int):
    torch.manual_seed(seed)
    return aekit.build(model.config)


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def part_finetune(args) -> None:
    train, test = fashion(args.data_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            run = Path(scratch) / f"mae-{seed}"
            seconds = pretrain(run, seed, args.epochs, args.data_dir)
            record = {"seed": seed, "pretrain_seconds": seconds, **frozen_probes(run)}
            model = aekit.load(run)
            subset = subset_rows(len(train), args.subset, seed)
            fresh = scratch_like(model, seed)
            for arm, net in (("pretrained", model), ("scratch", fresh)):
                record[arm] = {
                    "all": tuned(net, train, test, None, args.finetune_epochs, seed),
                    "subset": tuned(net, train, test, subset, args.subset_epochs, seed),
                }
            rows.append(record)
            print(json.dumps(record, indent=None)[:600], flush=True)
    floor = json.loads(Path(args.pixels_from).read_text())["pixels"] if args.pixels_from else None
    others = json.loads((ROOT / "benchmarks/results/peers-probes.json").read_text())
    markdown = finetune_table(rows, args, floor, others)
    print("\n" + markdown)
    payload = {
        "protocol": "Fashion-MNIST official split, no validation part; MAE pre-trained on the "
        "60,000 training images without labels; fine-tuned on all 60,000 labels and on a "
        f"random {args.subset:,} of them; scored on the 10,000 test images",
        "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "subset": args.subset,
        "subset_epochs": args.subset_epochs,
        "threads": args.threads,
        "seeds": rows,
        "table": markdown,
    }
    print(f"wrote {save_result('mae', payload)}")


def finetune_table(rows, args, floor, others) -> str:
    def cell(arm, budget):
        return mean_sd([r[arm][budget]["accuracy"] for r in rows])

    pre = statistics.mean(r["pretrain_seconds"] for r in rows)
    lines = [
        "| model | labelled images | fine-tuning epochs | test accuracy % |",
        "|---|---|---|---|",
        f"| ViT from scratch | 60,000 | {args.finetune_epochs} | {cell('scratch', 'all')} |",
        f"| MAE ({args.epochs} epochs, {pre:.0f} s) + fine-tuning | 60,000 | "
        f"{args.finetune_epochs} | {cell('pretrained', 'all')} |",
        f"| ViT from scratch | {args.subset:,} | {args.subset_epochs} | "
        f"{cell('scratch', 'subset')} |",
        f"| MAE ({args.epochs} epochs) + fine-tuning | {args.subset:,} | {args.subset_epochs} "
        f"| {cell('pretrained', 'subset')} |",
        "",
        "| frozen features | training | linear % | k-NN k=20 cosine % | k-NN k=5 Euclidean % |",
        "|---|---|---|---|---|",
    ]
    if floor:
        lines.append(
            "| raw pixels | - | "
            + " | ".join(mean_sd([floor["probes"][n]["accuracy"]]) for n in FROZEN)
            + " |"
        )
    cells = [mean_sd([r["probe"][n]["accuracy"] for r in rows]) for n in FROZEN]
    lines.append(f"| aekit mae | {args.epochs} epochs, {pre:.0f} s | " + " | ".join(cells) + " |")
    for recipe, runs in others["recipes"].items():
        seconds = statistics.mean(r["train_seconds"] for r in runs)
        cells = [mean_sd([r["probes"][n]["accuracy"] for r in runs]) for n in FROZEN]
        lines.append(
            f"| aekit {recipe} (benchmarks/probes.py) | {others['epochs']} epochs, "
            f"{seconds:.0f} s | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def part_sweep(args) -> None:
    train, test = fashion(args.data_dir)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for ratio in (float(r) for r in args.ratios.split(",")):
            run = Path(scratch) / f"mae-{ratio}"
            seconds = pretrain(run, 0, args.epochs, args.data_dir, "--mask-ratio", str(ratio))
            record = {"mask_ratio": ratio, "pretrain_seconds": seconds, **frozen_probes(run)}
            model = aekit.load(run)
            subset = subset_rows(len(train), args.subset, 0)
            record["subset"] = tuned(model, train, test, subset, args.subset_epochs, 0)
            rows.append(record)
            print(json.dumps(record)[:400], flush=True)
    lines = [
        f"| mask ratio | pre-training s | linear % | k-NN k=20 cosine % | fine-tuned on "
        f"{args.subset:,} % |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mask_ratio']:g} | {r['pretrain_seconds']:.0f} | "
            f"{100 * r['probe']['linear']['accuracy']:.1f} | "
            f"{100 * r['probe']['knn20_cosine']['accuracy']:.1f} | "
            f"{100 * r['subset']['accuracy']:.1f} |"
        )
    markdown = "\n".join(lines)
    print("\n" + markdown)
    payload = {
        "protocol": f"seed 0, {args.epochs} pre-training epochs per ratio; frozen probes fitted "
        f"on the 60,000 training codes; fine-tuning on a random {args.subset:,} labelled "
        f"images for {args.subset_epochs} epochs; 10,000 test images",
        "epochs": args.epochs,
        "threads": args.threads,
        "rows": rows,
        "table": markdown,
    }
    print(f"wrote {save_result('mae-sweep', payload)}")


def part_training(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for epochs in (int(e) for e in args.epochs_list.split(",")):
            run = Path(scratch) / f"mae-{epochs}"
            seconds = pretrain(run, 0, epochs, args.data_dir)
            rows.append({"epochs": epochs, "pretrain_seconds": seconds, **frozen_probes(run)})
            print(json.dumps(rows[-1])[:400], flush=True)
    lines = [
        "| pre-training epochs | seconds | linear % | k-NN k=20 cosine % | k-NN k=5 Euclidean % |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{100 * r['probe'][n]['accuracy']:.1f}" for n in FROZEN]
        lines.append(f"| {r['epochs']} | {r['pretrain_seconds']:.0f} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    print("\n" + markdown)
    payload = {
        "protocol": "seed 0, mae defaults; frozen probes fitted on the 60,000 training codes, "
        "scored on the 10,000 test images",
        "threads": args.threads,
        "rows": rows,
        "table": markdown,
    }
    print(f"wrote {save_result('mae-training', payload)}")


def part_speed(args) -> None:
    x = torch.rand(256, 1, 28, 28)
    results = {}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        sides = {}
        for ratio in (0.75, 0.0):
            torch.manual_seed(0)
            model = aekit.build("mae", (1, 28, 28), mask_ratio=ratio).train()
            optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)

            def step(model=model, optimiser=optimiser) -> float:
                start = time.perf_counter()
                out = model(x)
                optimiser.zero_grad(set_to_none=True)
                out.loss.backward()
                optimiser.step()
                return time.perf_counter() - start

            sides[f"mask {ratio:g}"] = step
        seconds = interleave(sides, args.turns)
        medians = {name: median_after_warmup(v) for name, v in seconds.items()}
        results[f"{threads} threads"] = {
            "images_per_second": {n: x.shape[0] / s for n, s in medians.items()},
            "speed-up of masking": medians["mask 0"] / medians["mask 0.75"],
            "seconds": seconds,
        }
        print(threads, {n: round(x.shape[0] / s) for n, s in medians.items()}, flush=True)
    payload = {
        "protocol": "one training step (forward, backward, AdamW) of the default mae on "
        f"a batch of 256 28x28 images, {args.turns} interleaved turns, medians after the first",
        "results": results,
    }
    print(f"wrote {save_result('mae-speed', payload)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("finetune", "sweep", "training", "speed"))
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=4, help="MAE pre-training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--subset", type=int, default=1000)
    parser.add_argument("--subset-epochs", type=int, default=30)
    parser.add_argument("--ratios", default="0.5,0.75,0.9")
    parser.add_argument("--epochs-list", default="1")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pixels-from", help="a results file with the raw pixels' probes")
    parser.add_argument("--limit", type=int, help="training images (a smoke run)")
    args = parser.parse_args()
    if args.limit:
        LIMIT.extend(["--limit", str(args.limit)])
    torch.set_num_threads(args.threads)
    parts = {"finetune": part_finetune, "sweep": part_sweep, "training": part_training}
    parts["speed"] = part_speed
    parts[args.part](args)


if __name__ == "__main__":
    main()
