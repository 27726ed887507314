"""Crash consistency and one writer per folder, with real processes: `aekit train` killed by
SIGKILL at random moments and inside a checkpoint's write resumes to the weights of an
uninterrupted run, bit for bit; a second writer on a folder in use is refused, and a lock
left by a killed process is taken over."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from aekit.bench.runner import RESULTS, run_suite
from aekit.bench.suite import suite_from_dict
from aekit.errors import AekitError
from aekit.train import checkpoint as ckpt
from aekit.train.rundir import LOCK, writer_lock

CHILD = """
import json, os, sys, time
hang = os.environ.get("HANG_AT_CHECKPOINT")
if hang:  # stop inside the N-th checkpoint's write: its temporary written, not yet renamed
    n, marker = hang.split(":", 1)
    real, count = os.replace, [0]
    def replace(src, dst):
        if str(dst).endswith("last.safetensors"):
            count[0] += 1
            if count[0] == int(n):
                open(marker, "w").close()
                time.sleep(120)
        real(src, dst)
    os.replace = replace
from aekit.cli import main
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    if code:
        sys.exit(code)
"""

MODELS = {
    "vae": ["vae", "--hidden", "8", "--latent-dim", "2"],
    "sae": ["sae-topk", "--latent-dim", "32", "--k", "4"],
    "vq": ["vqvae-ema", "--body", "mlp", "--hidden", "8"],  # EMA codebook, dead-code restarts
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    np.save(root / "x.npy", np.random.default_rng(0).random((96, 16)).astype(np.float32))
    (root / "child.py").write_text(CHILD)
    return root


def train_argv(folder, model, out, resume=False):
    common = ["--epochs", "3", "--batch-size", "8", "--checkpoint-every", "1"]
    common += ["--no-eval", "--no-report", "--quiet"]
    if resume:
        return ["train", "--resume", str(out), *common]
    return ["train", *MODELS[model], "--data", str(folder / "x.npy"), *common, "--out", str(out)]


def child(folder, argvs, **env):
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env}
    return subprocess.Popen(
        [sys.executable, str(folder / "child.py"), json.dumps(argvs)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path, process, timeout=60):
    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.01)


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait()


def model_tensors(run):
    tensors, _ = ckpt.read_safetensors(run / ckpt.LAST, "checkpoint")
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))}


@pytest.fixture(scope="module")
def uninterrupted(folder):
    runs = {model: folder / f"whole-{model}" for model in MODELS}
    process = child(folder, [train_argv(folder, m, run) for m, run in runs.items()])
    assert process.wait() == 0, process.stderr.read()
    return runs


@pytest.mark.parametrize("model", list(MODELS))
def test_sigkill_at_any_moment_resumes_to_the_same_weights(folder, uninterrupted, model):
    out = folder / f"killed-{model}"
    # Killed inside the 7th checkpoint's write: the 6th stays the checkpoint on disk.
    marker = folder / f"hang-{model}"
    process = child(folder, [train_argv(folder, model, out)], HANG_AT_CHECKPOINT=f"7:{marker}")
    wait_for(marker, process)
    kill(process)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the kill was meant to land inside a write"
    _, metadata = ckpt.read_safetensors(out / ckpt.LAST, "checkpoint")
    assert json.loads(metadata["trainer_state"])["step"] == 6
    # Then at a random moment of the resumed run, once it has trained a step.
    process = child(folder, [train_argv(folder, model, out, resume=True)])
    written = (out / ckpt.LAST).stat().st_mtime_ns
    while process.poll() is None and (out / ckpt.LAST).stat().st_mtime_ns == written:
        time.sleep(0.005)
    time.sleep(random.Random(model).uniform(0.0, 0.2))
    kill(process)
    process = child(folder, [train_argv(folder, model, out, resume=True)])
    assert process.wait() == 0, process.stderr.read()
    whole, resumed = model_tensors(uninterrupted[model]), model_tensors(out)
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    assert (
        ckpt.read_weights(out / ckpt.WEIGHTS).keys()
        == ckpt.read_weights(uninterrupted[model] / ckpt.WEIGHTS).keys()
    )
    records = [json.loads(line) for line in (out / ckpt.METRICS).open()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    # Resuming cleaned up the temporaries the kills left.
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]


HOLD = """
import sys, time
from aekit.train.rundir import writer_lock
with writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def hold(folder, path):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_and_a_killed_writers_lock_is_taken_over(folder):
    from aekit.cli import main

    out = folder / "busy"
    holder = hold(folder, out)
    try:
        busy = rf"in use by another aekit process \(process {holder.pid}"
        with pytest.raises(AekitError, match=busy), writer_lock(out):
            pass
        assert main(train_argv(folder, "vae", out)) == 1
        assert main(["train", "--resume", str(out)]) == 1  # not a run yet: refused as well
    finally:
        kill(holder)
    assert (out / LOCK).exists()  # left by the kill, and stale: the OS released it
    with writer_lock(out):
        pass
    assert not (out / LOCK).exists()
    assert main(train_argv(folder, "vae", out)) == 0


TINY_SUITE = {
    "name": "tiny",
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 32},
    "eval": {"nll_k": 4},
    "data": {"digits": {"source": "digits", "binarize": True, "limit": 64}},
    "models": {"ae": {"recipe": "ae", "latent_dim": 2, "hidden": [8]}},
}


def test_a_second_bench_on_the_same_results_is_refused(folder, tmp_path):
    out = tmp_path / "results"
    holder = hold(folder, out)
    try:
        with pytest.raises(AekitError, match="in use by another aekit process"):
            run_suite(suite_from_dict(TINY_SUITE), out)
    finally:
        kill(holder)
    assert not (out / RESULTS).exists()


def test_a_cell_written_twice_counts_once(tmp_path):
    # Two benches on one folder before the lock existed wrote each row twice; the next run
    # must not see four seeds where two were trained.
    suite = suite_from_dict(TINY_SUITE)
    rows = [
        {"key": c.key, "fingerprint": c.fingerprint(), "status": "ok", "seed": c.seed}
        for c in suite.cells()
    ]
    out = tmp_path / "results"
    out.mkdir()
    (out / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows + rows))
    kept = run_suite(suite, out, on_row=lambda *a: pytest.fail("every cell is done"))
    assert sorted(r["key"] for r in kept) == sorted(r["key"] for r in rows)
    assert len((out / RESULTS).read_text().splitlines()) == len(rows)
