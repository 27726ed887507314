"""aekit vs Pythae vs a hand-written loop: training epoch time and importance-sampled -log p(x).

Reference model: MLP 784-512-256-16 (ReLU) encoder and the mirrored decoder, dynamically
binarised Fashion-MNIST (60k train / 10k test), batch 100, Adam lr 1e-3. Models: VAE, IWAE
(k=5), VQ-VAE, WAE-MMD, RAE. Each side trains its own copy of the SAME initial weights:

- aekit: `aekit.build(recipe, (1, 28, 28), 16, body="mlp", hidden=(512, 256))` trained by
  `aekit.Trainer`; its epoch time is the trainer's own `train_seconds`.
- hand:  `handloop.HAND_LOOPS[recipe]` (benchmarks/peers/handloop.py) on a deep copy of the
  aekit model's initial modules: the textbook loop, the framework-overhead floor.
- Pythae: the model class with custom `BaseEncoder` / `BaseDecoder` subclasses wrapping deep
  copies of the same initial `nn.Sequential` bodies; the decoder ends in a sigmoid (Pythae's
  losses take probabilities). Trained by Pythae's `BaseTrainer`: `prepare_training()` once
  (optimizer, output folder, callbacks; untimed), then per turn `BaseTrainer.train_step(epoch)`,
  the method that runs one epoch through Pythae's own Dataset / DataLoader (per-example
  `__getitem__` + collate), per-step `loss.item()`, NaN check, progress-bar callback and the
  end-of-epoch `model.update()`. The timed region also includes re-binarising Pythae's whole
  training tensor in one vectorised draw (aekit and the hand loop binarise each batch in
  their timed loops; Pythae has no dynamic binarisation). Not timed for Pythae: its
  per-epoch best-model deepcopy, evaluation, checkpoint saving and logging in `train()`.

Turns alternate aekit, hand, Pythae (A B C A B C...), one epoch each (or each a fixed subset
of the training set with --examples); the first turn of each side is warm-up and dropped;
figures are ratios of median epoch times.

Pythae differs from aekit's recipes where it allows no match (recorded in the JSON):
- VQ-VAE, WAE-MMD, RAE: Pythae's reconstruction loss is the summed squared error only (no
  Bernoulli option); aekit uses the Bernoulli likelihood. The decoder costs the same.
- VQ-VAE: Pythae's commitment and codebook losses are means over the vector's dimensions
  (aekit: sums, i.e. Pythae's terms are 1/16 of aekit's here); its codebook starts uniform in
  +-1/K (aekit: N(0, 1)). K=512, beta=0.25, one 16-dim code vector per image in both.
- WAE-MMD: same IMQ kernel, scales (0.1..10) and C = 2 D var; Pythae's default weight is 3e-2,
  set here to aekit's 10; Pythae builds the (B, B, D) difference tensor for the distances.
- RAE: Pythae's RAE_GP penalises |d sum(recon) / d x|^2, the gradient of the whole autoencoder
  with respect to the INPUT (aekit: the decoder Jacobian at z, |J_D(z)^T v|^2); same weights
  (embedding 1e-4, penalty 1e-7).
- IWAE: Pythae minimises -sum_s sg(w~_s) log w_s (the same gradient as the IWAE bound, not the
  bound's value); k=5 in both.
- get_nll: Pythae's estimator loops over examples one at a time, re-encodes `batch_size`
  copies of the example for every block of draws, runs with autograd on (no no_grad),
  does not binarise, uses n_samples // batch_size blocks, and returns the mean log p(x)
  (the sign is flipped here).

Commands behind the reported figures (each under the benchmark lock, < 10 min; every turn is
a fixed 20,000-image subset of the training set, 200 steps, so that 8 turns of 3 sides x 5
models fit; the first turn is dropped, medians over 7):

    flock /tmp/bench.lock python benchmarks/peers/vs_pythae.py --threads 2 --examples 20000 \
        --epochs 8
    flock /tmp/bench.lock python benchmarks/peers/vs_pythae.py --threads 1 --examples 20000 \
        --epochs 8 --models vae,iwae,vqvae
    flock /tmp/bench.lock python benchmarks/peers/vs_pythae.py --threads 1 --examples 20000 \
        --epochs 8 --models wae-mmd,rae
    flock /tmp/bench.lock python benchmarks/peers/vs_pythae.py --threads 2 --models vae \
        --epochs 3 --skip-hand --nll-k 5000 --nll-n 100 --nll-turns 10 \
        --pythae-nll-batch 100,5000 --timing-name none
    (the last again with --models iwae)

The NLL runs train aekit and Pythae for 3 full epochs (60k images), then: each library's
estimator on its own trained model over the first 100 test images (binarised once by aekit's
loader; Pythae's estimator at the largest batch size given) for the values; then, for the
speed, both estimators on the SAME weights (a Pythae model holding aekit's trained encoder and
decoder bodies) over the same 100 images in 10 interleaved blocks of 10 (aekit, Pythae at
get_nll batch_size 100 = its default, Pythae at batch_size 5000 = all draws of an image in one
pass, its fastest), first block dropped, ratio of median seconds per image.

Writes benchmarks/results/peers-pythae-<T>t[-<models>].json (timing) and
peers-pythae-nll[-<models>].json (NLL), and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median_after_warmup, peer_module, save_result
from handloop import HAND_LOOPS

import aekit
from aekit.data import DataConfig, TensorData, load_data
from aekit.eval import importance_sampled_nll

MODELS = ("vae", "iwae", "vqvae", "wae-mmd", "rae")
TARGET_MODELS = ("vae", "iwae", "vqvae", "wae-mmd")
"""The models whose aekit/hand ratio has a target (<= 1.10)."""
TARGET = 1.10
SHAPE = (1, 28, 28)
LATENT = 16
HIDDEN = (512, 256)
AEKIT_OPTIONS = {
    "vae": {},
    "iwae": {"k": 5},
    "vqvae": {"code_dim": LATENT},  # one 16-dim code vector per image, as Pythae on flat codes
    "wae-mmd": {},
    "rae": {},
}
MISMATCHES = {
    "vae": "none in the maths (Pythae: BCE on sigmoid probabilities, aekit: on logits)",
    "iwae": "Pythae's loss value is -sum_s sg(w~_s) log w_s (same gradient as the bound)",
    "vqvae": "Pythae: MSE reconstruction; commitment/codebook losses are means over the 16 "
    "dims (aekit sums); codebook init U(-1/K, 1/K) (aekit N(0,1))",
    "wae-mmd": "Pythae: MSE reconstruction; reg_weight set to 10 (its default 3e-2); kernel "
    "IMQ, same scales and C = 2 D",
    "rae": "Pythae RAE_GP: MSE reconstruction; gradient penalty |d sum(recon)/dx|^2 w.r.t. the "
    "input (aekit: decoder Jacobian at z); same weights 1e-4 / 1e-7",
}


def build_aekit(name: str, seed: int):
    torch.manual_seed(seed)
    return aekit.build(name, SHAPE, LATENT, body="mlp", hidden=HIDDEN, **AEKIT_OPTIONS[name])


def pythae_parts(pythae):
    """Encoder/decoder classes wrapping an aekit body (an nn.Sequential) for Pythae."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, net: torch.nn.Module, gaussian: bool) -> None:
            BaseEncoder.__init__(self)
            self.net, self.gaussian = net, gaussian

        def forward(self, x):
            h = self.net(x.flatten(1))
            if self.gaussian:
                mu, logvar = h.chunk(2, dim=-1)
                return ModelOutput(embedding=mu, log_covariance=logvar)
            return ModelOutput(embedding=h)

    class Decoder(BaseDecoder):
        def __init__(self, net: torch.nn.Module) -> None:
            BaseDecoder.__init__(self)
            self.net = net

        def forward(self, z):
            logits = self.net(z)
            return ModelOutput(reconstruction=torch.sigmoid(logits).view(z.shape[0], *SHAPE))

    return Encoder, Decoder


