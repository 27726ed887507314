"""aekit vs the `autoencoders` package (PyPI 0.6.8) vs a hand-written loop: VAE, VQ-VAE and
FSQ on binarised Fashion-MNIST, training epoch time and test reconstruction.

Every side trains on the same data, the full Fashion-MNIST training set (60,000 images,
dynamically binarised, x_bin = rand < x, every batch; aekit's Trainer does the same), in
batches of 100, with Adam at lr 1e-3; the test set is the 10,000 test images binarised once
(aekit's `load_data`). The sides' epochs are interleaved A B C A B C...: aekit's Trainer
runs its epoch, then its callback runs one epoch of the peer and one of the hand loop
(`benchmarks/peers/handloop.py`, on a deep copy of the aekit model). The first epoch of
each side is warm-up; the figures are ratios of the median epoch times of the rest.

- aekit: `aekit.build(recipe, (1, 28, 28), latent, body="mlp", hidden=(512, 256))`, its
  recipe's objective (Bernoulli likelihood), trained by `aekit.Trainer`.
- autoencoders: its MLP model of each family, trained by its own trainer (`VAETrainer` /
  `VQTrainer` `.train_epoch`, called once per epoch; its per-batch terminal progress line
  is silenced, every metric it computes per batch is still computed). Its only
  reconstruction losses are mean squared error and L1 (mean over pixels): it trains with
  MSE on the same binarised images; aekit and the hand loop keep aekit's Bernoulli
  likelihood (handloop.py implements that one). The loss is a negligible part of an epoch's
  work next to the 784-512-256 networks, so the times compare; the objectives do not.
- hand: handloop.HAND_LOOPS[recipe] (textbook loop, aekit's maths, no trainer).

Network shapes (the peer's MLP backbone leaves its last hidden layer linear, and adds a
linear projection to and from the latent):

- VAE: aekit encoder 784-512-256-(2 x 16), decoder 16-256-512-784, ReLU between every
  layer. Peer: encoder 784-512-ReLU-256, then mean and log-variance heads 256-16; decoder
  given explicitly as an MLP 16-256-ReLU-512-ReLU-784 (aekit's). The same layers and
  FLOPs, one ReLU fewer (after the encoder's 256 layer); it also builds latent projections
  256-16 and 16-256 that its VAE never uses (no gradients). Peer defaults kept: free_bits
  0.02 nats per latent dimension (a clamped KL term) and kl_weight 1 on a per-pixel MEAN
  squared error, so its KL weighs 784x more against the reconstruction than in an ELBO
  with a unit-variance Gaussian.
- VQ-VAE: one code vector of 16 dimensions per image, codebook of 512, commitment 0.25,
  the codebook loss (no EMA) on both sides. Peer: its VQ models need a rank-2 latent, so
  the images are fed as (1, 784) sequences; encoder 784-512-ReLU-256 and a linear
  projection 256-16, decoder a linear projection 16-256 and 256-512-ReLU-784 (derived
  from the encoder): aekit's layers with one ReLU fewer on each side; nearest-code
  assignment; its losses are means over the code's elements, aekit's sums. Peer init:
  codebook uniform in +-1/512 (aekit: its own default).
- FSQ: 4 dimensions of 8 levels (4,096 codes) on both sides (the peer has one level count
  for every dimension, so aekit is given levels 8,8,8,8 rather than its default 8,5,5,5);
  the peer's layers as for its VQ-VAE with a 4-wide projection. aekit bounds with tanh
  before rounding (Mentzer et al.); the peer snaps the unbounded projection to the
  nearest of 8 levels in [-1, 1] with a straight-through gradient and adds a
  0.25-weighted commitment MSE.

Test figures, each library's own and one common one: aekit's test ELBO (VAE; nats,
1 posterior draw, analytic KL) or test reconstruction NLL (Bernoulli, nats per image); the
peer's own test loss (its objective) and terms; and for every side the per-pixel MSE of the
reconstruction mean against the binarised test image (aekit: Bernoulli means at the
posterior mean / the code; peer: its reconstruction in eval mode, which uses the posterior
mean), the one figure measured alike.

    flock /tmp/bench.lock python benchmarks/peers/vs_autoencoders.py --threads 2
    flock /tmp/bench.lock python benchmarks/peers/vs_autoencoders.py --threads 1
    python benchmarks/peers/vs_autoencoders.py --quick     # ~1 min smoke run

Writes benchmarks/results/peers-autoencoders-{2,1}t.json (common.save_result) and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import median_after_warmup, peer_module, save_result  # noqa: E402
from handloop import HAND_LOOPS  # noqa: E402

import aekit  # noqa: E402
from aekit.data import DataConfig, load_data  # noqa: E402

MODELS = ("vae", "vqvae", "fsq")
AEKIT = {
    "vae": ("vae", 16, {}),
    "vqvae": ("vqvae", 16, {"codebook_size": 512, "code_dim": 16, "commitment": 0.25}),
    "fsq": ("fsq", 4, {"levels": (8, 8, 8, 8)}),
}
BATCH = 100
LR = 1e-3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- the peer


def peer_model(name: str):
    """The peer's model of this family and its trainer class; `shape` is what its
    `sample_spec` says one example is."""
    import autoencoders as ae
    from autoencoders.data.base import TensorSpec
    from autoencoders.training.trainer import VAETrainer, VQTrainer

    mlp = {"encoder": "mlp", "encoder_config": {"hidden_dims": [512, 256]}}
    if name == "vae":
        config = ae.VariationalAutoencoderConfig(latent_dim=16)
        shape = (784,)
        # Its decoder cannot be derived from the encoder here: given, aekit's 16-256-512-784.
        decoder = {"decoder": "mlp", "decoder_config": {"hidden_dims": [256, 512, 784]}}
        model = ae.VariationalAutoencoderModel(
            config=config, sample_spec=TensorSpec(shape), **mlp, **decoder
        )
        return model, VAETrainer, shape
    if name == "vqvae":
        config = ae.VectorQuantizedAutoencoderConfig(
            latent_dim=16, codebook_size=512, commitment_weight=0.25
        )
        shape = (1, 784)
        model = ae.VectorQuantizedAutoencoderModel(
            config=config, sample_spec=TensorSpec(shape), **mlp
        )
        return model, VQTrainer, shape
    if name == "fsq":
        config = ae.FiniteScalarQuantizedAutoencoderConfig(latent_dim=4, num_levels=8)
        shape = (784,)
        model = ae.FiniteScalarQuantizedAutoencoderModel(
            config=config, sample_spec=TensorSpec(shape), **mlp
        )
        return model, VQTrainer, shape
    raise ValueError(name)


def quiet_display():
    """The peer trainer's display with its per-batch live terminal line switched off."""
    from autoencoders.training.display import TrainerDisplay

    class Quiet(TrainerDisplay):
        def write_live_line(self, text: str) -> None:
            pass

    return Quiet()


