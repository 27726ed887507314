"""Exact top-k selection over a batch of SAE pre-activations: torch.topk against aekit's
two-stage selection (`aekit.sparse.two_stage_topk`: the k blocks with the largest maxima,
then the k largest entries among them), at n / k from 16 to 1,024, block widths 16, 32 and
64, batches of 4,096 rows of Gaussian scores, 1 and 2 threads. The methods alternate within
each repetition (topk, then every block width), 9 repetitions, the first dropped; medians
with [min-max]. Every method's selected values are checked equal to torch.topk's.

    python benchmarks/topk.py

Writes benchmarks/results/peers-topk.json; the cut-over `aekit.sparse.BLOCKED_TOPK_RATIO` is set
from it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import interleave, median_after_warmup, save_result

from aekit.sparse import two_stage_topk

ROWS = 4096
CASES = [  # (latents, k)
    (512, 32),
    (1024, 32),
    (2048, 32),
    (4096, 32),
    (8192, 32),
    (16384, 32),
    (24576, 32),
    (32768, 32),
    (6144, 64),
    (24576, 64),
    (32768, 128),
    (65536, 64),
]
BLOCKS = (16, 32, 64)
REPEATS = 9


def same_selection(score: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same selected values in every row. Positions may differ where the k-th value is
    tied, which float32 Gaussians do at these sizes: comparing positions failed once here
    (block 16, n = 24,576, k = 64)."""
    return torch.equal(score.gather(1, a).sort(1).values, score.gather(1, b).sort(1).values)


def timed(method):
    """The method as an `interleave` side: one call, its seconds."""

    def run() -> float:
        start = time.perf_counter()
        method()
        return time.perf_counter() - start

    return run


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for n, k in CASES:
            score = torch.randn(ROWS, n)
            reference = score.topk(k, dim=1, sorted=False).indices
            methods = {"topk": lambda s=score, k=k: s.topk(k, dim=1, sorted=False).indices}
            for block in BLOCKS:
                if n % block == 0 and n // block >= k:
                    methods[f"block{block}"] = lambda s=score, k=k, b=block: two_stage_topk(s, k, b)
            for name, method in methods.items():
                if not same_selection(score, method(), reference):
                    raise SystemExit(f"{name} selected other latents than torch.topk at n={n}")
            times = interleave({name: timed(method) for name, method in methods.items()}, REPEATS)
            kept = {name: ts[1:] for name, ts in times.items()}
            medians = {name: median_after_warmup(ts) for name, ts in times.items()}
            row = {
                "threads": threads,
                "latents": n,
                "k": k,
                "n_over_k": n // k,
                "median_ms": {name: 1000 * m for name, m in medians.items()},
                "range_ms": {name: [1000 * min(ts), 1000 * max(ts)] for name, ts in kept.items()},
                "over_topk": {name: m / medians["topk"] for name, m in medians.items()},
            }
            rows.append(row)
            print(
                f"{threads}t n={n:>6} k={k:>3} n/k={n // k:>5}: "
                f"topk {1000 * medians['topk']:7.1f} ms"
                + "".join(
                    f"  {name} {ratio:.2f}x"
                    for name, ratio in row["over_topk"].items()
                    if name != "topk"
                ),
                flush=True,
            )
    print(f"wrote {save_result('topk', {'rows': rows})}")


if __name__ == "__main__":
    main()