def build_pythae(pythae, name: str, aekit_model):
    """The Pythae model of `name` on deep copies of the aekit model's bodies."""
    from pythae import models as pm

    Encoder, Decoder = pythae_parts(pythae)
    gaussian = name in ("vae", "iwae")
    encoder = Encoder(copy.deepcopy(aekit_model.encoder.net), gaussian)
    decoder = Decoder(copy.deepcopy(aekit_model.decoder.net))
    common = {"input_dim": SHAPE, "latent_dim": LATENT}
    if name == "vae":
        config = pm.VAEConfig(**common, reconstruction_loss="bce")
        return pm.VAE(config, encoder=encoder, decoder=decoder), config
    if name == "iwae":
        k = aekit_model.objective.options.k
        config = pm.IWAEConfig(**common, reconstruction_loss="bce", number_samples=k)
        return pm.IWAE(config, encoder=encoder, decoder=decoder), config
    if name == "vqvae":
        vq = aekit_model.bottleneck.options
        config = pm.VQVAEConfig(
            **common,
            commitment_loss_factor=vq.commitment,
            quantization_loss_factor=1.0,
            num_embeddings=vq.codebook_size,
            use_ema=False,
        )
        return pm.VQVAE(config, encoder=encoder, decoder=decoder), config
    if name == "wae-mmd":
        from aekit.objectives.matching import IMQ_SCALES

        config = pm.WAE_MMD_Config(
            **common,
            kernel_choice="imq",
            reg_weight=aekit_model.objective.options.mmd_weight,
            kernel_bandwidth=1.0,
            scales=list(IMQ_SCALES),
        )
        return pm.WAE_MMD(config, encoder=encoder, decoder=decoder), config
    if name == "rae":
        o = aekit_model.objective.options
        config = pm.RAE_GP_Config(
            **common, embedding_weight=o.embedding_weight, reg_weight=o.regulariser_weight
        )
        return pm.RAE_GP(config, encoder=encoder, decoder=decoder), config
    raise ValueError(name)


