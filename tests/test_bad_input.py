"""Every command's bad inputs, table-driven: each case exits non-zero with one line
`... error: ...` on stderr and no traceback, and leaves the files it was given unchanged.

The cases run in-process through `aekit.cli.main`, against a few tiny runs and files made
once for the module; a case that unexpectedly succeeds trains at most one tiny epoch.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from aekit.cli import main

TINY = "--epochs 1 --batch-size 16 --channels 4,8 --hidden 16 --latent-dim 2 --no-progress"
TRAIN = f"train vae --data {{R}}/x.npy --out {{R}}/new {TINY} --no-eval --no-report"
"""A training command that would succeed: each train case adds one bad flag to it."""


def write_png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares a huge size in a few bytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))


def edit_config(run: Path, edit) -> None:
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))


def set_in(path: tuple, value):
    def edit(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


CONFIG_EDITS = {
    "null-model": set_in(("model",), None),
    "list-model": set_in(("model",), [1, 2]),
    "str-latent": set_in(("model", "latent_dim"), "16"),
    "neg-latent": set_in(("model", "latent_dim"), -3),
    "float-shape": set_in(("model", "input_shape"), [1.5, 8, 8]),
    "str-shape": set_in(("model", "input_shape"), "1,8,8"),
    "unknown-bottleneck": set_in(("model", "bottleneck", "kind"), "nope"),
    "null-bottleneck": set_in(("model", "bottleneck"), None),
    "extra-option": set_in(("model", "objective", "gamma"), 1.0),
    "str-beta": set_in(("model", "objective", "beta"), "one"),
    "str-hidden": set_in(("model", "body", "hidden"), "16"),
    "unknown-recipe": set_in(("model", "recipe"), "nope"),
    "unknown-kind": set_in(("kind",), "nope"),
    "null-train": set_in(("train",), None),
    "str-epochs": set_in(("train", "epochs"), "one"),
    "str-batch": set_in(("train", "batch_size"), "16"),
    "null-data": set_in(("data",), 7),
    "int-source": set_in(("data", "source"), 5),
    "missing-source": set_in(("data", "source"), "/nonexistent/x.npy"),
    "str-divisor": set_in(("data", "divisor"), "255"),
    "str-fraction": set_in(("data", "val_fraction"), "0.1"),
}
"""Hand edits of a run's config.json: every command that reads it refuses each one."""


def tamper_weights(run: Path, how: str) -> None:
    path = run / "model.safetensors"
    data = path.read_bytes()
    if how == "missing-weights":
        path.unlink()
    elif how == "empty-weights":
        path.write_bytes(b"")
    elif how == "truncated-weights":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage-weights":
        path.write_bytes(b"\x07" * 300)
    elif how == "huge-header":
        path.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    elif how == "flipped-bit":
        flipped = bytearray(data)
        flipped[-3] ^= 0x10
        path.write_bytes(bytes(flipped))
    elif how in ("nan-weights", "wrong-shape", "missing-tensor"):
        tensors = load_file(path)
        name = next(iter(tensors))
        if how == "nan-weights":
            tensors[name] = tensors[name] * float("nan")
        elif how == "wrong-shape":
            tensors[name] = tensors[name].new_zeros(tensors[name].numel() + 1)
        else:
            del tensors[name]
        save_file(tensors, path)


WEIGHT_EDITS = (
    "missing-weights",
    "empty-weights",
    "truncated-weights",
    "garbage-weights",
    "huge-header",
    "flipped-bit",
    "nan-weights",
    "wrong-shape",
    "missing-tensor",
)

DIR_EDITS = {
    "empty-dir": lambda run: (
        [p.unlink() for p in run.iterdir() if p.is_file()] + [shutil.rmtree(run / "checkpoints")]
    ),
    "no-config": lambda run: (run / "config.json").unlink(),
    "bad-json": lambda run: (run / "config.json").write_text("{not json"),
    "not-utf8": lambda run: (run / "config.json").write_bytes(b'{"kind": "\xff"}'),
    "list-json": lambda run: (run / "config.json").write_text("[1, 2]"),
    "config-is-dir": lambda run: [(run / "config.json").unlink(), (run / "config.json").mkdir()],
}

