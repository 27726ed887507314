"""Disentanglement on procedural dSprites (`--data dsprites`, a sub-grid): seven recipes,
three seeds, every metric of `aekit eval RUN --disentanglement` and the reconstruction, and
the published orderings checked (benchmarks/results/peers-disentanglement.json).

Protocol, the same for every model: the conv body, 10 latents (JointVAE: 6 continuous and
one 3-way categorical, Dupont 2018's dSprites latents), Bernoulli pixels, Adam at 1e-3 (QLAE:
AdamW, weight decay 0.1, its defining ingredient), batch 64, --epochs passes over the
training part (80 % of the sub-grid), `aekit train` defaults otherwise. Each recipe keeps its
paper's weights (beta-VAE beta 4, beta-TCVAE beta 6, FactorVAE gamma 35, mid-range of its
paper's sweep, with its discriminator at Adam 1e-4, (0.5, 0.9)); the annealed capacities
(beta-VAE-capacity, JointVAE) reach their final values at the end of the run, since their
papers' 100,000+ step schedules would stop at a few per cent here. Metrics: on the mean
codes of every image of the sub-grid, sample sizes of disentanglement_lib (10,000 / 5,000),
seed 0; reconstruction: the test part's -log p(x|z) (nats, one posterior draw) and MSE.

The orderings (the papers' claims, each judged beyond one sd of both sides):
    beta-TCVAE and FactorVAE above the VAE on MIG and the FactorVAE score;
    QLAE above beta-TCVAE on InfoM and InfoC.
Also MIG of every model under both code variants and with or without shape, side by side.

    python benchmarks/disentanglement.py --subset 2 --epochs 3 --seeds 0,1,2

A run per (recipe, seed) is saved as it finishes (benchmarks/results/
peers-disentanglement-runs.json) and skipped when the script is run again; `--tables-only`
prints the tables of the runs saved so far.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import RESULTS, save_result

from aekit.cli import main as aekit_cli
from aekit.io import atomic_write_json

RECIPES = {
    "vae": [],
    "beta-vae": [],
    "beta-vae-capacity": [],
    "factor-vae": ["--lr", "1e-3"],
    "beta-tcvae": [],
    "qlae": [],
    "jointvae": [
        *("--continuous-dim", "6", "--categories", "3", "--variables", "1"),
        *("--continuous-capacity", "40", "--categorical-capacity", "1.1", "--gamma", "150"),
    ],
}
"""Extra flags per recipe beyond the shared protocol (`--latent-dim 10` for all but JointVAE,
whose width is its latents')."""
ANNEALED = ("beta-vae-capacity", "jointvae")
RUNS = RESULTS / "peers-disentanglement-runs.json"
SCORES = {
    "beta_vae": "score",
    "factor_vae": "score",
    "mig": "mig",
    "dci_d": ("dci", "disentanglement"),
    "dci_c": ("dci", "completeness"),
    "dci_i": ("dci", "informativeness_test"),
    "sap": "sap",
    "infom": ("infomec", "infom"),
    "infoc": ("infomec", "infoc"),
    "infoe": ("infomec", "infoe"),
}


def score(metrics: dict, name: str) -> float:
    where = SCORES[name]
    section, key = (name, where) if isinstance(where, str) else where
    return float(metrics[section][key])


def run_cli(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        if aekit_cli(argv) != 0:
            raise SystemExit(f"aekit {' '.join(argv)} failed")


def one_run(recipe: str, seed: int, args, scratch: Path) -> dict:
    run = scratch / f"{recipe}-{seed}"
    steps = math.ceil(0.8 * args.images / 64) * args.epochs
    extra = list(RECIPES[recipe])
    if recipe != "jointvae":
        extra += ["--latent-dim", "10"]
    if recipe in ANNEALED:
        extra += ["--capacity-steps", str(steps)]
    argv = [
        *("train", recipe, "--data", "dsprites", "--subset", str(args.subset)),
        *("--epochs", str(args.epochs), "--seed", str(seed), "--batch-size", "64", *extra),
        *("--no-eval", "--no-report", "--no-progress", "--quiet", "--out", str(run)),
    ]
    start = time.perf_counter()
    run_cli(argv)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    run_cli(["eval", str(run), "--disentanglement", "--nll-k", "0", "--seed", "0"])
    eval_seconds = time.perf_counter() - start
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    factors = metrics.pop("disentanglement")
    return {
        "recipe": recipe,
        "seed": seed,
        "train_seconds": seconds,
        "eval_seconds": eval_seconds,
        "steps": steps,
        "reconstruction": {k: metrics[k] for k in ("nll", "mse") if k in metrics},
        "scores": {name: score(factors, name) for name in SCORES},
        "mig_variants": factors["mig_variants"],
        "sizes": {k: factors[k].get("num_train") for k in ("mig", "dci", "sap")},
    }


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], digits: int = 2) -> str:
    m, s = mean_sd(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def above(runs: dict, a: str, b: str, name: str) -> str:
    """'holds' when a's mean is above b's by more than one sd of each, 'reversed' when below
    by as much, else 'within noise'."""
    va = [r["scores"][name] for r in runs[a]]
    vb = [r["scores"][name] for r in runs[b]]
    (ma, sa), (mb, sb) = mean_sd(va), mean_sd(vb)
    verdict = "holds" if ma - sa > mb + sb else "reversed" if ma + sa < mb - sb else "within noise"
    return f"{a} {ma:.3f} vs {b} {mb:.3f} on {name}: {verdict}"


def tables(runs: dict) -> str:
    names = list(SCORES)
    lines = [
        "| model | " + " | ".join(names) + " | test nll (nats) | test MSE | train s |",
        "|---|" + "---|" * (len(names) + 3),
    ]
    for recipe, rows in runs.items():
        cells = [fmt([r["scores"][n] for r in rows]) for n in names]
        nll = fmt([r["reconstruction"]["nll"] for r in rows], 1)
        mse = fmt([r["reconstruction"]["mse"] for r in rows], 4)
        seconds = statistics.mean(r["train_seconds"] for r in rows)
        lines.append(f"| {recipe} | " + " | ".join(cells) + f" | {nll} | {mse} | {seconds:.0f} |")
    variants = [(v["codes"], v["factors"]) for v in next(iter(runs.values()))[0]["mig_variants"]]
    lines += [
        "",
        "| model | "
        + " | ".join(f"MIG ({c} codes, {'all factors' if f == 'all' else f})" for c, f in variants)
        + " |",
        "|---|" + "---|" * len(variants),
    ]
    for recipe, rows in runs.items():
        cells = [fmt([r["mig_variants"][i]["mig"] for r in rows], 3) for i in range(len(variants))]
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def orderings(runs: dict) -> list[str]:
    checks = [
        ("beta-tcvae", "vae", "mig"),
        ("beta-tcvae", "vae", "factor_vae"),
        ("factor-vae", "vae", "mig"),
        ("factor-vae", "vae", "factor_vae"),
        ("qlae", "beta-tcvae", "infom"),
        ("qlae", "beta-tcvae", "infoc"),
    ]
    return [above(runs, a, b, n) for a, b, n in checks if a in runs and b in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="train nothing: the tables and orderings of the runs saved so far",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from aekit.data.dsprites import FactorGrid

    args.images = len(FactorGrid(args.subset))
    done = json.loads(RUNS.read_text()) if RUNS.is_file() else {"runs": []}
    key = {"subset": args.subset, "epochs": args.epochs}
    if done.get("settings", key) != key:
        raise SystemExit(f"{RUNS} holds runs of {done['settings']}; move it away first")
    recipes = args.recipes.split(",")
    seeds = [] if args.tables_only else [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            for recipe in recipes:
                if any(r["recipe"] == recipe and r["seed"] == seed for r in done["runs"]):
                    continue
                record = one_run(recipe, seed, args, Path(scratch))
                done["runs"].append(record)
                atomic_write_json(RUNS, {"settings": key, "runs": done["runs"]})
                print(json.dumps(record)[:300], flush=True)
    runs = {r: [x for x in done["runs"] if x["recipe"] == r] for r in recipes}
    runs = {r: rows for r, rows in runs.items() if rows}
    markdown = tables(runs)
    verdicts = orderings(runs)
    print("\n" + markdown + "\n\n" + "\n".join(verdicts))
    payload = {
        "protocol": __doc__.split("\n\n")[1],
        "subset": args.subset,
        "images": args.images,
        "epochs": args.epochs,
        "threads": args.threads,
        "runs": done["runs"],
        "table": markdown,
        "orderings": verdicts,
    }
    print(f"wrote {save_result('disentanglement', payload)}")


if __name__ == "__main__":
    main()