class PythaeSide:
    """Pythae's BaseTrainer, driven one epoch (`train_step`) per turn."""

    def __init__(self, pythae, model, x: torch.Tensor, y: torch.Tensor, args, out_dir: str):
        from pythae.data.datasets import BaseDataset
        from pythae.trainers import BaseTrainer, BaseTrainerConfig

        self.x = x
        self.generator = torch.Generator().manual_seed(args.seed + 2)
        self.dataset = BaseDataset(self.binarised(), y)
        config = BaseTrainerConfig(
            output_dir=out_dir,
            per_device_train_batch_size=args.batch_size,
            num_epochs=args.epochs,
            learning_rate=args.lr,
            optimizer_cls="Adam",
            steps_saving=None,
            no_cuda=True,
            seed=args.seed,
        )
        self.trainer = BaseTrainer(model, train_dataset=self.dataset, training_config=config)
        self.trainer.prepare_training()  # seed, optimizer, output folder, callbacks: untimed
        self.epoch = 0
        self.losses: list[float] = []

    def binarised(self) -> torch.Tensor:
        return (torch.rand(self.x.shape, generator=self.generator) < self.x).float()

    def __call__(self) -> float:
        t = self.trainer
        self.epoch += 1
        handler, config = t.callback_handler, t.training_config
        handler.on_epoch_begin(training_config=config, epoch=self.epoch)
        start = time.perf_counter()
        self.dataset.data = self.binarised()
        loss = t.train_step(self.epoch)
        seconds = time.perf_counter() - start
        handler.on_epoch_end(training_config=config)
        self.losses.append(float(loss))
        return seconds

    @property
    def model(self):
        return self.trainer.model


def train_one(name: str, pythae, train: TensorData, args) -> dict:
    """Interleaved epochs of aekit, the hand loop and Pythae on one model."""
    model = build_aekit(name, args.seed)
    hand_model = copy.deepcopy(model)
    hand_optimizer = torch.optim.Adam(hand_model.parameters(), lr=args.lr)
    hand_generator = torch.Generator().manual_seed(args.seed + 1)
    sides = {"aekit": [], "hand": [], "pythae": []}
    with tempfile.TemporaryDirectory() as out_dir:
        pythae_side = None
        if pythae is not None:
            pythae_model, _ = build_pythae(pythae, name, model)
            pythae_side = PythaeSide(pythae, pythae_model, train.x, train.y, args, out_dir)

        def others(trainer, record):
            if not args.skip_hand:
                sides["hand"].append(
                    HAND_LOOPS[name](
                        hand_model, hand_optimizer, train.x, args.batch_size, hand_generator
                    )
                )
            if pythae_side is not None:
                sides["pythae"].append(pythae_side())

        config = aekit.TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            progress=False,
            device="cpu",
            nll_k=0,
        )
        result = aekit.Trainer(model, train, None, config, callbacks=[others]).fit()
        sides["aekit"] = [r["train_seconds"] for r in result.history]
    sides = {side: v for side, v in sides.items() if v}
    medians = {side: median_after_warmup(v) for side, v in sides.items()}
    row = {
        "model": name,
        "seconds": sides,
        "median_seconds": medians,
        "aekit_over_hand": medians["aekit"] / medians["hand"] if "hand" in medians else None,
        "aekit_last_train_loss": result.history[-1]["train"].get("loss"),
        "mismatch_with_pythae": MISMATCHES[name],
    }
    if pythae_side is not None:
        row["pythae_over_aekit"] = medians["pythae"] / medians["aekit"]
        row["pythae_last_train_loss"] = pythae_side.losses[-1]
    return {"row": row, "aekit": model, "pythae": pythae_side.model if pythae_side else None}


