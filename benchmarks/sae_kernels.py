"""One TopK SAE training step (forward + backward of the loss) three ways, on CPU:

- dense:    aekit with sparse_decode="dense": plain autograd over the (B, n) code;
- half:     an embedding_bag decode but a dense backward through the encoder (written here
            in a few lines, same weights and loss): what the decode kernel alone buys.
            EleutherAI's sparsify itself is measured in benchmarks/sae_minilm.py;
- sparse:   aekit's kernels: the encoder's backward and the decode touch only the k rows.

The arms run interleaved (A B C A B C ...), each step timed on its own, and the medians and
their ratios are printed. The machine is shared, so run it a few times and read the ratios,
not the absolute times:

    python benchmarks/sae_kernels.py                      # d=384, n=6144, k=32, B=4096
    python benchmarks/sae_kernels.py --threads 1
    python benchmarks/sae_kernels.py --sweep-k 32,128,384,768   # where auto should switch
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

import aekit


def half_sparse_step(model: aekit.Autoencoder, x: torch.Tensor) -> None:
    """ReLU encoder with its dense backward, top-k, embedding_bag decode; FVU loss."""
    enc, dec = model.encoder, model.decoder
    pre = F.relu(F.linear(x - dec.b_dec, enc.W_enc, enc.b_enc))
    values, indices = pre.topk(model.bottleneck.options.k, dim=1, sorted=False)
    x_hat = F.embedding_bag(indices, dec.W_dec, per_sample_weights=values, mode="sum")
    x_hat = x_hat + dec.b_dec
    fvu = (x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    fvu.backward()


def aekit_step(model: aekit.Autoencoder, x: torch.Tensor) -> None:
    model.backward(model(x, step=0))


def time_arms(arms: dict, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in arms}
    for step in arms.values():  # warm-up
        step()
    for _ in range(repeats):
        for name, step in arms.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def compare(d: int, n: int, k: int, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(batch, d)
    models = {}
    for mode in ("dense", "sparse"):
        torch.manual_seed(0)
        # aux_coefficient=0: the dead-latent term is not part of this comparison.
        models[mode] = aekit.build(
            "sae-topk",
            (d,),
            latent_dim=n,
            k=k,
            sparse_decode=mode,
            aux_coefficient=0.0,
            normalize=False,
        )
        models[mode].initialise(x[:1024])
    arms = {
        "dense": lambda: aekit_step(models["dense"], x),
        "half": lambda: half_sparse_step(models["dense"], x),
        "sparse": lambda: aekit_step(models["sparse"], x),
    }

    def zeroed(step):
        def run():
            for model in models.values():
                model.zero_grad(set_to_none=True)
            step()

        return run

    times = time_arms({name: zeroed(step) for name, step in arms.items()}, repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"d={d} n={n} k={k} B={batch} threads={torch.get_num_threads()} "
        f"repeats={repeats}: "
        + ", ".join(f"{name} {1e3 * s:.0f} ms" for name, s in medians.items())
        + f" | dense/sparse {medians['dense'] / medians['sparse']:.2f}x,"
        f" half/sparse {medians['half'] / medians['sparse']:.2f}x"
    )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--n", type=int, default=6144)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--sweep-k", default="", help="comma-separated k values instead of --k")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.sweep_k.split(",")] if args.sweep_k else [args.k]
    for k in ks:
        compare(args.d, args.n, k, args.batch, args.repeats)


if __name__ == "__main__":
    main()
