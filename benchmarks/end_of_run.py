"""What the end of `aekit train vae --data fashion-mnist` costs against one epoch of training.

One epoch of the default recipe (conv body, dynamically binarised Fashion-MNIST, 54,000 train
/ 6,000 validation images) is trained in a subprocess; then, each in a fresh subprocess, the
final test evaluation (`evaluate_trained`: the ELBO terms over all 10,000 test images, and the
importance-sampled -log p(x) at k=100) on the first N test images for the -log p(x):

- N = 1,000 (the default, TrainConfig.nll_examples) and N = 10,000 (all; what `aekit eval`
  does), each with the C heap trimmed after every estimator batch (the default) and without
  (`release_free_heap` replaced by a no-op: the behaviour before).

Reported per run: CPU seconds (user + system) and peak RSS of the process, and the RSS right
before the evaluation; the training figures are the whole `aekit train` process's.

    python benchmarks/end_of_run.py --threads 1 --data-dir /work/shared/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import save_result

EVAL = """
import json, resource, sys, time, torch
import aekit.eval.likelihood as likelihood
from aekit.data import DataConfig, load_data
from aekit.train import checkpoint as ckpt
from aekit.train.finish import evaluate_trained
run, n, trim, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
torch.set_num_threads(threads)
if not trim:
    likelihood.release_free_heap = lambda: None
model = ckpt.load(run)
test = load_data(DataConfig.from_dict(ckpt.read_config(run)["data"])).test
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
before, usage, start = rss_mib(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
metrics = evaluate_trained(model, test, nll_k=100, nll_examples=n)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "nll_examples": metrics["marginal_nll_n"], "trim": trim,
    "cpu_seconds": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
    "wall_seconds": time.perf_counter() - start,
    "rss_before_mib": before, "peak_rss_mib": after.ru_maxrss / 1024,
    "marginal_nll": metrics["marginal_nll"],
}))
"""


def child_usage() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default="/work/shared/data/fashion-mnist")
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    env_threads = {"OMP_NUM_THREADS": str(args.threads)}
    import os

    env = {**os.environ, **env_threads}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "vae"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "aekit.cli", "train", "vae", "--data", "fashion-mnist",
             "--data-dir", args.data_dir, "--epochs", "1", "--no-eval", "--no-report",
             "--no-progress", "--quiet", "--out", str(run)],
            check=True, env=env,
        )  # fmt: skip
        train_cpu, train_rss = child_usage()
        record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        training = {
            "process_cpu_seconds": train_cpu,
            "process_wall_seconds": time.perf_counter() - start,
            "epoch_train_seconds": record["train_seconds"],
            "peak_rss_mib": train_rss,
        }
        print(f"training: {json.dumps(training)}", flush=True)
        evaluations = []
        for n in (int(s) for s in args.sizes.split(",")):
            for trim in (True, False):
                out = subprocess.run(
                    [sys.executable, "-c", EVAL, str(run), str(n), "1" if trim else "0",
                     str(args.threads)],
                    check=True, env=env, capture_output=True, text=True,
                )  # fmt: skip
                row = json.loads(out.stdout.strip().splitlines()[-1])
                evaluations.append(row)
                print(f"evaluation: {json.dumps(row)}", flush=True)
    save_result(
        f"end_of_run-{args.threads}t",
        {"threads": args.threads, "training": training, "evaluations": evaluations},
    )


if __name__ == "__main__":
    main()
