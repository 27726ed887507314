"""Three ways to compute a Bernoulli log-likelihood over many draws against one binary target,
timed interleaved at 1 thread: torch's fused `binary_cross_entropy_with_logits` on the
expanded target (aekit's `likelihoods.Bernoulli`), `x·l − softplus(l)` with the product as a
batched matrix product, and `log_sigmoid((2x − 1)·l)`. Shapes: the likelihood estimator's
(25 draws, 100 images, 784 pixels) without gradients, and a training batch (100, 784) forward
and backward. All three agree to float32 rounding (checked here).

    python benchmarks/bernoulli.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import save_result


def cross_entropy(logits, x):
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )


def softplus_form(logits, x):
    agree = torch.einsum("sbd,bd->sb", logits, x) if logits.dim() == 3 else (logits * x).sum(-1)
    return agree - F.softplus(logits).sum(-1)


def signed_form(logits, x):
    return F.logsigmoid(logits * (2 * x - 1)).sum(-1)


FORMS = {"cross_entropy": cross_entropy, "softplus": softplus_form, "log_sigmoid": signed_form}


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = (torch.rand(100, 784) < 0.3).float()
    many = torch.randn(25, 100, 784)
    batch = torch.randn(100, 784, requires_grad=True)
    for form in FORMS.values():
        torch.testing.assert_close(form(many, x), cross_entropy(many, x), rtol=1e-5, atol=1e-3)

    def estimator(form):
        with torch.no_grad():
            form(many, x)

    def training(form):
        form(batch, x).sum().backward()

    results = {}
    for case, work in (("estimator (25, 100, 784)", estimator), ("training (100, 784)", training)):
        seconds = {name: [] for name in FORMS}
        for _ in range(30):
            for name, form in FORMS.items():
                start = time.perf_counter()
                work(form)
                seconds[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(v[1:]) for name, v in seconds.items()}
        results[case] = {
            name: {"median_ms": 1e3 * m, "over_cross_entropy": m / medians["cross_entropy"]}
            for name, m in medians.items()
        }
        shown = ", ".join(
            f"{name} {1e3 * m:.2f} ms ({m / medians['cross_entropy']:.2f}x)"
            for name, m in medians.items()
        )
        print(f"{case}: {shown}")
    save_result("bernoulli", {"threads": 1, "cases": results})


if __name__ == "__main__":
    main()
