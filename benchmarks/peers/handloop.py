"""The framework-overhead floor: textbook PyTorch training epochs on an aekit model's modules.

Each hand loop trains the SAME `encoder`, `decoder` and `bottleneck` modules as an aekit model
(the caller deep-copies the model first) with the plainest loop there is: a seeded shuffle,
dynamic binarisation (rand < x) for Bernoulli-likelihood models, forward, loss,
zero_grad(set_to_none=True), backward, Adam step. No trainer, no per-step `.item()`, no
bookkeeping. The maths is aekit's recipe, written out by hand:

- vae:     Bernoulli -log p(x|z) + analytic KL(q(z|x) || N(0, I)), one reparameterised draw;
- iwae:    -log (1/k) sum_s p(x, z_s) / q(z_s|x), k from the model's objective (default 5);
- vqvae:   -log p(x|z_q) + beta |h - sg[e]|^2 + |sg[h] - e|^2 (summed over each code vector's
           dimensions and the positions of an example), nearest code by squared distance,
           straight-through gradient;
- wae-mmd: -log p(x|z) + lambda * MMD^2 (unbiased U-statistic, inverse multiquadratic kernel
           C / (C + |x - y|^2) summed over C = 2 D s, s in aekit's scales) to N(0, I) draws;
- rae:     -log p(x|z) + beta |z|^2 / 2 + lambda |J_D(z)^T v|^2 (gradient penalty, v ~ N(0, I));
- fsq:     -log p(x|z_q), z_q = round(tanh(h + shift) * half_range - offset) / half_width,
           straight-through rounding.

Interface (imported by the peer comparisons):

    HAND_LOOPS[name](model, optimizer, x, batch_size, generator) -> seconds of one epoch

`check_same_loss` verifies, on one fixed batch with fixed noise (the global RNG seeded alike
before both), that each hand-written loss equals aekit's objective on the same modules:

    python benchmarks/peers/handloop.py --check [--data-dir /work/shared/data/fashion-mnist]
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import aekit

LossFn = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per example (summed over pixels), from the decoder's logits."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def vae_loss(model, x: torch.Tensor) -> torch.Tensor:
    mu, logvar = model.encoder(x).chunk(2, dim=-1)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    nll = bernoulli_nll(model.decoder(z), x)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return (nll + kl).mean()


def iwae_loss(model, x: torch.Tensor) -> torch.Tensor:
    k = getattr(model.objective.options, "k", 5)
    mu, logvar = model.encoder(x).chunk(2, dim=-1)
    eps = torch.randn(k, *mu.shape)
    z = mu + (0.5 * logvar).exp() * eps  # (k, B, D)
    logits = model.decoder(z.reshape(-1, mu.shape[1])).reshape(k, x.shape[0], -1)
    log_px = -F.binary_cross_entropy_with_logits(
        logits, x.flatten(1).expand(k, -1, -1), reduction="none"
    ).sum(-1)
    # log p(z) - log q(z|x); the log(2 pi) constants cancel.
    log_ratio = -0.5 * (z.pow(2) - logvar - eps.pow(2)).sum(-1)
    log_w = log_px + log_ratio  # (k, B)
    return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()


def vqvae_loss(model, x: torch.Tensor) -> torch.Tensor:
    bottleneck = model.bottleneck
    codebook, beta = bottleneck.embedding, bottleneck.options.commitment
    h = model.encoder(x)
    v = h.reshape(-1, codebook.shape[1])  # one row per code vector
    with torch.no_grad():
        distances = (
            v.pow(2).sum(1, keepdim=True) - 2 * v @ codebook.T + codebook.pow(2).sum(1)[None]
        )
        nearest = distances.argmin(1)
    e = codebook[nearest]
    commitment = beta * (v - e.detach()).pow(2).sum() / x.shape[0]
    codebook_loss = (v.detach() - e).pow(2).sum() / x.shape[0]
    z_q = v + (e - v).detach()
    nll = bernoulli_nll(model.decoder(z_q.reshape(h.shape)), x)
    return nll.mean() + commitment + codebook_loss


def imq_mmd(z: torch.Tensor, p: torch.Tensor, scales, base: float) -> torch.Tensor:
    """Unbiased MMD^2 between equally sized samples, IMQ kernel summed over C = base * s."""
    n = z.shape[0]

    def sq(a, b):
        return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(0)

    d_zz, d_pp, d_zp = sq(z, z), sq(p, p), sq(z, p)
    off_diagonal = 1 - torch.eye(n)
    total = 0.0
    for s in scales:
        c = base * s
        within = ((c / (c + d_zz) + c / (c + d_pp)) * off_diagonal).sum() / (n * (n - 1))
        total = total + within - 2 * (c / (c + d_zp)).mean()
    return total


def wae_mmd_loss(model, x: torch.Tensor) -> torch.Tensor:
    from aekit.objectives.matching import IMQ_SCALES

    z = model.encoder(x)
    nll = bernoulli_nll(model.decoder(z), x)
    prior = torch.randn(z.shape)  # N(0, I), the recipe's prior
    mmd = imq_mmd(z, prior, IMQ_SCALES, base=2.0 * z.shape[1])
    return nll.mean() + model.objective.options.mmd_weight * mmd


def rae_loss(model, x: torch.Tensor) -> torch.Tensor:
    o = model.objective.options
    z = model.encoder(x)
    logits = model.decoder(z)
    loss = bernoulli_nll(logits, x).mean() + o.embedding_weight * 0.5 * z.pow(2).sum(1).mean()
    if o.regulariser == "gp":
        v = torch.randn_like(logits)
        (jtv,) = torch.autograd.grad((logits * v).sum(), z, create_graph=True)
        loss = loss + o.regulariser_weight * jtv.pow(2).sum(1).mean()
    elif o.regulariser == "l2":
        decay = sum(p.pow(2).sum() for p in model.decoder.parameters())
        loss = loss + o.regulariser_weight * decay
    return loss


def fsq_loss(model, x: torch.Tensor) -> torch.Tensor:
    q = model.bottleneck  # its constants: shift, half_range, offset, half_width per dimension
    h = model.encoder(x)
    bounded = torch.tanh(h.reshape(-1, q.shift.shape[0]) + q.shift) * q.half_range - q.offset
    z_q = (bounded + (bounded.round() - bounded).detach()) / q.half_width
    return bernoulli_nll(model.decoder(z_q.reshape(h.shape)), x).mean()


LOSSES: dict[str, LossFn] = {
    "vae": vae_loss,
    "iwae": iwae_loss,
    "vqvae": vqvae_loss,
    "wae-mmd": wae_mmd_loss,
    "rae": rae_loss,
    "fsq": fsq_loss,
}


def hand_epoch(
    loss_fn: LossFn, model, optimizer, x: torch.Tensor, batch_size: int, generator
) -> float:
    """One epoch of the textbook loop; returns its seconds."""
    binarize = model.config.likelihood.kind == "bernoulli"
    start = time.perf_counter()
    order = torch.randperm(len(x), generator=generator)
    for i in range(0, len(x), batch_size):
        xb = x[order[i : i + batch_size]]
        if binarize:
            xb = (torch.rand(xb.shape, generator=generator) < xb).float()
        loss = loss_fn(model, xb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


HAND_LOOPS: dict[str, Callable[..., float]] = {
    name: functools.partial(hand_epoch, fn) for name, fn in LOSSES.items()
}

CHECKS: dict[str, tuple[str, dict]] = {
    "vae": ("vae", {}),
    "iwae": ("iwae", {"k": 5}),
    "vqvae": ("vqvae", {"code_dim": 16}),
    "wae-mmd": ("wae-mmd", {}),
    "rae": ("rae", {}),
    # The recipe's RAE weights (1e-4, 1e-7) leave the penalties below float32 resolution of
    # the loss; weights of 1 check that both terms are written alike.
    "rae (weights 1)": ("rae", {"embedding_weight": 1.0, "regulariser_weight": 1.0}),
    "fsq": ("fsq", {}),
}


def check_same_loss(
    x: torch.Tensor, names=tuple(CHECKS), seed: int = 0
) -> dict[str, dict[str, float]]:
    """aekit's objective and the hand-written loss on one fixed batch `x` (binarised), same
    modules, same noise (the global RNG seeded alike before each). Returns, per model, both
    values, their relative difference and the largest relative gradient difference."""
    results = {}
    for name in names:
        recipe, options = CHECKS[name]
        torch.manual_seed(seed)
        model = aekit.build(
            recipe, tuple(x.shape[1:]), 16, body="mlp", hidden=(512, 256), **options
        )
        model.train()
        hand = copy.deepcopy(model)
        torch.manual_seed(seed + 1)
        ours = model(x, step=None).loss
        ours.backward()
        torch.manual_seed(seed + 1)
        theirs = LOSSES[recipe](hand, x)
        theirs.backward()
        grad_diff = 0.0
        for p, q in zip(model.parameters(), hand.parameters(), strict=True):
            if p.grad is None and q.grad is None:
                continue
            scale = p.grad.abs().max().clamp_min(1e-12)
            grad_diff = max(grad_diff, float((p.grad - q.grad).abs().max() / scale))
        a, b = float(ours.detach()), float(theirs.detach())
        results[name] = {
            "aekit": a,
            "hand": b,
            "relative_difference": abs(a - b) / max(abs(a), 1e-12),
            "max_relative_gradient_difference": grad_diff,
        }
    return results


def fixed_batch(data_dir: str | None, n: int = 100, seed: int = 0) -> tuple[torch.Tensor, str]:
    if data_dir and Path(data_dir).is_dir():
        from aekit.data import DataConfig, load_data

        splits = load_data(
            DataConfig(source="fashion-mnist", data_dir=data_dir, binarize=True, val_fraction=0.0)
        )
        x, what = splits.train.x[:n], f"the first {n} Fashion-MNIST training images"
    else:
        x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
        what = f"{n} uniform random 28x28 images (no data at {data_dir})"
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(x.shape, generator=g) < x).float(), what + ", binarised"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare losses with aekit's")
    parser.add_argument("--data-dir", default="/work/shared/data/fashion-mnist")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.check:
        parser.print_help()
        return
    x, what = fixed_batch(args.data_dir)
    print(f"batch: {what}\n")
    print("| model | aekit loss | hand loss | relative difference | max rel. grad difference |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name, r in check_same_loss(x).items():
        worst = max(worst, r["relative_difference"])
        print(
            f"| {name} | {r['aekit']:.6f} | {r['hand']:.6f} | {r['relative_difference']:.2e} | "
            f"{r['max_relative_gradient_difference']:.2e} |"
        )
    print(f"\n{'OK' if worst < 1e-4 else 'MISMATCH'}: largest relative difference {worst:.2e}")


if __name__ == "__main__":
    main()