def pythae_nll(model, x: torch.Tensor, k: int, batch_size: int) -> float:
    """Pythae's own estimator: get_nll returns the mean log p(x) over x."""
    return -float(model.get_nll(x, n_samples=k, batch_size=batch_size))


def nll_comparison(name: str, trained: dict, pythae, test: TensorData, args) -> dict:
    """Each library's estimator on its own trained model (values), then both estimators on
    aekit's trained weights, interleaved block by block (speed): aekit, then Pythae at each
    get_nll batch size."""
    k, n = args.nll_k, args.nll_n
    x = test.x[:n]
    start = time.perf_counter()
    ours = importance_sampled_nll(trained["aekit"], TensorData(x), k=k, seed=args.seed)
    result = {
        "model": name,
        "k": k,
        "images": n,
        "aekit_nll_own_model": ours["marginal_nll"],
        "aekit_nll_stderr": ours["marginal_nll_stderr"],
        "aekit_seconds_own_model": time.perf_counter() - start,
    }
    if args.nll_full:
        start = time.perf_counter()
        full = importance_sampled_nll(trained["aekit"], test, k=k, seed=args.seed)
        result["aekit_full_test"] = {**full, "seconds": time.perf_counter() - start}
    if pythae is None:
        return result
    batches = args.pythae_nll_batch
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    result["pythae_nll_own_model"] = pythae_nll(trained["pythae"], x, k, batches[-1])
    result["pythae_seconds_own_model"] = time.perf_counter() - start
    result["pythae_own_model_batch_size"] = batches[-1]
    # Same weights: Pythae's estimator on a Pythae model holding aekit's trained bodies.
    same, _ = build_pythae(pythae, name, trained["aekit"])
    blocks = torch.arange(n).chunk(args.nll_turns)
    sides = {"aekit": None, **{f"pythae@{b}": b for b in batches}}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    totals = dict.fromkeys(sides, 0.0)
    for block in blocks:
        xb = x[block]
        for side, batch in sides.items():
            start = time.perf_counter()
            if batch is None:
                r = importance_sampled_nll(trained["aekit"], TensorData(xb), k=k, seed=args.seed)
                value = r["marginal_nll"]
            else:
                value = pythae_nll(same, xb, k, batch)
            seconds[side].append(time.perf_counter() - start)
            totals[side] += value * len(block)
    per_image = {
        side: statistics.median(t / len(b) for t, b in list(zip(v, blocks, strict=True))[1:])
        for side, v in seconds.items()
    }
    result.update(
        {
            "same_weights_blocks": [len(b) for b in blocks],
            "same_weights_seconds": seconds,
            "same_weights_nll": {side: total / n for side, total in totals.items()},
            "seconds_per_image_median": per_image,
            "pythae_over_aekit_nll_time": {
                side: per_image[side] / per_image["aekit"] for side in sides if side != "aekit"
            },
        }
    )
    return result


