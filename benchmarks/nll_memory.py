"""Peak memory of the importance-sampled NLL: k = 5,000 draws per example on 1,000 MNIST test
images, with the MLP VAE of benchmarks/bounds.py (784-200-200-16; weights do not change the
memory, so the model is untrained). Each `max_draws` setting runs in a fresh process and
reports the growth of its peak resident memory (ru_maxrss) over the level reached after
loading data and model. glibc's adaptive mmap threshold lets freed chunk memory stay in the
heap and fragment; a fixed threshold returns every large buffer to the system, so both are
measured:

    python benchmarks/nll_memory.py --out benchmarks/results/nll_memory.json
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/nll_memory.py \
        --out benchmarks/results/nll_memory-mmap.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def measure(data_dir: str, k: int, n: int, max_draws: int) -> dict:
    import torch

    import aekit
    from aekit.data import DataConfig, load_data
    from aekit.eval import importance_sampled_nll

    spec = DataConfig(
        source="mnist", data_dir=data_dir, binarize=True, val_fraction=0.0, test_fraction=0.1
    )
    test = load_data(spec).test.subset(slice(0, n))
    torch.manual_seed(0)
    model = aekit.build("vae", test.shape, 16, body="mlp", hidden=(200, 200))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = importance_sampled_nll(model, test, k=k, max_draws=max_draws)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "k": k,
        "n": n,
        "max_draws": max_draws,
        "baseline_mib": before / 1024,
        "peak_mib": peak / 1024,
        "growth_mib": (peak - before) / 1024,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "marginal_nll": result["marginal_nll"],
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--max-draws", type=int, nargs="*", default=[20000])
    parser.add_argument("--out", default="benchmarks/results/nll_memory.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.data_dir, args.k, args.n, args.child)))
        return
    rows = []
    for max_draws in args.max_draws:
        out = subprocess.run(
            [sys.executable, __file__, "--data-dir", args.data_dir, "--k", str(args.k),
             "--n", str(args.n), "--child", str(max_draws)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
