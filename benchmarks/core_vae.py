"""The default VAE of `aekit train vae` on a data set: test ELBO and training throughput.

Throughput is a ratio against a minimal hand-written PyTorch loop (same networks, same
batches, same maths, no trainer) run in this process, its epochs interleaved with aekit's
(A B A B...) so both see the same machine load; the figure is the ratio of median epoch times.

    python benchmarks/core_vae.py --data digits --epochs 100
    python benchmarks/core_vae.py --data fashion-mnist \
        --data-dir ../shared/data/fashion-mnist --epochs 10

Writes benchmarks/results/core_vae-<data>-<threads>t.json and prints a Markdown row.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import aekit
from aekit.data import DataConfig, load_data
from aekit.nets import resolve_body


def plain_epoch(model, optimizer, x: torch.Tensor, batch_size: int, generator) -> float:
    """One epoch of the textbook loop: shuffle, binarise, reparameterise, ELBO, Adam."""
    start = time.perf_counter()
    order = torch.randperm(len(x), generator=generator)
    for i in range(0, len(x), batch_size):
        xb = x[order[i : i + batch_size]]
        xb = (torch.rand(xb.shape, generator=generator) < xb).float()
        mu, logvar = model.encoder(xb).chunk(2, dim=-1)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        logits = model.decoder(z)
        nll = F.binary_cross_entropy_with_logits(logits, xb, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        loss = (nll + kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = load_data(DataConfig(source=args.data, data_dir=args.data_dir, binarize=True))
    torch.manual_seed(args.seed)
    model = aekit.build("vae", splits.train.shape)  # the CLI's defaults
    reference = copy.deepcopy(model)
    ref_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    config = aekit.TrainConfig(epochs=args.epochs, seed=args.seed, progress=False, device="cpu")
    plain_seconds: list[float] = []

    def interleave(trainer, record):
        plain_seconds.append(
            plain_epoch(reference, ref_optimizer, splits.train.x, config.batch_size, generator)
        )

    start = time.perf_counter()
    result = aekit.Trainer(model, splits.train, splits.val, config, callbacks=[interleave]).fit()
    wall = time.perf_counter() - start
    test = aekit.evaluate(model, splits.test, detailed=True)
    aekit_seconds = [r["train_seconds"] for r in result.history]
    # The first epoch of each side pays for warm-up; medians over the rest.
    ratio = statistics.median(aekit_seconds[1:] or aekit_seconds) / statistics.median(
        plain_seconds[1:] or plain_seconds
    )
    summary = {
        "data": args.data,
        "shape": list(splits.train.shape),
        "train/val/test": [len(splits.train), len(splits.val or []), len(splits.test)],
        "body": resolve_body(model.config.body.kind, model.config.body.options, model.input_shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": args.epochs,
        "best_epoch": result.best_epoch,
        "threads": args.threads,
        "test_elbo_nats": test["elbo"],
        "test_nll_nats": test["nll"],
        "test_kl_nats": test["kl"],
        "test_bits_per_dim": test["bits_per_dim"],
        "active_units": test["active_units"],
        "estimator": test["estimator"],
        "epoch_time_ratio_aekit_over_plain_loop": ratio,
        "torch": torch.__version__,
    }
    out = Path(__file__).parent / "results" / f"core_vae-{args.data}-{args.threads}t.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(
        f"\n| {args.data} | {summary['body']} | {args.epochs} | {test['elbo']:.2f} | "
        f"{test['kl']:.2f} | {test['bits_per_dim']:.4f} | {test['active_units']} | "
        f"{ratio:.2f} |  (wall {wall:.0f} s, both sides)"
    )


if __name__ == "__main__":
    main()
