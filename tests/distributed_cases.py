"""Training runs that tests/test_distributed.py makes once in one process and once on two
ranks (`torchrun --nproc_per_node 2 tests/distributed_cases.py OUT CASE...`).

Each rank writes what it ended with to OUT/CASE.rankR.safetensors (the weights, buffers
included) and OUT/CASE.rankR.json (the epoch records); the run directories themselves are
written by the Trainer. The data is made here, the same on every rank."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import aekit
from aekit import distributed
from aekit.train import TrainConfig, Trainer
from conftest import TINY_NET  # this folder is on the path of the script and of pytest

EXAMPLES = 37
"""With batches of 8 the last batch has 5 rows: 3 on rank 0, 2 on rank 1."""
VAL = 17
"""Validated in batches of 16: 8 rows a rank, then 1 row that rank 0 alone counts."""


def images(n: int = EXAMPLES, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g)


def activations(n: int = 64, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(40, d, generator=g), dim=1)
    weights = torch.rand(n, 40, generator=g) * (torch.rand(n, 40, generator=g) < 0.1)
    return weights @ directions + 0.01 * torch.randn(n, d, generator=g)


def vae():
    torch.manual_seed(0)
    return aekit.build("vae", (1, 8, 8), latent_dim=3, **TINY_NET), images(), images(VAL, 1)


def vqvae():
    # EMA codebook, k-means initialisation from the first batch and dead-code restarts.
    torch.manual_seed(0)
    model = aekit.build(
        "vqvae-ema", (1, 8, 8), codebook_size=16, code_dim=4, kmeans_init=2, **TINY_NET
    )
    return model, images(), images(VAL, 1)


def sae_topk():
    # Few enough rows per latent that latents die and AuxK trains them.
    torch.manual_seed(0)
    model = aekit.build("sae-topk", (16,), latent_dim=64, k=4, dead_tokens=24)
    return model, activations(), activations(VAL, seed=1)


def sae_batchtopk():
    torch.manual_seed(0)
    model = aekit.build("sae-batchtopk", (16,), latent_dim=64, k=4)
    return model, activations(), activations(VAL, seed=1)


def vae_short():
    # 33 rows in batches of 8: the last batch has 1 row, fewer than the ranks.
    torch.manual_seed(0)
    return aekit.build("vae", (1, 8, 8), latent_dim=3, **TINY_NET), images(33), None


MODELS = {
    "vae_short": vae_short,
    "vae": vae,
    "vqvae": vqvae,
    "sae_topk": sae_topk,
    "sae_batchtopk": sae_batchtopk,
}


def train(
    case: str,
    out: Path | None,
    *,
    epochs: int = 2,
    resume: bool = False,
    interrupt: int = 0,
    batch_size: int = 8,
    **options,
):
    """The case's model trained `epochs` epochs (batches of 8, Adam); `out` its run
    directory. Returns the trainer and its fit result."""
    model, x, val = MODELS[case.split("-")[0]]()
    if interrupt:
        interrupt_after(model, interrupt)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=3e-3,
        seed=1,
        device="cpu",
        progress=False,
        nll_k=0,
        eval_batch_size=16,
        out=None if out is None else str(out),
        **options,
    )
    trainer = Trainer(model, x, val, config)
    return trainer, trainer.fit(resume=resume)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def interrupt_after(model: torch.nn.Module, steps: int) -> None:
    """Every rank stops after `steps` optimiser steps, as Ctrl-C would (the same step on both)."""
    after_step, taken = model.after_step, [0]

    def counted() -> None:
        after_step()
        taken[0] += 1
        if taken[0] == steps:
            raise KeyboardInterrupt

    model.after_step = counted


def run(out: Path, case: str) -> None:
    """CASE is a model name, optionally with a suffix: `-writer` (rank r writes its run to
    OUT/CASE.run.rankR, so only rank 0's may exist), `-first` (2 epochs, a checkpoint every 3
    steps, interrupted after step 7, in the middle of epoch 2; in OUT/NAME.run) and `-resumed`
    (that run resumed)."""
    rank = int(os.environ.get("RANK", "0"))
    name = case.split("-")[0]
    if case.endswith("-writer"):
        trainer, result = train(case, out / f"{case}.run.rank{rank}")
    elif case.endswith("-first"):
        try:
            train(name, out / f"{name}.run", checkpoint_every=3, interrupt=7)
        except KeyboardInterrupt:
            return
        raise AssertionError("the run was not interrupted")
    elif case.endswith("-resumed"):
        trainer, result = train(name, out / f"{name}.run", resume=True)
    else:
        trainer, result = train(case, None)
    save_file(state(trainer.model), out / f"{case}.rank{rank}.safetensors")
    (out / f"{case}.rank{rank}.json").write_text(json.dumps(result.history))


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    for case in sys.argv[2:]:
        run(out, case)
    distributed.stop(together=True)


if __name__ == "__main__":
    main()