READERS = {
    "eval": "eval {run} --nll-k 2",
    "sample": "sample {run} -n 2 --out {R}/out/s.png",
    "encode": "encode {run} --out {R}/out/z.npy",
    "report": "report {run}",
}
"""Commands that read a whole run (the report also reads metrics and figures)."""

METRICS_EDITS = {
    "bad-epoch": '{"epoch": "two", "train": {}}',
    "null-train-record": '{"epoch": 2, "train": null}',
    "list-record": "[1, 2]",
    "bad-val": '{"epoch": 2, "train": {}, "val": 3}',
    "torn-middle": '{"epoch": 2, "tra',
}
"""Hand edits of metrics.jsonl (a line that is not the last, so not a torn write)."""

RESUMING = "train --resume {run} --epochs 2 --no-progress"
CHECKPOINT_EDITS = ("ckpt-truncated", "ckpt-garbage", "ckpt-meta", "ckpt-missing-tensor")


def tamper_checkpoint(run: Path, how: str) -> None:
    path = run / "checkpoints" / "last.safetensors"
    data = path.read_bytes()
    if how == "ckpt-truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "ckpt-garbage":
        path.write_bytes(b"{" * 200)
    else:
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if how == "ckpt-meta":
            meta = {k: "not a number" for k in meta}
        else:
            del tensors[next(iter(tensors))]
        save_file(tensors, path, metadata=meta)


SUCCEED = {
    ("missing-source", "sample"),  # sampling reads no data
    ("missing-source", "report"),  # the report says the data is gone and shows the rest
    *(("unknown-recipe", c) for c in READERS),  # recipes registered from Python load too
    ("missing-weights", "resume"),  # resuming needs only the checkpoint
}
"""Edits that some commands rightly do not mind."""