def markdown_timing(rows: list[dict], threads: int) -> str:
    lines = [
        f"| model ({threads} thread{'s' if threads > 1 else ''}) | aekit s/epoch | hand s/epoch "
        "| Pythae s/epoch | aekit / hand | Pythae / aekit |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["median_seconds"]
        target = ""
        if r["model"] in TARGET_MODELS and r["aekit_over_hand"] is not None:
            target = " ✓" if r["aekit_over_hand"] <= TARGET else " ✗"
        hand = f"{m['hand']:.2f}" if "hand" in m else "-"
        pythae = f"{m['pythae']:.2f}" if "pythae" in m else "-"
        ratio = f"{r['pythae_over_aekit']:.2f}" if "pythae_over_aekit" in r else "-"
        over_hand = "-" if r["aekit_over_hand"] is None else f"{r['aekit_over_hand']:.3f}{target}"
        lines.append(
            f"| {r['model']} | {m['aekit']:.2f} | {hand} | {pythae} | {over_hand} | {ratio} |"
        )
    return "\n".join(lines)


def markdown_nll(rows: list[dict]) -> str:
    lines = [
        "| model | k | images | aekit -log p(x), own model | Pythae -log p(x), own model | "
        "same weights: -log p(x) | same weights: s/image | Pythae / aekit time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['k']} | {r['images']} | {r['aekit_nll_own_model']:.2f} | "
        if "pythae_nll_own_model" not in r:
            lines.append(head + "- | - | - | - |")
            continue
        values = ", ".join(f"{s} {v:.2f}" for s, v in r["same_weights_nll"].items())
        times = ", ".join(f"{s} {v:.3f}" for s, v in r["seconds_per_image_median"].items())
        ratios = ", ".join(f"{s} {v:.1f}x" for s, v in r["pythae_over_aekit_nll_time"].items())
        lines.append(head + f"{r['pythae_nll_own_model']:.2f} | {values} | {times} | {ratios} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=6, help="turns per side (first: warm-up)")
    parser.add_argument(
        "--examples", type=int, default=0, help="training examples per epoch (0: all 60,000)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny run to check it works")
    parser.add_argument("--nll-k", type=int, default=0, help="importance samples (0: no NLL)")
    parser.add_argument("--nll-n", type=int, default=100, help="test images for the NLL")
    parser.add_argument("--nll-turns", type=int, default=5, help="interleaved NLL blocks")
    parser.add_argument(
        "--pythae-nll-batch",
        default="100,5000",
        help="get_nll batch_size values to time, comma-separated (its default is 100)",
    )
    parser.add_argument(
        "--nll-full", action="store_true", help="also aekit on the whole test set at k"
    )
    parser.add_argument(
        "--timing-name", default="", help="result name of the timing JSON ('none': do not save)"
    )
    parser.add_argument(
        "--skip-hand", action="store_true", help="no hand loop (NLL runs: training only)"
    )
    parser.add_argument("--data-dir", default="/work/shared/data/fashion-mnist")
    args = parser.parse_args()
    args.pythae_nll_batch = [int(b) for b in str(args.pythae_nll_batch).split(",")]
    if args.quick:
        args.epochs, args.examples = 2, 1000
        args.nll_k, args.nll_n, args.nll_turns = min(args.nll_k, 50), min(args.nll_n, 6), 2
        args.pythae_nll_batch = [min(b, 50) for b in args.pythae_nll_batch]
    torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    if not Path(args.data_dir).is_dir():
        print(
            f"no Fashion-MNIST at {args.data_dir}: put the four IDX .gz files there "
            "(train/t10k images and labels) or pass --data-dir"
        )
        sys.exit(2)
    logging.getLogger("pythae").setLevel(logging.WARNING)
    pythae = peer_module("pythae", "pythae")
    splits = load_data(
        DataConfig(source="fashion-mnist", data_dir=args.data_dir, binarize=True, val_fraction=0.0)
    )
    train, test = splits.train, splits.test
    if args.examples:
        train = train.subset(slice(0, args.examples))
    rows, nll_rows = [], []
    for name in names:
        trained = train_one(name, pythae, train, args)
        rows.append(trained["row"])
        print(markdown_timing([trained["row"]], args.threads), flush=True)
        if args.nll_k and name in ("vae", "iwae"):
            nll_rows.append(nll_comparison(name, trained, pythae, test, args))
            print(markdown_nll(nll_rows[-1:]), flush=True)
    settings = {
        "threads": args.threads,
        "epochs": args.epochs,
        "examples_per_epoch": len(train),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "network": "MLP 784-512-256-16 (ReLU), mirrored decoder",
        "pythae_version": getattr(pythae, "__version__", None) if pythae else None,
        "pythae_timed": "BaseTrainer.train_step(epoch) + re-binarising its training tensor",
        "quick": args.quick,
    }
    print("\n" + markdown_timing(rows, args.threads))
    timing_name = args.timing_name or f"pythae-{args.threads}t"
    if not args.timing_name and names != list(MODELS):
        timing_name += "-" + "-".join(names)
    if args.quick:
        timing_name += "-quick"
    if args.timing_name != "none":
        out = save_result(timing_name, {"settings": settings, "models": rows})
        print(f"saved {out}")
    if nll_rows:
        print("\n" + markdown_nll(nll_rows))
        nll_name = "pythae-nll" + ("-" + "-".join(names) if names != ["vae", "iwae"] else "")
        out = save_result(
            nll_name + ("-quick" if args.quick else ""),
            {
                "settings": settings,
                "estimators": {
                    "aekit": "importance_sampled_nll(model, data, k=K): proposal q(z|x), "
                    "all draws of a chunk of examples decoded at once, no grad",
                    "pythae": "model.get_nll(x, n_samples=K, batch_size=B): one example at a "
                    "time, B copies re-encoded per block of B draws, autograd on, returns mean "
                    "log p(x) (sign flipped here)",
                },
                "models": nll_rows,
            },
        )
        print(f"saved {out}")


if __name__ == "__main__":
    main()
