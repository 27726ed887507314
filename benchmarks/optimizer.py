"""What the optimiser costs in a training step: the textbook VAE loop
(`benchmarks/peers/handloop.py`) with torch's default Adam against the same loop with
`fused=True` (what `aekit.Trainer` uses where torch has it), on the MLP of the peer
comparisons (784-512-256-16) and on the default conv body, binarised Fashion-MNIST, batch 100.

The two loops train deep copies of the same initial model; turns alternate (default, fused,
default, ...), each turn a fixed subset of the training set; the first turn of each is
dropped; medians and ranges of the rest.

    python benchmarks/optimizer.py --threads 1
    python benchmarks/optimizer.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import interleave, save_result
from peers.handloop import HAND_LOOPS

import aekit
from aekit.data import DataConfig, load_data

BODIES = {"mlp": {"body": "mlp", "hidden": (512, 256)}, "conv": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--data-dir", default="/work/shared/data/fashion-mnist")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = DataConfig(source="fashion-mnist", data_dir=args.data_dir, val_fraction=0.0)
    x = load_data(spec).train.x[: args.examples]
    rows = {}
    for body, options in BODIES.items():
        torch.manual_seed(0)
        model = aekit.build("vae", (1, 28, 28), 16, **options)
        sides = {}
        for name, fused in (("default", None), ("fused", True)):
            copy_ = copy.deepcopy(model)
            optimizer = torch.optim.Adam(copy_.parameters(), lr=1e-3, fused=fused)
            generator = torch.Generator().manual_seed(0)

            def turn(m=copy_, o=optimizer, g=generator) -> float:
                return HAND_LOOPS["vae"](m, o, x, 100, g)

            sides[name] = turn
        seconds = interleave(sides, args.turns)
        kept = {name: v[1:] for name, v in seconds.items()}
        steps = args.examples // 100
        rows[body] = {
            name: {
                "median_ms_per_step": 1e3 * statistics.median(v) / steps,
                "range_ms_per_step": [1e3 * min(v) / steps, 1e3 * max(v) / steps],
            }
            for name, v in kept.items()
        }
        ratio = statistics.median(kept["fused"]) / statistics.median(kept["default"])
        rows[body]["fused_over_default"] = ratio
        print(
            f"{body}, {args.threads} thread(s): default Adam "
            f"{rows[body]['default']['median_ms_per_step']:.2f} ms/step, fused "
            f"{rows[body]['fused']['median_ms_per_step']:.2f} ms/step ({ratio:.2f}x)",
            flush=True,
        )
    save_result(f"optimizer-{args.threads}t", {"threads": args.threads, "bodies": rows})


if __name__ == "__main__":
    main()
