"""bf16 against fp32 training on the CPU: the README's default run (`aekit train vae`,
scikit-learn's digits, 100 epochs) per seed in each precision, and the test-set ELBO of each
(1 posterior draw per example, analytic KL; nats per example). The question is whether the
bf16 run ends within the seed-to-seed spread of fp32's.

    python benchmarks/precision.py --seeds 0,1,2 --out benchmarks/results/precision.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def test_elbo(precision: str, seed: int, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        subprocess.run(
            [sys.executable, "-m", "aekit", "train", "vae", "--precision", precision,
             "--device", "cpu", "--seed", str(seed), "--epochs", str(epochs), "--out", str(run),
             "--no-report", "--nll-k", "0", "--quiet"],
            check=True, capture_output=True,
        )  # fmt: skip
        return json.loads((run / "eval.json").read_text())["metrics"]["elbo"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    elbos: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for seed in seeds:  # interleaved, so machine load falls on both alike
        for precision in elbos:
            elbos[precision].append(test_elbo(precision, seed, args.epochs))
            print(f"seed {seed} {precision}: test ELBO {elbos[precision][-1]:.3f}", flush=True)
    summary = {
        p: {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else None}
        for p, v in elbos.items()
    }
    gap = summary["bf16"]["mean"] - summary["fp32"]["mean"]
    result = {
        "epochs": args.epochs,
        "seeds": seeds,
        "test_elbo": elbos,
        "summary": summary,
        "bf16_minus_fp32": gap,
        "estimator": "ELBO, 1 posterior draw, analytic KL",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
