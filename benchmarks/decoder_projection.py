"""The unit-norm decoder's gradient projection, g <- g - (g . w / w . w) w per decoder row
(`DictionaryDecoder.after_backward`), two ways at n = 24,576 latents, d = 384: the
elementwise form `(g * w).sum(1)` with its (n, d) temporaries (aekit before), and the row
dots as one batched product (`einsum`) with an in-place `addcmul_` (aekit now). Fresh
gradients each repetition, as after every backward; interleaved, 15 repetitions, the first
dropped, medians [min-max], 1 and 2 threads; the two results are checked equal.

    python benchmarks/decoder_projection.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import interleave, median_after_warmup, save_result

N, D, REPEATS = 24_576, 384, 15


def elementwise(g: torch.Tensor, w: torch.Tensor) -> None:
    g.sub_(((g * w).sum(1, keepdim=True) / w.pow(2).sum(1, keepdim=True)) * w)


def batched(g: torch.Tensor, w: torch.Tensor) -> None:
    along = torch.einsum("nd,nd->n", g, w) / torch.einsum("nd,nd->n", w, w)
    g.addcmul_(w, along[:, None], value=-1)


def side(form, w: torch.Tensor):
    """One projection of a fresh gradient, as the backward leaves it; its seconds only."""

    def run() -> float:
        g = torch.randn(N, D) * 1e-3
        start = time.perf_counter()
        form(g, w)
        return time.perf_counter() - start

    return run


def main() -> None:
    torch.manual_seed(0)
    w = torch.nn.functional.normalize(torch.randn(N, D), dim=1)
    grad = torch.randn(N, D) * 1e-3
    a, b = grad.clone(), grad.clone()
    elementwise(a, w)
    batched(b, w)
    torch.testing.assert_close(a, b)
    rows = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        times = interleave(
            {"elementwise": side(elementwise, w), "batched": side(batched, w)}, REPEATS
        )
        rows[threads] = {
            name: {
                "median_ms": 1000 * median_after_warmup(ts),
                "range_ms": [1000 * min(ts[1:]), 1000 * max(ts[1:])],
            }
            for name, ts in times.items()
        }
        print(
            f"{threads} thread(s): "
            + ", ".join(
                f"{name} {r['median_ms']:.1f} ms [{r['range_ms'][0]:.1f}-{r['range_ms'][1]:.1f}]"
                for name, r in rows[threads].items()
            )
        )
    print(f"wrote {save_result('decoder_projection', {'n': N, 'd': D, 'rows': rows})}")


if __name__ == "__main__":
    main()
