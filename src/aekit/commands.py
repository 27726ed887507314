"""The command line's commands and their one-line descriptions, importing no torch.

`top_parser` builds the top of `aekit`'s parser: the program, `--version` and one empty
subparser per command. `aekit.cli` fills those subparsers in; `aekit --help` is answered from
the top alone (aekit.__main__), in a few hundredths of a second instead of the ~2 s that
importing torch takes, and is the same text by construction.
"""

from __future__ import annotations

import argparse

from aekit.cli_flags import Parser
from aekit.version import __version__

DESCRIPTION = "Autoencoders: train, evaluate, sample, encode, report."
COMMANDS = {
    "models": "list the model recipes",
    "train": "train a model (aekit train MODEL --help)",
    "eval": "evaluate a run on test data; prints and saves eval.json",
    "sample": "draw samples from the prior: a PNG grid and a .npy",
    "encode": "export latent codes (posterior means for VAEs)",
    "report": "(re)build RUN/report.html",
    "sae": "sparse autoencoders on a model's activations: capture",
    "compress": "compress images: a quantizer's indices under its index prior, or an entropy-coded "
    "latent (factorized, hyperprior) under its learned densities",
    "bench": "run a benchmark suite (smoke, quick, full or a TOML/YAML file): results.jsonl, "
    "a leaderboard and figures; rerun to resume",
    "detect": "anomaly scores for the rows of a table (.mat, .csv, .npz, .npy): scores.csv",
    "decompress": "decode a compressed file to PNGs and images.npy",
}
OWN_PARSER = ("train",)
"""Commands that parse their own flags (`aekit train MODEL --help` depends on the model)."""


def top_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """`aekit`'s parser and its commands' (empty) subparsers, by name."""
    parser = Parser(prog="aekit", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"aekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = {
        name: sub.add_parser(name, help=text, add_help=name not in OWN_PARSER)
        for name, text in COMMANDS.items()
    }
    return parser, commands