def cases() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    add = out.append
    # ---------------------------------------------------------------- run folders, read
    run_edits = [*CONFIG_EDITS, *WEIGHT_EDITS, *DIR_EDITS]
    for edit in run_edits:
        for name, command in READERS.items():
            if (edit, name) in SUCCEED:
                continue
            add((f"{name}-{edit}", command.replace("{run}", f"{{R}}/runs/{edit}")))
        if (edit, "resume") not in SUCCEED:
            add((f"resume-{edit}", RESUMING.replace("{run}", f"{{R}}/runs/{edit}")))
    for edit in CHECKPOINT_EDITS:
        add((f"resume-{edit}", RESUMING.replace("{run}", f"{{R}}/runs/{edit}")))
    for name, command in READERS.items():
        add((f"{name}-missing-run", command.replace("{run}", "{R}/nowhere")))
        add((f"{name}-run-is-file", command.replace("{run}", "{R}/x.npy")))
    for name in METRICS_EDITS:
        add((f"report-metrics-{name}", f"report {{R}}/runs/metrics-{name}"))
        add((f"resume-metrics-{name}", RESUMING.replace("{run}", f"{{R}}/runs/metrics-{name}")))
    add(("resume-missing-run", RESUMING.replace("{run}", "{R}/nowhere")))
    add(("resume-other-recipe", "train ae --resume {R}/run --epochs 2"))
    add(("resume-changed-model", "train --resume {R}/run --latent-dim 3"))
    add(("resume-changed-data", "train --resume {R}/run --data digits"))
    add(("resume-finished-lower-epochs", "train --resume {R}/run --epochs 0"))
    add(("resume-bad-flag", "train --resume {R}/run --lr nan"))
    # ---------------------------------------------------------------- train flags
    bad_values = {
        "--epochs": ["0", "-1", "one", "1.5", "nan", ""],
        "--batch-size": ["0", "-16", "abc", "1e3"],
        "--lr": ["0", "-1", "nan", "inf", "-inf", "abc", "1e999"],
        "--weight-decay": ["-1", "nan", "inf"],
        "--grad-clip": ["-1", "nan", "inf"],
        "--warmup-steps": ["-1", "x"],
        "--min-lr-ratio": ["-0.5", "nan"],
        "--patience": ["-1", "x"],
        "--seed": ["-1", str(2**70), "x", "1.5"],
        "--eval-batch-size": ["0", "x"],
        "--nll-k": ["-1", "x"],
        "--log-every": ["-1"],
        "--checkpoint-every": ["-1"],
        "--optimizer": ["sgd", ""],
        "--schedule": ["linear"],
        "--device": ["tpu", "cuda:x", "cuda:99"],
        "--latent-dim": ["0", "-2", "x"],
        "--beta": ["nan", "inf", "x"],
        "--free-bits": ["nan", "x"],
        "--kl-warmup-steps": ["x", "1.5"],
        "--channels": ["a,b", "0,8"],
        "--hidden": ["x", "0"],
        "--limit": ["0", "-5", "x"],
        "--val-fraction": ["1.5", "-0.1", "nan", "x"],
        "--test-fraction": ["1", "nan"],
        "--split-seed": ["x"],
        "--scale": ["log"],
        "--shape": ["a,b", "3,3", "0,8,8"],
        "--image-size": ["x", "0,0"],
        "--likelihood": ["poisson"],
        "--bottleneck": ["nope"],
        "--body": ["resnet"],
        "--objective": ["nope"],
        "--corruption": ["nope"],
        "--prior": ["nope"],
    }
    for flag, values in bad_values.items():
        for value in values:
            add((f"train{flag}={value}", f"{TRAIN} {flag} ={value}".replace(" =", " ", 1)))
    recipe_flags = {
        "iwae": ["--k 0", "--k -1", "--k x"],
        "miwae": ["--m 0", "--k 0"],
        "beta-vae": ["--beta x", "--beta nan"],
        "beta-vae-capacity": ["--capacity-steps -1", "--capacity x"],
        "dae": ["--noise nan", "--noise x", "--corruption salt"],
        "vqvae": ["--codebook-size 0", "--codebook-size x", "--beta nan"],
        "fsq": ["--levels 0", "--levels x"],
        "swae": ["--projections 0", "--prior gauss"],
        "wae-mmd": ["--prior nope"],
        "vamp": ["--prior-components -1", "--prior-components x"],
        "hvae": ["--top-dim -1", "--top-dim x", "--level-hidden 0"],
    }
    for recipe, flags in recipe_flags.items():
        for flag in flags:
            command = TRAIN.replace("train vae", f"train {recipe}").replace("--latent-dim 2", "")
            add((f"train-{recipe}{flag.replace(' ', '=')}", f"{command} {flag}"))
    for name, command in {
        "abbreviation-k": f"{TRAIN} --k 5",
        "abbreviation-ep": f"{TRAIN.replace('--epochs 1', '')} --ep 1",
        "abbreviation-resume": "train --res {R}/run",
        "unknown-flag": f"{TRAIN} --no-such-flag",
        "unknown-recipe": "train nope",
        "no-recipe": "train --epochs 1",
        "flag-of-other-recipe": f"{TRAIN} --codebook-size 8",
        "data-missing": TRAIN.replace("{R}/x.npy", "{R}/missing.npy"),
        "data-is-dir": TRAIN.replace("{R}/x.npy", "{R}/emptydir"),
        "data-unknown-suffix": TRAIN.replace("{R}/x.npy", "{R}/notes.txt"),
        "data-bad-npy": TRAIN.replace("{R}/x.npy", "{R}/bad.npy"),
        "data-object-npy": TRAIN.replace("{R}/x.npy", "{R}/object.npy"),
        "data-huge-npy": TRAIN.replace("{R}/x.npy", "{R}/huge.npy"),
        "data-truncated-npy": TRAIN.replace("{R}/x.npy", "{R}/truncated.npy"),
        "data-empty-npy": TRAIN.replace("{R}/x.npy", "{R}/empty.npy"),
        "data-nan-npy": TRAIN.replace("{R}/x.npy", "{R}/nan.npy"),
        "data-1d-npy": TRAIN.replace("{R}/x.npy", "{R}/flat.npy"),
        "data-bad-npz": TRAIN.replace("{R}/x.npy", "{R}/bad.npz"),
        "data-empty-npz": TRAIN.replace("{R}/x.npy", "{R}/empty.npz"),
        "data-object-npz": TRAIN.replace("{R}/x.npy", "{R}/object.npz"),
        "data-empty-csv": TRAIN.replace("{R}/x.npy", "{R}/empty.csv"),
        "data-text-csv": TRAIN.replace("{R}/x.npy", "{R}/text.csv"),
        "data-ragged-csv": TRAIN.replace("{R}/x.npy", "{R}/ragged.csv"),
        "data-not-utf8-csv": TRAIN.replace("{R}/x.npy", "{R}/binary.csv"),
        "data-bomb-png": TRAIN.replace("{R}/x.npy", "{R}/bomb"),
        "data-broken-png": TRAIN.replace("{R}/x.npy", "{R}/brokenpng"),
        "data-mixed-sizes": TRAIN.replace("{R}/x.npy", "{R}/mixed"),
        "data-bad-mat": TRAIN.replace("{R}/x.npy", "{R}/bad.mat"),
        "data-idx-missing": f"{TRAIN} --data mnist --data-dir {{R}}/emptydir",
        "data-idx-corrupt": f"{TRAIN} --data mnist --data-dir {{R}}/badidx",
        "labels-missing": f"{TRAIN} --labels {{R}}/missing.npy",
        "labels-wrong-length": f"{TRAIN} --labels {{R}}/y_short.npy",
        "labels-float": f"{TRAIN} --labels {{R}}/y_float.npy",
        "labels-not-numbers": f"{TRAIN} --labels {{R}}/notes.txt",
        "cvae-label-huge": TRAIN.replace("train vae", "train cvae") + " --labels {R}/y_huge.npy",
        "cvae-label-negative": TRAIN.replace("train vae", "train cvae")
        + " --labels {R}/y_negative.npy",
        "cvae-no-labels": TRAIN.replace("train vae", "train cvae"),
        "huge-features": f"{TRAIN.replace('{R}/x.npy', '{R}/wide.npy')} --body mlp --hidden 4096",
        "label-column-missing": TRAIN.replace("{R}/x.npy", "{R}/table.csv")
        + " --label-column nope",
        "out-is-file": TRAIN.replace("{R}/new", "{R}/x.npy"),
        "out-below-file": TRAIN.replace("{R}/new", "{R}/x.npy/run"),
        "out-holds-other-files": TRAIN.replace("{R}/new", "{R}/out-other"),
        "out-is-finished-run": TRAIN.replace("{R}/new", "{R}/run"),
        "bernoulli-on-standardised": f"{TRAIN} --scale standard --likelihood bernoulli "
        "--no-binarize",
        "binarize-gaussian-range": TRAIN.replace("{R}/x.npy", "{R}/signed.npy")
        + " --scale none --binarize",
        "hvae-wae": TRAIN.replace("train vae", "train hvae") + " --objective wae-mmd",
        "hvae-swae": TRAIN.replace("train vae", "train hvae") + " --objective swae",
        "cvae-vamp": TRAIN.replace("train vae", "train cvae") + " --labels {R}/y.npy --prior vamp",
        "activations-and-data": f"{TRAIN} --activations {{R}}/emptydir",
        "activations-missing": "train sae-topk --activations {R}/nowhere --epochs 1",
        "activations-not-store": "train sae-topk --activations {R}/emptydir --epochs 1",
        "activations-bad-manifest": "train sae-topk --activations {R}/badstore --epochs 1",
        "sae-model-no-site": "train sae-topk --model {R}/emptydir --texts {R}/notes.txt",
    }.items():
        add((f"train-{name}", command))
    # ---------------------------------------------------------------- eval, sample, encode
    for name, command in {
        "eval-nll-k-negative": "eval {R}/run --nll-k -1",
        "eval-nll-k-text": "eval {R}/run --nll-k x",
        "eval-batch-zero": "eval {R}/run --batch-size 0",
        "eval-seed-negative": "eval {R}/run --seed -1",
        "eval-seed-huge": f"eval {{R}}/run --seed {2**70}",
        "eval-split-unknown": "eval {R}/run --split dev",
        "eval-data-missing": "eval {R}/run --data {R}/missing.npy",
        "eval-data-wrong-shape": "eval {R}/run --data {R}/wrongshape.npy",
        "eval-data-bad-npy": "eval {R}/run --data {R}/bad.npy",
        "eval-grad-snr-text": "eval {R}/run --grad-snr a,b",
        "eval-grad-snr-zero": "eval {R}/run --grad-snr 0,5",
        "eval-fid-missing": "eval {R}/run --nll-k 0 --fid-weights {R}/missing.pt",
        "eval-fid-garbage": "eval {R}/run --nll-k 0 --fid-weights {R}/notes.txt",
        "eval-out-is-dir": "eval {R}/run --nll-k 0 --out {R}/emptydir",
        "eval-out-below-file": "eval {R}/run --nll-k 0 --out {R}/x.npy/eval.json",
        "eval-no-splice-on-images": "eval {R}/run --no-splice",
        "eval-abbreviation": "eval {R}/run --nll 5",
        "eval-unknown-flag": "eval {R}/run --k 5",
        "eval-device-unknown": "eval {R}/run --device tpu",
        "sample-n-zero": "sample {R}/run -n 0",
        "sample-n-negative": "sample {R}/run -n -3",
        "sample-n-huge": "sample {R}/run -n 1000000000",
        "sample-n-float": "sample {R}/run -n 1e9",
        "sample-seed-huge": f"sample {{R}}/run --seed {2**70}",
        "sample-out-txt": "sample {R}/run --out {R}/out/x.txt",
        "sample-out-is-dir": "sample {R}/run --out {R}/emptydir",
        "sample-out-below-file": "sample {R}/run --out {R}/x.npy/s.png",
        "sample-condition-unconditional": "sample {R}/run --condition 3",
        "sample-condition-text": "sample {R}/cvae --condition three",
        "sample-condition-out-of-range": "sample {R}/cvae --condition 1000000000",
        "sample-condition-negative": "sample {R}/cvae --condition -1",
        "sample-condition-vector": "sample {R}/cvae --condition 1,2",
        "sample-condition-missing": "sample {R}/cvae",
        "encode-out-missing": "encode {R}/run",
        "encode-out-not-npy": "encode {R}/run --out {R}/out/z.txt",
        "encode-out-is-dir": "encode {R}/run --out {R}/emptydir.npy",
        "encode-out-below-file": "encode {R}/run --out {R}/x.npy/z.npy",
        "encode-labels-none": "encode {R}/unlabelled --out {R}/out/z.npy --labels-out "
        "{R}/out/y.npy",
        "encode-indices-of-vae": "encode {R}/run --out {R}/out/z.npy --indices",
        "encode-batch-zero": "encode {R}/run --out {R}/out/z.npy --batch-size 0",
        "report-missing": "report {R}/nowhere",
        # ------------------------------------------------------------ compress, decompress
        "compress-vae": "compress {R}/run {R}/x.npy -o {R}/out/f.aek",
        "compress-input-missing": "compress {R}/vq {R}/missing.npy -o {R}/out/f.aek",
        "compress-wrong-size": "compress {R}/vq {R}/wrongshape.npy -o {R}/out/f.aek",
        "compress-not-image": "compress {R}/vq {R}/notes.txt -o {R}/out/f.aek",
        "compress-bomb": "compress {R}/vq {R}/bomb/a/0.png -o {R}/out/f.aek",
        "compress-broken-png": "compress {R}/vq {R}/brokenpng/a/0.png -o {R}/out/f.aek",
        "compress-nan": "compress {R}/vq {R}/nan.npy -o {R}/out/f.aek",
        "compress-bad-npy": "compress {R}/vq {R}/bad.npy -o {R}/out/f.aek",
        "compress-object-npy": "compress {R}/vq {R}/object.npy -o {R}/out/f.aek",
        "compress-stages-zero": "compress {R}/vq {R}/x.npy -o {R}/out/f.aek --stages 0",
        "compress-stages-not-residual": "compress {R}/vq {R}/x.npy -o {R}/out/f.aek --stages 2",
        "compress-out-is-dir": "compress {R}/vq {R}/x.npy -o {R}/emptydir",
        "compress-out-below-file": "compress {R}/vq {R}/x.npy -o {R}/x.npy/f.aek",
        "compress-no-out": "compress {R}/vq {R}/x.npy",
        "compress-missing-run": "compress {R}/nowhere {R}/x.npy -o {R}/out/f.aek",
        "decompress-missing": "decompress {R}/missing.aek -o {R}/out/d",
        "decompress-not-aek": "decompress {R}/x.npy -o {R}/out/d",
        "decompress-empty": "decompress {R}/empty.aek -o {R}/out/d",
        "decompress-truncated": "decompress {R}/truncated.aek -o {R}/out/d",
        "decompress-flipped": "decompress {R}/flipped.aek -o {R}/out/d",
        "decompress-other-run": "decompress {R}/f.aek --run {R}/run -o {R}/out/d",
        "decompress-retrained-run": "decompress {R}/f.aek --run {R}/vq2 -o {R}/out/d",
        "decompress-run-gone": "decompress {R}/gone.aek -o {R}/out/d",
        "decompress-non-empty": "decompress {R}/f.aek -o {R}/out-other",
        "decompress-out-is-file": "decompress {R}/f.aek -o {R}/x.npy",
        "decompress-no-out": "decompress {R}/f.aek",
        # ------------------------------------------------------------ bench
        "bench-unknown-suite": "bench nope --out {R}/out/b",
        "bench-missing-file": "bench {R}/missing.toml --out {R}/out/b",
        "bench-not-utf8": "bench {R}/suites/binary.toml --out {R}/out/b",
        "bench-bad-toml": "bench {R}/suites/broken.toml --out {R}/out/b",
        "bench-epochs-text": "bench {R}/suites/epochs.toml --out {R}/out/b",
        "bench-name-escapes": "bench {R}/suites/escape.toml --out {R}/out/b",
        "bench-unknown-recipe": "bench {R}/suites/recipe.toml --out {R}/out/b",
        "bench-unknown-key": "bench {R}/suites/key.toml --out {R}/out/b",
        "bench-no-models": "bench {R}/suites/empty.toml --out {R}/out/b",
        "bench-seeds-text": "bench smoke --seeds a,b --out {R}/out/b",
        "bench-seeds-negative": "bench smoke --seeds -1 --out {R}/out/b",
        "bench-threads-zero": "bench smoke --threads 0 --out {R}/out/b",
        "bench-out-is-file": "bench smoke --out {R}/x.npy",
        "bench-odds-no-data": "bench odds --data-dir {R}/emptydir --no-peers --out {R}/out/o",
        "bench-odds-unknown-set": "bench odds --sets nope --data-dir {R}/emptydir",
        # ------------------------------------------------------------ detect
        "detect-missing": "detect {R}/missing.csv --out {R}/out/s.csv",
        "detect-empty-csv": "detect {R}/empty.csv --out {R}/out/s.csv",
        "detect-text-csv": "detect {R}/text.csv --out {R}/out/s.csv",
        "detect-bad-npy": "detect {R}/bad.npy --out {R}/out/s.csv",
        "detect-object-npy": "detect {R}/object.npy --out {R}/out/s.csv",
        "detect-unknown-score": "detect {R}/table.csv --score nope --out {R}/out/s.csv",
        "detect-threads-zero": "detect {R}/table.csv --threads 0 --out {R}/out/s.csv",
        "detect-label-column": "detect {R}/table.csv --label-column nope --out {R}/out/s.csv",
        "detect-saved-missing": "detect {R}/table.csv --detector {R}/nowhere --out {R}/out/s.csv",
        "detect-saved-garbage": "detect {R}/table.csv --detector {R}/runs/bad-json --out "
        "{R}/out/s.csv",
        "detect-out-is-dir": "detect {R}/table.csv --out {R}/emptydir --epochs 1",
        "detect-epochs-zero": "detect {R}/table.csv --epochs 0 --out {R}/out/s.csv",
        "detect-lr-nan": "detect {R}/table.csv --lr nan --out {R}/out/s.csv",
        "detect-run-missing": "detect mnist --run {R}/nowhere --out {R}/out/s.csv",
        "detect-abbreviation": "detect {R}/table.csv --sc nope",
        # ------------------------------------------------------------ sae capture
        "capture-model-missing": "sae capture --model {R}/nowhere --layer a --texts "
        "{R}/notes.txt --out {R}/out/store",
        "capture-model-empty": "sae capture --model {R}/emptydir --layer a --texts "
        "{R}/notes.txt --out {R}/out/store",
        "capture-remote-code": "sae capture --model {R}/remote --layer a --texts "
        "{R}/notes.txt --out {R}/out/store",
        "capture-no-texts": "sae capture --model {R}/emptydir --layer a --out {R}/out/store",
        "capture-context-zero": "sae capture --model {R}/emptydir --layer a --texts "
        "{R}/notes.txt --out {R}/out/store --context-length 0",
        "capture-batch-zero": "sae capture --model {R}/emptydir --layer a --texts "
        "{R}/notes.txt --out {R}/out/store --batch-contexts 0",
        "capture-shard-zero": "sae capture --model {R}/emptydir --layer a --texts "
        "{R}/notes.txt --out {R}/out/store --shard-rows 0",
        "capture-max-rows-zero": "sae capture --model {R}/emptydir --layer a --texts "
        "{R}/notes.txt --out {R}/out/store --max-rows 0",
        "capture-dtype": "sae capture --model {R}/emptydir --layer a --texts {R}/notes.txt "
        "--out {R}/out/store --dtype int8",
        "capture-no-layer": "sae capture --model {R}/emptydir --texts {R}/notes.txt --out "
        "{R}/out/store",
        "sae-unknown": "sae split",
        "unknown-command": "nope",
        "models-extra": "models extra",
    }.items():
        add((name, command))
    return out


