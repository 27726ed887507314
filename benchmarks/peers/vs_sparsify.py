"""TopK sparse autoencoders: aekit sae-topk vs EleutherAI sparsify vs the `autoencoders`
package's TopK SAE vs a hand-written dense TopK loop. Throughput and held-out FVU.

The setting of issue 6: d = 384 (all-MiniLM-L6-v2, residual stream after layer 3), 16x
expansion (6,144 latents), k = 32, batches of 4,096 activations. The data are the real
activations benchmarks/sae_minilm.py captures (python-docs, contexts of 128 tokens; its
store is reused when present, written otherwise; the last 32,768 rows are held out); with
`--synthetic` aekit's ground-truth generator
(`aekit.data.activations.synthetic.make_sparse_data`) stands in instead, and every output says
so.

The sides (all reused from benchmarks/sae_minilm.py where it has them):

- aekit: `sae-topk` (tied init, unit-norm decoder with the parallel gradient removed,
  inputs scaled to unit mean squared norm, b_dec at the geometric median, AuxK 1/32), trained
  by aekit's Trainer, Adam at `sae_learning_rate(6144)` = 3.27e-4, constant. The FVU runs add
  `sae-abstopk` (top-k by |pre-activation|, signs kept), the like-for-like recipe for the
  autoencoders package's selection (`--no-abstopk` to skip).
- sparsify: `SparseCoder(384, SparseCoderConfig(expansion_factor=16, k=32))`, stepped as
  sparsify's Trainer does (sae_minilm.SparsifyStep), with Adam at the same constant lr (its
  own default optimiser is signum + schedule-free; sae_minilm.py measures that one too).
- autoencoders (PyPI `autoencoders` 0.6.8): `TopKSparseAutoencoderModel` with an empty MLP
  backbone, i.e. Linear(384, 6144) -> top-k by |pre-activation| (signs kept, no ReLU) ->
  Linear(6144, 384); mean-squared-error loss on the raw activations; no decoder-norm
  constraint, no pre-encoder bias, no AuxK (it has none of them). Trained by its own
  `AETrainer.train_epoch` (Adam, same lr), its terminal progress line silenced.
- hand: a textbook dense TopK step written here: Linear encoder on x - b_dec, top-k, ReLU,
  scatter into a dense (B, n) code, dense decode, FVU loss, decoder gradient projection,
  Adam, decoder renormalisation. The framework-overhead floor of the naive formulation.

Throughput: whole training steps (forward, backward, optimizer, renormalisation) of fresh
models on the same real batches of 4,096 rows, interleaved in rounds (A B C D, the order
rotated by one each round; `sae_minilm.interleave`: one warm-up step per side and thread
count first, then `--tp-rounds` rounds of `--tp-steps` steps), medians, at 2 and 1 threads.
The dead threshold is the libraries' 10M tokens there, so no side runs AuxK.

FVU: each side trains for the same steps on the same batches (the aekit trainer's seeded
shuffled pass over the store, replayed for the peers; `--epochs` passes, 4 by default: 264
steps of 4,096 = 1.07M activations, since the store holds 267k training rows) with the same
Adam lr; the held-out FVU (aekit.eval.sparse.sae_metrics, each peer read through a wrapper)
is over the same 32,768 held-out rows. AuxK: alpha 1/32 and the same dead threshold (a
quarter of the training rows) for aekit and sparsify. aekit is trained at its default and at
each `--init-norms` value of `encoder_init_norm` (the initial encoder rows' norm; 0 is the
exact transpose of the unit-norm decoder, aekit's default before this benchmark; the
default is now 1/sqrt(3) for k-sparse SAEs, see DictionaryOptions.encoder_init_norm), with the same
seed, hence the same directions.

    flock /tmp/bench.lock python benchmarks/peers/vs_sparsify.py --only fvu --sides aekit,sparsify
    flock /tmp/bench.lock python benchmarks/peers/vs_sparsify.py --only throughput
    # the initialisation sweep with the autoencoders peer, run before aekit's default
    # changed (its "default" row is the exact transpose), kept as peers-sparsify-fvu-sweep.json:
    flock /tmp/bench.lock python benchmarks/peers/vs_sparsify.py --only fvu --no-abstopk \
        --init-norms 0.57735,0.4
    python benchmarks/peers/vs_sparsify.py --quick          # ~1-2 min smoke run

Writes benchmarks/results/peers-sparsify-2t.json, -1t.json (throughput) and
peers-sparsify-fvu.json (common.save_result), and prints Markdown tables; synthetic runs add
`-synthetic-LATENTS` to the names (peers-sparsify-synthetic-24576-1t.json), other dictionary
sizes `-LATENTS`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/: sae_minilm

import sae_minilm  # noqa: E402
from common import peer_module, save_result  # noqa: E402

from aekit.data import TensorData  # noqa: E402
from aekit.data.activations.source import ActivationSource, open_source  # noqa: E402
from aekit.eval.sparse import sae_metrics  # noqa: E402
from aekit.registry import sae_learning_rate  # noqa: E402
from aekit.sparse import SparseCode  # noqa: E402
from aekit.train.runs import recipe_train_config  # noqa: E402
from aekit.train.trainer import Trainer, derive_seed  # noqa: E402

SIDES = ("aekit", "sparsify", "autoencoders", "hand")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data


def open_data(args: argparse.Namespace) -> Any:
    """Training and held-out activations: the MiniLM store, or synthetic rows."""
    if args.synthetic:
        from aekit.data.activations.synthetic import make_sparse_data

        log("SYNTHETIC data (aekit.data.activations.synthetic), not MiniLM activations")
        data = make_sparse_data(args.max_rows, 384, 4 * 6144, active=args.k, seed=args.seed)
        x = data.x
        train, val = x[: -args.val_rows], x[-args.val_rows :]
        return SimpleNamespace(
            train=TensorData(train, name="synthetic-train"),
            val=TensorData(val, name="synthetic-val"),
            sample=train[:32768],
            d_in=x.shape[1],
            description=f"synthetic: make_sparse_data({args.max_rows}, 384, 24576, "
            f"active={args.k}, seed={args.seed})",
        )
    store = sae_minilm.get_store(args)
    source = ActivationSource(activations=str(store.path), site=args.site, val_rows=args.val_rows)
    opened = open_source(source, seed=args.seed)
    opened.description = (
        f"MiniLM {args.site} on python-docs: store {store.path} ({store.rows:,} rows), "
        f"{len(opened.train):,} training rows, the last {len(opened.val):,} held out"
    )
    return opened


class EpochBatches:
    """The aekit trainer's shuffled pass for one epoch (its seeded generator), as a sized
    iterable of tensors: what the autoencoders trainer's `train_epoch` iterates."""

    def __init__(self, data: Any, batch_size: int, seed: int, epoch: int) -> None:
        self.data, self.batch_size = data, batch_size
        self.seed = derive_seed(seed, epoch, 1)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        for batch in self.data.batches(self.batch_size, shuffle=True, generator=generator):
            yield batch.x