class Loader:
    """Sized iterable of batches for the peer's trainer: a seeded shuffle of x, each batch
    binarised afresh (rand < x) when `binarize`, reshaped to the peer's example shape."""

    def __init__(self, x, shape, batch_size, generator, binarize=True, shuffle=True) -> None:
        self.x, self.shape, self.batch_size = x, shape, batch_size
        self.generator, self.binarize, self.shuffle = generator, binarize, shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(0, n, self.batch_size):
            xb = self.x[order[i : i + self.batch_size]]
            if self.binarize:
                xb = (torch.rand(xb.shape, generator=self.generator) < xb).float()
            yield xb.reshape(len(xb), *self.shape)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- one family


def run_family(name: str, splits: Any, args: argparse.Namespace, peer: bool) -> dict[str, Any]:
    recipe, latent, options = AEKIT[name]
    torch.manual_seed(args.seed)
    model = aekit.build(
        recipe, splits.train.shape, latent, body="mlp", hidden=(512, 256), **options
    )
    hand_model = copy.deepcopy(model)
    hand_opt = torch.optim.Adam(hand_model.parameters(), lr=LR)
    hand_gen = torch.Generator().manual_seed(args.seed + 1)
    x_train = splits.train.x

    sides: dict[str, list[float]] = {"aekit": [], "hand": []}
    peer_trainer = peer_net = None
    if peer:
        torch.manual_seed(args.seed)
        peer_net, trainer_class, shape = peer_model(name)
        from autoencoders.training.trainer import TrainingConfig

        peer_args = TrainingConfig(
            output_dir=str(Path(args.tmp) / name),
            epochs=args.epochs,
            learning_rate=LR,
            optimizer_name="adam",
            batch_size=BATCH,
            device="cpu",
            seed=args.seed,
        )
        peer_trainer = trainer_class(peer_net, peer_args, display=quiet_display())
        peer_trainer.configure_optimizers_for_fit(total_train_batches=600, max_epochs=None)
        peer_loader = Loader(x_train, shape, BATCH, torch.Generator().manual_seed(args.seed + 2))
        sides["autoencoders"] = []

    def interleave(trainer, record) -> None:
        if peer_trainer is not None:
            peer_trainer.on_epoch_start(len(sides["autoencoders"]) + 1)
            start = time.perf_counter()
            peer_trainer.train_epoch(peer_loader)
            sides["autoencoders"].append(time.perf_counter() - start)
        sides["hand"].append(HAND_LOOPS[recipe](hand_model, hand_opt, x_train, BATCH, hand_gen))

    config = aekit.TrainConfig(
        epochs=args.epochs,
        batch_size=BATCH,
        lr=LR,
        seed=args.seed,
        progress=False,
        device="cpu",
        nll_k=0,
    )
    result = aekit.Trainer(model, splits.train, None, config, callbacks=[interleave]).fit()
    sides["aekit"] = [r["train_seconds"] for r in result.history]

    med = {side: median_after_warmup(s) for side, s in sides.items()}
    out: dict[str, Any] = {
        "aekit_recipe": recipe,
        "aekit_options": {"latent_dim": latent, "body": "mlp", "hidden": [512, 256], **options},
        "parameters": {"aekit": parameters(model)},
        "epoch_seconds": sides,
        "median_epoch_seconds": med,
        "ratio_aekit_over_hand": med["aekit"] / med["hand"],
    }
    if peer_trainer is not None:
        out["ratio_autoencoders_over_aekit"] = med["autoencoders"] / med["aekit"]
        out["parameters"]["autoencoders"] = parameters(peer_net)

    test = {}
    for side, m in (("aekit", model), ("hand", hand_model)):
        t = aekit.evaluate(m, splits.test, detailed=False)
        test[side] = {k: v for k, v in t.items() if isinstance(v, (int, float))}
    if peer_trainer is not None:
        loader = Loader(splits.test.x, shape, 1000, None, binarize=False, shuffle=False)
        t = peer_trainer.evaluate(loader)
        test["autoencoders"] = {k: float(v) for k, v in t.items()}
        test["autoencoders"]["mse"] = t["reconstruction_loss"]
    out["test"] = test
    out["test_metric_notes"] = {
        "aekit/hand": "aekit.evaluate on the binarised test set: elbo (VAE, nats, 1 draw, "
        "analytic KL) or nll (Bernoulli reconstruction, nats per image) and the terms; mse = "
        "per-pixel MSE of the Bernoulli mean",
        "autoencoders": "its trainer's evaluate on the same binarised test set (eval mode: "
        "posterior mean): loss = its training objective; reconstruction_loss = mse = "
        "per-pixel MSE of its reconstruction",
    }
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, help="epochs per side (default 5; quick 2)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir", default="/work/shared/data/fashion-mnist")
    p.add_argument("--limit", type=int, help="training images (default all; quick 3,000)")
    p.add_argument("--quick", action="store_true", help="a ~1 min smoke run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default="/tmp/vs_autoencoders", help="scratch for the peer")
    args = p.parse_args()
    if args.epochs is None:
        args.epochs = 2 if args.quick else 5
    if args.limit is None and args.quick:
        args.limit = 3000
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {MODELS}")
    torch.set_num_threads(args.threads)
    peer = peer_module("autoencoders", "autoencoders") is not None

    splits = load_data(
        DataConfig(source=args.data, data_dir=args.data_dir, binarize=True, val_fraction=0.0)
    )
    if args.limit:
        splits.train.x = splits.train.x[: args.limit]
        if splits.train.y is not None:
            splits.train.y = splits.train.y[: args.limit]
    log(
        f"{args.data}: {len(splits.train):,} training, {len(splits.test):,} test images; "
        f"{args.epochs} epochs per side, batch {BATCH}, {args.threads} thread(s)"
    )
    results = {}
    for name in models:
        log(f"{name}: interleaved epochs (aekit, {'autoencoders, ' if peer else ''}hand)")
        results[name] = run_family(name, splits, args, peer)
        r = results[name]
        log(
            "  median epoch s: "
            + ", ".join(f"{s} {v:.2f}" for s, v in r["median_epoch_seconds"].items())
        )

    lines = [
        f"Epoch times, {args.threads} thread(s), {args.epochs} epochs per side (first dropped), "
        "medians:",
        "",
        "| model | aekit s | hand s | autoencoders s | aekit / hand | autoencoders / aekit | "
        "test MSE aekit | test MSE hand | test MSE autoencoders | aekit own | peer own |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        med, test = r["median_epoch_seconds"], r["test"]
        own = test["aekit"].get("elbo")
        own_label = f"ELBO {own:.2f}" if own is not None else f"NLL {test['aekit']['nll']:.2f}"
        peer_s = f"{med['autoencoders']:.2f}" if "autoencoders" in med else "-"
        peer_ratio = f"{r['ratio_autoencoders_over_aekit']:.2f}" if "autoencoders" in med else "-"
        peer_mse = f"{test['autoencoders']['mse']:.4f}" if "autoencoders" in test else "-"
        peer_own = f"loss {test['autoencoders']['loss']:.4f}" if "autoencoders" in test else "-"
        lines.append(
            f"| {name} | {med['aekit']:.2f} | {med['hand']:.2f} | {peer_s} | "
            f"{r['ratio_aekit_over_hand']:.2f} | {peer_ratio} | {test['aekit']['mse']:.4f} | "
            f"{test['hand']['mse']:.4f} | {peer_mse} | {own_label} | {peer_own} |"
        )
    table = "\n".join(lines)
    print("\n" + table + "\n")
    suffix = "-quick" if args.quick else ""
    path = save_result(
        f"autoencoders-{args.threads}t{suffix}",
        {
            "data": args.data,
            "train_images": len(splits.train),
            "test_images": len(splits.test),
            "batch_size": BATCH,
            "lr": LR,
            "epochs": args.epochs,
            "threads": args.threads,
            "peer_skipped": not peer,
            "models": results,
            "table": table,
        },
    )
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