CASES = cases()


def write_world(root: Path) -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((80, 8, 8)) * 255).astype(np.uint8)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", np.arange(80) % 4)
    np.save(root / "y_short.npy", np.arange(10) % 4)
    np.save(root / "y_float.npy", np.linspace(0, 1, 80))
    np.save(root / "y_huge.npy", np.where(np.arange(80) == 5, 10**9, np.arange(80) % 4))
    np.save(root / "y_negative.npy", np.where(np.arange(80) == 5, -1, np.arange(80) % 4))
    np.save(root / "wrongshape.npy", x[:, :6, :6])
    np.save(root / "nan.npy", np.full((80, 8, 8), np.nan, dtype=np.float32))
    np.save(root / "signed.npy", rng.normal(size=(80, 8, 8)).astype(np.float32))
    np.save(root / "flat.npy", np.arange(80.0))
    np.save(root / "empty.npy", np.zeros((0, 8, 8), np.uint8))
    np.save(root / "object.npy", np.array([{"a": 1}] * 80, dtype=object), allow_pickle=True)
    np.savez(root / "object.npz", x=np.array([{"a": 1}] * 80, dtype=object))
    np.savez(root / "empty.npz")
    (root / "bad.npz").write_bytes(b"PK\x03\x04" + b"\0" * 50)
    (root / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4'}   \n" + b"\0" * 16)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 784), }"
    header = header.ljust(118) + "\n"
    (root / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.encode())
    (root / "truncated.npy").write_bytes((root / "x.npy").read_bytes()[:300])
    np.save(root / "wide.npy", np.zeros((2, 1_000_000), np.uint8))
    (root / "notes.txt").write_text("some words\n\nmore words\n")
    (root / "empty.csv").write_text("")
    (root / "text.csv").write_text("a,b\nfoo,bar\nbaz,qux\n")
    (root / "ragged.csv").write_text("1,2,3\n4,5\n6\n")
    (root / "binary.csv").write_bytes(b"\xff\xfe\x00\x01" * 40)
    (root / "bad.mat").write_bytes(b"MATLAB 5.0" + b"\0" * 200)
    table = rng.normal(size=(60, 4))
    np.savetxt(root / "table.csv", table, delimiter=",", header="a,b,c,d", comments="")
    (root / "emptydir").mkdir()
    (root / "emptydir.npy").mkdir()
    (root / "badidx").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (root / "badidx" / name).write_bytes(b"\0\0\x08\x03" + b"\xff" * 12)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / "badidx" / name).write_bytes(b"\0\0\x08\x01\x7f\xff\xff\xff")
    (root / "bomb" / "a").mkdir(parents=True)
    write_png_header(root / "bomb" / "a" / "0.png", 60000, 60000)
    (root / "brokenpng" / "a").mkdir(parents=True)
    (root / "brokenpng" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "mixed").mkdir()
    Image.new("L", (8, 8)).save(root / "mixed" / "a.png")
    Image.new("L", (9, 7)).save(root / "mixed" / "b.png")
    (root / "out-other").mkdir()
    (root / "out-other" / "keep.txt").write_text("mine")
    (root / "badstore").mkdir()
    (root / "badstore" / "manifest.json").write_text('{"sites": 5}')
    (root / "remote").mkdir()
    (root / "remote" / "config.json").write_text(
        json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "evil.Model"}})
    )
    (root / "remote" / "evil.py").write_text("raise SystemExit('the folder code ran')\n")
    suites = root / "suites"
    suites.mkdir()
    (suites / "binary.toml").write_bytes(b"name = '\xff\xfe'\n")
    (suites / "broken.toml").write_text("name = [\n")
    base = 'seeds = [0]\n[data.d]\nsource = "digits"\nlimit = 50\n[models.m]\nrecipe = "ae"\n'
    (suites / "epochs.toml").write_text(f'name = "e"\n[train]\nepochs = "one"\n{base}')
    (suites / "escape.toml").write_text(f'name = "../../x"\n{base}')
    (suites / "recipe.toml").write_text(f'name = "r"\n{base.replace("ae", "nope")}')
    (suites / "key.toml").write_text(f'name = "k"\nspeed = 3\n{base}')
    (suites / "empty.toml").write_text('name = "m"\nseeds = [0]\n')