# ----------------------------------------------------------------------------- autoencoders


def quiet_display():
    """The autoencoders trainer's display with its live terminal line switched off (it
    rewrites a progress line on stdout after every batch; the metrics are still computed)."""
    from autoencoders.training.display import TrainerDisplay

    class Quiet(TrainerDisplay):
        def write_live_line(self, text: str) -> None:
            pass

    return Quiet()


def autoencoders_topk(d_in: int, args: argparse.Namespace, lr: float):
    """The peer's TopK SAE and its trainer (Adam at lr)."""
    from autoencoders import TopKSparseAutoencoderConfig, TopKSparseAutoencoderModel
    from autoencoders.data.base import TensorSpec
    from autoencoders.training.trainer import AETrainer, TrainingConfig

    torch.manual_seed(args.seed)
    model = TopKSparseAutoencoderModel(
        config=TopKSparseAutoencoderConfig(latent_dim=args.expansion * d_in, topk=args.k),
        sample_spec=TensorSpec(shape=(d_in,)),
        encoder="mlp",
        encoder_config={"hidden_dims": []},
    )
    config = TrainingConfig(
        output_dir=str(Path(args.tmp) / "autoencoders-topk"),
        epochs=args.epochs,
        learning_rate=lr,
        optimizer_name="adam",
        batch_size=args.batch_size,
        device="cpu",
        seed=args.seed,
    )
    return model, AETrainer(model, config, display=quiet_display())


