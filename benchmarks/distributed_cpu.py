"""What two gloo ranks buy on a CPU: `aekit train vae` (digits, batches of 64) as one process
with 2 threads, one process with 1 thread, and `torchrun --nproc_per_node 2` with 1 thread a
rank, interleaved round by round (the machine is shared), medians of the epochs' training
seconds (the first epoch of each run left out: start-up).

    python benchmarks/distributed_cpu.py --rounds 3 --epochs 10 \
        --out benchmarks/results/distributed_cpu.json

The runs train the same model on the same batches (tests/test_distributed.py): only the time
differs. A tiny MLP on 64-row batches is the worst case for data parallelism (each rank's
32 rows cost less than the gradient all-reduce and the per-step Python); the flag
`--batch-size` shows where it starts to pay.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SIDES = {
    "1 process, 2 threads": (["aekit"], "2"),
    "1 process, 1 thread": (["aekit"], "1"),
    "2 ranks, 1 thread each": (["torchrun", "--standalone", "--nproc_per_node", "2"], "1"),
}


def epoch_seconds(side: str, args: argparse.Namespace, folder: Path) -> list[float]:
    launcher, threads = SIDES[side]
    run = folder / "run"
    shutil.rmtree(run, ignore_errors=True)
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / launcher[0]), *launcher[1:]]
    if launcher[0] == "torchrun":
        command += ["-m", "aekit"]
    command += [
        "train", "vae", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--device", "cpu", "--out", str(run), "--no-report", "--no-eval", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=folder)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_seconds"] for r in records[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for side in SIDES:
                seconds[side] += epoch_seconds(side, args, Path(folder))
    medians = {side: statistics.median(v) for side, v in seconds.items()}
    reference = medians["1 process, 2 threads"]
    result = {
        "data": "digits (1,437 training images), MLP vae",
        "batch_size": args.batch_size,
        "epochs_per_run": args.epochs,
        "rounds": args.rounds,
        "median_epoch_seconds": medians,
        "time_over_one_process_two_threads": {s: m / reference for s, m in medians.items()},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