def train(*args: object) -> None:
    assert main([str(a) for a in args]) == 0, args


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    write_world(root)
    tiny = TINY.split()
    quick = [*tiny, "--no-report", "--nll-k", "2"]
    train("train", "vae", "--data", root / "x.npy", "--out", root / "run", *quick)
    train("train", "ae", "--data", root / "x.npy", "--out", root / "unlabelled", *quick)
    train("train", "cvae", "--data", root / "x.npy", "--labels", root / "y.npy", "--out",
          root / "cvae", *quick)  # fmt: skip
    vq = [*tiny, "--no-report", "--codebook-size", "8"]
    vq.remove("--latent-dim")
    vq.remove("2")
    train("train", "vqvae", "--data", root / "x.npy", "--out", root / "vq", *vq)
    train("train", "vqvae", "--data", root / "x.npy", "--out", root / "vq2", *vq, "--seed", "1")
    train("compress", root / "vq", root / "x.npy", "-o", root / "f.aek")
    aek = (root / "f.aek").read_bytes()
    (root / "empty.aek").write_bytes(b"")
    (root / "truncated.aek").write_bytes(aek[: len(aek) // 2])
    flipped = bytearray(aek)
    flipped[len(aek) // 2] ^= 0x04
    (root / "flipped.aek").write_bytes(bytes(flipped))
    shutil.copytree(root / "vq", root / "vq-gone")
    train("compress", root / "vq-gone", root / "x.npy", "-o", root / "gone.aek")
    shutil.rmtree(root / "vq-gone")
    runs = root / "runs"
    for edit, line in METRICS_EDITS.items():
        shutil.copytree(root / "run", runs / f"metrics-{edit}")
        with (runs / f"metrics-{edit}" / "metrics.jsonl").open("a") as f:
            f.write(line + "\n" + '{"epoch": 3, "train": {}}\n')
    for edit in [*CONFIG_EDITS, *WEIGHT_EDITS, *DIR_EDITS, *CHECKPOINT_EDITS]:
        shutil.copytree(root / "run", runs / edit)
        if edit in CONFIG_EDITS:
            edit_config(runs / edit, CONFIG_EDITS[edit])
        elif edit in WEIGHT_EDITS:
            tamper_weights(runs / edit, edit)
        elif edit in DIR_EDITS:
            DIR_EDITS[edit](runs / edit)
        else:
            tamper_checkpoint(runs / edit, edit)
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root (the `out` folder aside), files with their size and
    mtime: a write, a removal or a new entry shows."""
    out = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] != "out":
            stat = path.stat()
            out[str(relative)] = (0, 0) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return out


def test_there_are_enough_cases():
    assert len(CASES) >= 300, len(CASES)
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"runs {len(CASES)} such cases" in readme, "update the count in README.md"
    names = [name for name, _ in CASES]
    assert len(set(names)) == len(names)
    commands = {command.split()[0] for _, command in CASES}
    assert {"train", "eval", "sample", "encode", "report", "compress", "decompress",
            "bench", "detect", "sae"} <= commands  # fmt: skip


@pytest.mark.parametrize("command", [c for _, c in CASES], ids=[n for n, _ in CASES])
def test_bad_input_is_one_line_and_loses_nothing(command, world, capsys):
    argv = command.replace("{R}", str(world)).split()
    shutil.rmtree(world / "out", ignore_errors=True)
    before = snapshot(world)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code not in (0, None), f"succeeded: {captured.out[-300:]} {captured.err[-300:]}"
    assert "Traceback" not in captured.err
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], captured.err[-1000:]
    assert lines[-1].startswith(("aekit: error: ", "aekit ")), lines[-1]
    assert snapshot(world) == before, "a refused command changed a file it was given"
