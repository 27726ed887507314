"""Tighter bounds, richer priors and Wasserstein autoencoders side by side, one table.

Every model has the same MLP networks (784-200-200-D and back, tanh-free ReLU bodies), the
same optimiser, batch size and number of epochs, on dynamically binarised data:

- Fashion-MNIST: the official 60,000/10,000 split (no validation split: the last epoch counts)
- MNIST: the 10,000 images of ../shared/data/mnist split 9,000 / 1,000 with split seed 0

Columns: test -log p(x) by importance sampling (k draws per example, on the first `nll_n`
test images), the test ELBO (1 draw, analytic or Monte-Carlo KL), active units, the
FD-classifier of 1,000 samples and of 1,000 reconstructions against the grey-level test
images (Fréchet distance in the feature space of a small classifier trained on the training
labels; NOT an Inception FID), and the training wall time as a ratio to the VAE's in the
same run (absolute seconds are in the JSON).

    python benchmarks/bounds.py --data-root ../shared/data --epochs-fashion 5 --epochs-mnist 20

Writes benchmarks/results/bounds.json and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import aekit
from aekit.data import DataConfig, TensorData, load_data
from aekit.eval import evaluate, importance_sampled_nll
from aekit.eval.classifier import cached_classifier
from aekit.eval.generation import generation_metrics
from aekit.latent_density import fit_for_model
from aekit.train import TrainConfig, Trainer

MODELS: dict[str, tuple[str, dict]] = {
    "VAE": ("vae", {}),
    "IWAE k=5": ("iwae", {"k": 5}),
    "IWAE k=50": ("iwae", {"k": 50}),
    "MIWAE 8x8": ("miwae", {"m": 8, "k": 8}),
    "CIWAE k=64 b=0.5": ("ciwae", {"k": 64, "beta": 0.5}),
    "PIWAE 8x8": ("piwae", {"m": 8, "k": 8}),
    "VampPrior": ("vamp", {}),
    "WAE-MMD": ("wae-mmd", {}),
    "SWAE": ("swae", {}),
    "RAE": ("rae", {}),
}


def datasets(root: Path) -> dict[str, DataConfig]:
    return {
        "fashion-mnist": DataConfig(
            source="fashion-mnist",
            data_dir=str(root / "fashion-mnist"),
            binarize=True,
            val_fraction=0.0,
        ),
        "mnist-10k": DataConfig(
            source="mnist",
            data_dir=str(root / "mnist"),
            binarize=True,
            val_fraction=0.0,
            test_fraction=0.1,
            split_seed=0,
        ),
    }


def run_one(name, recipe, options, splits, grey_test, classifier, args, epochs) -> dict:
    torch.manual_seed(0)
    model = aekit.build(
        recipe, splits.train.shape, args.latent_dim, body="mlp", hidden=(200, 200), **options
    )
    config = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=1e-3, seed=0, progress=False)
    start = time.perf_counter()
    Trainer(model, splits.train, None, config).fit()
    seconds = time.perf_counter() - start
    if not model.has_prior:
        fixed = TensorData.binarized_once(splits.train, seed=4)
        model.latent_density = fit_for_model(model, fixed)
    test = splits.test
    row = {"model": name, "recipe": recipe, "options": options, "train_seconds": seconds}
    metrics = evaluate(model, test, detailed=True, seed=0)
    row.update(
        elbo=metrics.get("elbo"),
        active_units=metrics["active_units"],
        latent_dim=args.latent_dim,
        mse=metrics["mse"],
    )
    if model.bottleneck.has_density:
        head = test.subset(slice(0, args.nll_n))
        start = time.perf_counter()
        nll = importance_sampled_nll(model, head, k=args.nll_k, seed=0)
        row.update(nll, nll_seconds=time.perf_counter() - start)
    # Samples and reconstructions are Bernoulli means (grey levels): they are compared with
    # the grey-level test images the binary ones were drawn from.
    gen = generation_metrics(model, grey_test, classifier, n=1000, seed=0)
    row.update(
        fd_samples=gen.get("fd_classifier_samples"),
        fd_reconstructions=gen["fd_classifier_reconstructions"],
        precision_samples=gen.get("precision_samples"),
        recall_samples=gen.get("recall_samples"),
        classifier_accuracy=gen.get("classifier_accuracy"),
    )
    print(json.dumps(row), flush=True)
    return row


def fmt(value, digits=2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict], k: int) -> str:
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        subset = [r for r in rows if r["data"] == data]
        vae = next((r["train_seconds"] for r in subset if r["model"] == "VAE"), None)
        lines += [
            f"**{data}** ({subset[0]['epochs']} epochs, NLL on {subset[0]['marginal_nll_n']} "
            f"test images)",
            "",
            f"| model | test NLL (k={k}) | test ELBO | active units | FD-classifier samples "
            "| FD-classifier recon. | train time / VAE |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in subset:
            nll = (
                f"{r['marginal_nll']:.2f} ± {r['marginal_nll_stderr']:.2f}"
                if "marginal_nll" in r
                else "—"
            )
            ratio = r["train_seconds"] / vae if vae else None
            lines.append(
                f"| {r['model']} | {nll} | {fmt(r['elbo'])} | {r['active_units']}/"
                f"{r['latent_dim']} | {fmt(r['fd_samples'])} | {fmt(r['fd_reconstructions'])} "
                f"| {fmt(ratio)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs-fashion", type=int, default=2)
    parser.add_argument("--epochs-mnist", type=int, default=5)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--nll-k", type=int, default=5000)
    parser.add_argument("--nll-n", type=int, default=1000)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--datasets", nargs="*", default=["mnist-10k", "fashion-mnist"])
    parser.add_argument("--out", default="benchmarks/results/bounds.json")
    args = parser.parse_args()
    root = Path(args.data_root)
    rows = []
    out = Path(args.out)
    for data_name in args.datasets:
        spec = datasets(root)[data_name]
        splits = load_data(spec)  # test binarised once, training batches re-binarised
        epochs = args.epochs_fashion if data_name == "fashion-mnist" else args.epochs_mnist
        grey = load_data(DataConfig(**{**spec.to_dict(), "binarize": False}))
        classifier = cached_classifier(grey.train.x, grey.train.y, name=f"bench-{data_name}")
        for name in args.models:
            recipe, options = MODELS[name]
            row = run_one(name, recipe, options, splits, grey.test, classifier, args, epochs)
            row.update(data=data_name, epochs=epochs, threads=torch.get_num_threads())
            rows.append(row)
            out.parent.mkdir(parents=True, exist_ok=True)
            meta = {
                "command": "python benchmarks/bounds.py "
                + " ".join(
                    f"--{k.replace('_', '-')} {v}"
                    for k, v in vars(args).items()
                    if k not in ("models", "datasets", "out")
                ),
                "torch": torch.__version__,
                "aekit": aekit.__version__,
                "machine": platform.processor() or platform.machine(),
            }
            out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(table(rows, args.nll_k))


if __name__ == "__main__":
    main()
