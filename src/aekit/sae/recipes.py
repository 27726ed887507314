"""Named sparse-autoencoder recipes: an activation function and its paper's defaults.

`aekit models` lists them beside the autoencoder recipes; `aekit train sae-topk
--activations STORE` trains one. Every recipe becomes a transcoder with `--target-site`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aekit.errors import AekitError


@dataclass(frozen=True)
class SAERecipe:
    name: str
    summary: str
    paper: str
    options: dict[str, Any] = field(default_factory=dict)
    """SAEConfig fields where they differ from its defaults."""


SAE_RECIPES: dict[str, SAERecipe] = {
    r.name: r
    for r in (
        SAERecipe(
            "sae-relu",
            "Sparse autoencoder: ReLU latents, L1 penalty weighted by decoder norms, L1 warm-up",
            "Bricken et al. 2023, Towards monosemanticity; Conerly et al. 2024, Circuits "
            "Updates (April): training sparse autoencoders",
            {"activation": "relu"},
        ),
        SAERecipe(
            "sae-topk",
            "TopK sparse autoencoder: exactly k active latents, AuxK loss on dead latents",
            "Gao et al. 2024, Scaling and evaluating sparse autoencoders",
            {"activation": "topk"},
        ),
        SAERecipe(
            "sae-batchtopk",
            "BatchTopK: the top B*k activations of the batch; a threshold for inference",
            "Bussmann, Leask & Nanda 2024, BatchTopK sparse autoencoders",
            {"activation": "batchtopk"},
        ),
        SAERecipe(
            "sae-jumprelu",
            "JumpReLU: learned per-latent thresholds, straight-through L0 penalty",
            "Rajamanoharan et al. 2024, Jumping ahead: improving reconstruction fidelity with "
            "JumpReLU sparse autoencoders; Lieberum et al. 2024, Gemma Scope",
            {"activation": "jumprelu"},
        ),
        SAERecipe(
            "sae-matryoshka",
            "Matryoshka SAE: BatchTopK with nested prefix reconstruction losses",
            "Bussmann et al. 2025, Learning multi-level features with Matryoshka sparse "
            "autoencoders",
            {"activation": "batchtopk", "matryoshka": "auto"},
        ),
        SAERecipe(
            "sae-abstopk",
            "AbsTopK: the k largest |pre-activations| with their signs (bidirectional features)",
            "AbsTopK: rethinking sparse autoencoders for bidirectional features (2025)",
            {"activation": "abstopk"},
        ),
        SAERecipe(
            "transcoder",
            "Transcoder: sparse latents from one site reconstruct another (an MLP's output "
            "from its input), ReLU + L1 as in the paper",
            "Dunefsky, Chlenski & Nanda 2024, Transcoders find interpretable LLM feature circuits",
            {"activation": "relu", "transcoder": True},
        ),
    )
}

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 4096,
    "eval_batch_size": 4096,
    "log_every": 50,
    "checkpoint_every": 500,
    "nll_k": 0,
}
"""Training defaults of every SAE recipe: one pass over a large store in batches of 4,096
activations (Gao et al. 2024), the terms logged every 50 steps and a checkpoint every 500."""


def get_sae_recipe(name: str) -> SAERecipe:
    if name not in SAE_RECIPES:
        raise AekitError(f"unknown SAE recipe {name!r}; choose from {', '.join(SAE_RECIPES)}")
    return SAE_RECIPES[name]


def default_lr(n_latents: int) -> float:
    """2e-4 at 16,384 latents, scaled as 1/sqrt(latents): the learning-rate fit of Gao et al.
    2024 (Appendix A), as EleutherAI's sparsify uses it."""
    return 2e-4 / math.sqrt(n_latents / 2**14)


def nested_prefixes(n_latents: int, smallest: int = 64, ratio: int = 4) -> tuple[int, ...]:
    """Matryoshka prefix sizes 64, 256, 1024, ... below n_latents (the full dictionary is the
    last level): groups growing geometrically, as in Bussmann et al. 2025."""
    sizes, m = [], smallest
    while m < n_latents:
        sizes.append(m)
        m *= ratio
    return tuple(sizes)