class PeerTopKAsAekit(nn.Module):
    """The autoencoders TopK SAE behind encode_sparse / decode_sparse / reconstruct (and the
    `latent_dim` and `paired` aekit's metrics read)."""

    paired = False

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k
        self.latent_dim = model.config.latent_dim

    def encode_sparse(self, x: torch.Tensor) -> SparseCode:
        pre = self.model.project_to_core(self.model.encode(x))
        indices = pre.abs().topk(self.k, dim=1).indices
        return SparseCode(pre.gather(1, indices), indices)

    def decode_sparse(
        self, values: torch.Tensor, indices: torch.Tensor, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        z = values.new_zeros(values.shape[0], self.latent_dim).scatter(1, indices, values)
        return self.model.decode(self.model.project_from_core(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_sparse(*self.encode_sparse(x))


# ----------------------------------------------------------------------------- hand loop


class HandTopK(nn.Module):
    """A dense TopK SAE written out by hand (no AuxK: the timing never reaches a dead
    threshold). Init as Gao et al.'s reference code: an nn.Linear encoder, the decoder its
    transpose with unit-norm rows; b_dec at the sample mean."""

    paired = False

    def __init__(self, d: int, n: int, k: int, sample: torch.Tensor) -> None:
        super().__init__()
        encoder = nn.Linear(d, n)
        self.W_enc = nn.Parameter(encoder.weight.detach().clone())
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(F.normalize(encoder.weight.detach().clone(), dim=1))
        self.b_dec = nn.Parameter(sample.mean(0).clone())
        self.k, self.latent_dim = k, n

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.linear(x - self.b_dec, self.W_enc, self.b_enc)
        values, indices = pre.topk(self.k, dim=1)
        z = torch.zeros_like(pre).scatter(1, indices, values.relu())
        x_hat = z @ self.W_dec + self.b_dec
        return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()

    def encode_sparse(self, x: torch.Tensor) -> SparseCode:
        values, indices = F.linear(x - self.b_dec, self.W_enc, self.b_enc).topk(self.k, dim=1)
        return SparseCode(values.relu(), indices)

    def decode_sparse(
        self, values: torch.Tensor, indices: torch.Tensor, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum") + (
            self.b_dec
        )

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_sparse(*self.encode_sparse(x))


def hand_arm(opened: Any, args: argparse.Namespace):
    torch.manual_seed(args.seed)
    model = HandTopK(opened.d_in, args.expansion * opened.d_in, args.k, opened.sample)
    opt = torch.optim.Adam(model.parameters(), lr=sae_learning_rate(args.expansion * opened.d_in))

    def step(x: torch.Tensor) -> None:
        loss = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            w, g = model.W_dec, model.W_dec.grad
            g.sub_((g * w).sum(1, keepdim=True) * w)
        opt.step()
        with torch.no_grad():
            model.W_dec.div_(model.W_dec.norm(dim=1, keepdim=True))

    step.model = model
    step.dead = lambda: 0
    return step


def autoencoders_arm(opened: Any, args: argparse.Namespace):
    lr = sae_learning_rate(args.expansion * opened.d_in)
    _, trainer = autoencoders_topk(opened.d_in, args, lr)

    def step(x: torch.Tensor) -> None:
        trainer.train_epoch([x])  # its training API, one batch

    step.dead = lambda: 0
    return step


# ----------------------------------------------------------------------------- throughput


def throughput(opened: Any, args: argparse.Namespace, sides: list[str]) -> dict[str, Any]:
    options = {
        "expansion": args.expansion,
        "k": args.k,
        "dead_tokens": sae_minilm.NO_DEAD,
        "aux_coefficient": sae_minilm.AUX_ALPHA,
    }
    makers = {
        "aekit": lambda: sae_minilm.aekit_arm("sae-topk", opened, args, **options),
        "sparsify": lambda: sae_minilm.sparsify_arm(opened, args, "adam"),
        "autoencoders": lambda: autoencoders_arm(opened, args),
        "hand": lambda: hand_arm(opened, args),
    }
    arms = {name: makers[name]() for name in sides}
    batches = sae_minilm.real_batches(opened, args.tp_batch)
    times, usage = sae_minilm.interleave(
        arms, batches, args.tp_rounds, args.tp_steps, args.tp_threads
    )
    out: dict[str, Any] = {}
    for threads, arm_times in times.items():
        med = {name: statistics.median(ts) for name, ts in arm_times.items()}
        out[str(threads)] = {
            "median_step_seconds": med,
            "step_seconds": arm_times,
            "activations_per_s": {n: args.tp_batch / s for n, s in med.items()},
            "throughput_ratio_aekit_over": {n: med[n] / med["aekit"] for n in med},
            "median_usage_per_step": {
                n: sae_minilm.usage_medians(blocks) for n, blocks in usage[threads].items()
            },
        }
        log(
            f"{threads} thread(s): "
            + ", ".join(f"{n} {args.tp_batch / s:,.0f} act/s" for n, s in med.items())
        )
    return out


def throughput_table(tp: dict[str, Any]) -> str:
    names = list(next(iter(tp.values()))["median_step_seconds"])
    lines = [
        "| threads | "
        + " | ".join(f"{n} act/s" for n in names)
        + " | "
        + " | ".join(f"aekit / {n}" for n in names if n != "aekit")
        + " |",
        "|---" * (1 + 2 * len(names) - 1) + "|",
    ]
    for threads, t in tp.items():
        lines.append(
            f"| {threads} | "
            + " | ".join(f"{t['activations_per_s'][n]:,.0f}" for n in names)
            + " | "
            + " | ".join(
                f"{t['throughput_ratio_aekit_over'][n]:.2f}" for n in names if n != "aekit"
            )
            + " |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- FVU


def evaluate(model: nn.Module, opened: Any) -> dict[str, float]:
    m = sae_metrics(model, opened.val, batch_size=4096)
    return {
        key: m[key]
        for key in ("l0", "fvu", "cosine", "dead_fraction", "dense_fraction", "n")
        if key in m
    }


def train_aekit(
    opened: Any, args: argparse.Namespace, init_norm: float | None, recipe: str = "sae-topk"
) -> dict:
    options = {
        "expansion": args.expansion,
        "k": args.k,
        "dead_tokens": args.dead_tokens,
        "aux_coefficient": sae_minilm.AUX_ALPHA,
    }
    if init_norm is not None:
        options["encoder_init_norm"] = init_norm
    # as sae_minilm.train_recipe: the same initialisation, the same batches
    model = sae_minilm.build_for(recipe, opened, options, seed=args.seed)
    row_norm = float(model.encoder.W_enc.detach().norm(dim=1).mean())
    config = recipe_train_config(model, **sae_minilm.train_config(args))
    start = time.perf_counter()
    fit = Trainer(model, opened.train, None, config).fit()
    return {
        "model": model,
        "steps": fit.steps,
        "train_seconds": time.perf_counter() - start,
        "options": {k: v for k, v in options.items()},
        "config_encoder_init_norm": model.config.body.options.encoder_init_norm,
        "initial_encoder_row_norm": row_norm,
    }


def train_autoencoders(opened: Any, args: argparse.Namespace, lr: float) -> dict:
    model, trainer = autoencoders_topk(opened.d_in, args, lr)
    trainer.current_epoch = 0
    steps, start = 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        trainer.on_epoch_start(epoch)
        batches = EpochBatches(opened.train, args.batch_size, args.seed, epoch)
        trainer.train_epoch(batches)
        steps += len(batches)
    model.eval()
    return {
        "model": PeerTopKAsAekit(model, args.k).eval(),
        "steps": steps,
        "train_seconds": time.perf_counter() - start,
    }


def train_hand(opened: Any, args: argparse.Namespace) -> dict:
    step = hand_arm(opened, args)
    steps, start = 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        for x in EpochBatches(opened.train, args.batch_size, args.seed, epoch):
            step(x)
            steps += 1
    return {"model": step.model, "steps": steps, "train_seconds": time.perf_counter() - start}


def fvu_runs(opened: Any, args: argparse.Namespace, sides: list[str]) -> list[dict[str, Any]]:
    lr = sae_learning_rate(args.expansion * opened.d_in)
    runs = []

    def record(name: str, library: str, result: dict, **extra: Any) -> None:
        model = result.pop("model")
        with torch.no_grad():
            metrics = evaluate(model, opened)
        row = {"name": name, "library": library, "lr": lr, **result, **extra, "eval": metrics}
        row["activations_per_s_training"] = (
            result["steps"] * args.batch_size / result["train_seconds"]
        )
        runs.append(row)
        log(
            f"  {name}: FVU {metrics['fvu']:.4f} L0 {metrics['l0']:.1f} dead "
            f"{metrics['dead_fraction']:.3f} ({result['steps']} steps, "
            f"{result['train_seconds']:.0f} s)"
        )

    if "aekit" in sides:
        for norm in [None, *args.init_norms]:
            label = "default" if norm is None else f"encoder_init_norm={norm:g}"
            if norm == 0:
                label += ", exact transpose: the default before"
            log(f"training aekit sae-topk ({label})")
            record(f"aekit sae-topk ({label})", "aekit", train_aekit(opened, args, norm))
        if args.abstopk:
            # The like-for-like row for the autoencoders package's signed top-k by |pre|.
            log("training aekit sae-abstopk (default)")
            result = train_aekit(opened, args, None, "sae-abstopk")
            record("aekit sae-abstopk (default)", "aekit", result)
    if "sparsify" in sides:
        log("training sparsify SparseCoder (Adam, the same lr)")
        model, train = sae_minilm.train_sparsify(opened, args, "adam")
        train["model"] = model
        record("sparsify SparseCoder (Adam)", "sparsify", train)
    if "autoencoders" in sides:
        log("training autoencoders TopKSparseAutoencoderModel (Adam, the same lr)")
        record("autoencoders TopK SAE (Adam)", "autoencoders", train_autoencoders(opened, args, lr))
    if "hand" in sides:
        log("training the hand-written dense TopK loop (Adam, the same lr)")
        record("hand-written dense TopK (Adam)", "hand", train_hand(opened, args))
    return runs


def fvu_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| model | steps | held-out FVU | L0 | cosine | dead % | init encoder row norm |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        m = r["eval"]
        norm = r.get("initial_encoder_row_norm")
        lines.append(
            f"| {r['name']} | {r['steps']} | {m['fvu']:.4f} | {m['l0']:.1f} | "
            f"{m['cosine']:.4f} | {100 * m['dead_fraction']:.1f} | "
            f"{'' if norm is None else f'{norm:.3f}'} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a ~1-2 min smoke run")
    p.add_argument("--only", choices=("fvu", "throughput", "all"), default="all")
    p.add_argument("--synthetic", action="store_true", help="synthetic rows, not MiniLM")
    p.add_argument("--store", help="activation store (default: sae_minilm.py's)")
    p.add_argument("--max-rows", type=int, help="rows captured (default 300,000; quick 60,000)")
    p.add_argument("--val-rows", type=int, help="held-out rows (default 32,768; quick 8,192)")
    p.add_argument("--site", default="encoder.layer.3")
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--expansion", type=int, default=16)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, help="FVU runs (default 4,096; quick 1,024)")
    p.add_argument("--epochs", type=int, help="passes over the training rows (default 4)")
    p.add_argument("--dead-tokens", type=int, help="AuxK dead threshold (default: rows / 4)")
    p.add_argument(
        "--init-norms",
        help="extra aekit runs at these encoder_init_norm values, comma-separated ('' for "
        "none; default 0, the exact transpose; quick none)",
    )
    p.add_argument("--sides", default=",".join(SIDES[:3]), help="FVU sides (hand: also)")
    p.add_argument(
        "--abstopk",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train aekit sae-abstopk (signed top-k by magnitude, as the autoencoders "
        "package's TopK SAE selects)",
    )
    p.add_argument("--tp-sides", default=",".join(SIDES), help="throughput sides")
    p.add_argument("--threads", default="2,1", help="throughput thread counts")
    p.add_argument("--fvu-threads", type=int, default=2)
    p.add_argument("--tp-rounds", type=int, help="default 7; quick 2")
    p.add_argument("--tp-steps", type=int, help="default 2; quick 1")
    p.add_argument("--tp-batch", type=int, help="default 4,096; quick 1,024")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default="/tmp/vs_sparsify", help="scratch for the peer's trainer")
    args = p.parse_args()
    quick = args.quick
    defaults = {
        "max_rows": 60_000 if quick else 300_000,
        "val_rows": 8_192 if quick else 32_768,
        "batch_size": 1024 if quick else 4096,
        "epochs": 1 if quick else 4,
        "tp_rounds": 2 if quick else 7,
        "tp_steps": 1 if quick else 2,
        "tp_batch": 1024 if quick else 4096,
        "init_norms": "" if quick else "0",
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.store is None:
        args.store = str(
            HERE.parent / "runs" / f"sae-minilm-{args.site.replace(':', '_')}-{args.max_rows}"
        )
    args.progress = False
    args.tp_threads = [int(t) for t in args.threads.split(",") if t]
    args.init_norms = [float(v) for v in args.init_norms.split(",") if v]
    args.sides = [s for s in args.sides.split(",") if s]
    args.tp_sides = [s for s in args.tp_sides.split(",") if s]
    for s in args.sides + args.tp_sides:
        if s not in SIDES:
            p.error(f"unknown side {s!r}; choose from {SIDES}")
    if "aekit" not in args.tp_sides:
        p.error("the throughput needs the aekit side (ratios are against it)")
    return args


def main() -> None:
    args = parse_args()
    missing = []
    if peer_module("sparsify", "eai-sparsify") is None:
        missing.append("sparsify")
    if peer_module("autoencoders", "autoencoders") is None:
        missing.append("autoencoders")
    args.sides = [s for s in args.sides if s not in missing]
    args.tp_sides = [s for s in args.tp_sides if s not in missing]

    opened = open_data(args)
    n_train = len(opened.train)
    if args.dead_tokens is None:
        args.dead_tokens = max(args.batch_size, n_train // 4)
    common = {
        "data": opened.description,
        "synthetic": args.synthetic,
        "d_in": opened.d_in,
        "n_latents": args.expansion * opened.d_in,
        "k": args.k,
        "lr": sae_learning_rate(args.expansion * opened.d_in),
        "skipped_peers": missing,
        "quick": args.quick,
    }
    suffix = "-quick" if args.quick else ""
    if args.synthetic:
        suffix += f"-synthetic-{common['n_latents']}"
    elif args.expansion != 16:
        suffix += f"-{common['n_latents']}"

    if args.only in ("fvu", "all"):
        torch.set_num_threads(args.fvu_threads)
        steps = args.epochs * math.ceil(n_train / args.batch_size)
        log(
            f"FVU: {steps} steps of {args.batch_size} ({args.epochs} passes over {n_train:,} "
            f"rows), dead after {args.dead_tokens:,} tokens, {args.fvu_threads} thread(s)"
        )
        runs = fvu_runs(opened, args, args.sides)
        table = fvu_table(runs)
        print("\n" + table + "\n")
        path = save_result(
            f"sparsify-fvu{suffix}",
            common
            | {
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "steps": steps,
                "dead_tokens": args.dead_tokens,
                "aux_coefficient": sae_minilm.AUX_ALPHA,
                "threads": args.fvu_threads,
                "runs": runs,
                "table": table,
            },
        )
        log(f"wrote {path}")

    if args.only in ("throughput", "all"):
        log(
            f"throughput: {args.tp_rounds} rounds of {args.tp_steps} steps of {args.tp_batch}, "
            f"threads {args.tp_threads}, sides {args.tp_sides}"
        )
        tp = throughput(opened, args, args.tp_sides)
        table = throughput_table(tp)
        print("\n" + table + "\n")
        for threads, t in tp.items():
            path = save_result(
                f"sparsify-{threads}t{suffix}",
                common
                | {
                    "batch": args.tp_batch,
                    "rounds": args.tp_rounds,
                    "steps_per_round": args.tp_steps,
                    "threads": int(threads),
                    "dead_threshold": sae_minilm.NO_DEAD,
                    **t,
                    "table": table,
                },
            )
            log(f"wrote {path}")


if __name__ == "__main__":
    main()
