"""The model recipes: a name, the paper, and which part fills each slot with which options.

A recipe is data, not code (a new method is one entry here plus its parts' registry lines),
and this module imports no torch, so `aekit models` answers without loading it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aekit.errors import AekitError


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    paper: str
    kinds: dict[str, str] = field(default_factory=dict)
    """Kind per slot (bottleneck, likelihood, corruption, objective) where not the default."""
    options: dict[str, Any] = field(default_factory=dict)
    """Option defaults of the recipe (routed to whichever part owns each name)."""
    data: dict[str, Any] = field(default_factory=dict)
    """Data defaults, e.g. dynamic binarisation for a likelihood bound."""
    conditional: bool = False
    """Whether the model needs a condition (labels or vectors) for every example."""
    latent_dim: int | None = None
    """The default latent width (None: the body's, e.g. expansion x inputs, else 16)."""
    train: dict[str, Any] = field(default_factory=dict)
    """Training defaults (TrainConfig fields) where they differ from the Trainer's."""
    lr_by_latents: bool = False
    """The default learning rate falls as 1/sqrt(latents) (`sae_learning_rate`)."""
    activations: bool = False
    """Trained on a network's activations (`--activations STORE` or `--model ... --texts`)
    rather than on a data set by default."""
    paired: bool = False
    """Predicts a paired target (one site from another: `--target-site`) instead of its input."""

    def train_defaults(self, latent_dim: int) -> dict[str, Any]:
        """TrainConfig defaults of this recipe for a model of `latent_dim` latents."""
        if self.lr_by_latents:
            return {**self.train, "lr": sae_learning_rate(latent_dim)}
        return dict(self.train)


def sae_learning_rate(n_latents: int) -> float:
    """2e-4 at 16,384 latents, scaled as 1/sqrt(latents): the learning-rate fit of Gao et al.
    2024 (Appendix A), as EleutherAI's sparsify uses it."""
    return 2e-4 / math.sqrt(n_latents / 2**14)


MAE_TRAIN = {
    "optimizer": "adamw",
    "weight_decay": 0.05,
    "schedule": "cosine",
    "batch_size": 256,
    "lr": 1.5e-3,
    "warmup_steps": 200,
}
"""MAE's pre-training recipe (He et al. 2022, Table 8): AdamW, weight decay 0.05, cosine
decay after a warm-up, at a smaller batch (256 for 4096) with the lr scaled up for small
models trained briefly."""

CODEC_OPTIONS = {"activation": "gdn", "channels": (64, 64)}
"""The learned codecs' transforms: stride-2 stages with GDN / IGDN (Ballé et al. 2018), two
of them on 28x28 images (a 7x7 latent grid). The factorized prior keeps 16 latent channels,
not the hyperprior's 64: each unused channel costs bits until its density has narrowed, which
is slow (one epoch of Fashion-MNIST at lambda 0.025: 2.30 bpp at 27.9 dB with 16 channels,
4.32 bpp at 26.3 dB with 64), while the hyperprior predicts a small scale for it at once."""
CODEC_TRAIN = {"lr": 1e-3, "grad_clip": 1.0}
"""Adam at 1e-3 for the short budgets here (the papers' 1e-4 is for millions of steps),
with CompressAI's gradient clipping at norm 1."""

DEFAULT_KINDS = {
    "body": "auto",
    "bottleneck": "identity",
    "likelihood": "bernoulli",
    "corruption": "none",
    "objective": "reconstruction",
}

RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise AekitError(f"unknown model {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]


register_recipe(
    Recipe(
        "ae",
        "Autoencoder: deterministic code, reconstruction loss",
        "Hinton & Salakhutdinov 2006, Reducing the dimensionality of data with neural networks",
    )
)
register_recipe(
    Recipe(
        "dae",
        "Denoising autoencoder: corrupted input (masking, gaussian, salt-pepper), clean target",
        "Vincent et al. 2008, Extracting and composing robust features with denoising autoencoders",
        kinds={"corruption": "masking"},
    )
)
register_recipe(
    Recipe(
        "vae",
        "Variational autoencoder: Gaussian posterior, analytic KL to N(0, I), ELBO in nats",
        "Kingma & Welling 2014, Auto-encoding variational Bayes",
        kinds={"bottleneck": "gaussian", "objective": "elbo"},
        data={"binarize": True},
    )
)
register_recipe(
    Recipe(
        "beta-vae",
        "beta-VAE: the KL weighted by beta (default 4) for disentangling",
        "Higgins et al. 2017, beta-VAE: learning basic visual concepts with a constrained "
        "variational framework",
        kinds={"bottleneck": "gaussian", "objective": "elbo"},
        options={"beta": 4.0},
        data={"binarize": True},
    )
)
register_recipe(
    Recipe(
        "beta-vae-capacity",
        "Capacity-annealed beta-VAE: gamma * |KL - C|, C raised linearly to C_max",
        "Burgess et al. 2018, Understanding disentangling in beta-VAE",
        kinds={"bottleneck": "gaussian", "objective": "capacity"},
        data={"binarize": True},
    )
)


GAUSSIAN_BOUND = {"bottleneck": "gaussian"}
TIGHTER = "Rainforth et al. 2018, Tighter variational bounds are not necessarily better"
for recipe in (
    Recipe(
        "iwae",
        "Importance weighted autoencoder: log-mean-exp of k importance weights (k=5)",
        "Burda, Grosse & Salakhutdinov 2016, Importance weighted autoencoders",
        kinds={**GAUSSIAN_BOUND, "objective": "iwae"},
        data={"binarize": True},
    ),
    Recipe(
        "miwae",
        "Multiply importance weighted AE: the mean of M IWAE bounds of K draws (8 x 8)",
        TIGHTER,
        kinds={**GAUSSIAN_BOUND, "objective": "miwae"},
        data={"binarize": True},
    ),
    Recipe(
        "ciwae",
        "Combination IWAE: beta * ELBO + (1 - beta) * IWAE over the same draws",
        TIGHTER,
        kinds={**GAUSSIAN_BOUND, "objective": "ciwae"},
        data={"binarize": True},
    ),
    Recipe(
        "piwae",
        "Partially IWAE: decoder on the IWAE bound, encoder on MIWAE (two backward passes)",
        TIGHTER,
        kinds={**GAUSSIAN_BOUND, "objective": "piwae"},
        data={"binarize": True},
    ),
    Recipe(
        "cvae",
        "Conditional VAE: encoder and decoder see a label (one-hot) or a conditioning vector",
        "Sohn, Lee & Yan 2015, Learning structured output representation using deep "
        "conditional generative models",
        kinds={**GAUSSIAN_BOUND, "objective": "elbo"},
        data={"binarize": True},
        conditional=True,
    ),
    Recipe(
        "hvae",
        "Two-level VAE: p(z2) p(z1|z2) p(x|z1), learned conditional prior, bottom-up q",
        "Burda et al. 2016 (two stochastic layers); Rezende et al. 2014, Stochastic "
        "backpropagation and approximate inference in deep generative models",
        kinds={"bottleneck": "hierarchical", "objective": "elbo"},
        data={"binarize": True},
    ),
    Recipe(
        "vamp",
        "VampPrior VAE: p(z) is a mixture of posteriors at 500 learned pseudo-inputs",
        "Tomczak & Welling 2018, VAE with a VampPrior",
        kinds={**GAUSSIAN_BOUND, "objective": "elbo"},
        options={"prior": "vamp"},
        data={"binarize": True},
    ),
    Recipe(
        "rae",
        "Regularised AE: |z|^2 penalty + decoder gradient penalty; samples from a fitted GMM",
        "Ghosh et al. 2020, From variational to deterministic autoencoders",
        kinds={"objective": "rae"},
    ),
    Recipe(
        "wae-mmd",
        "Wasserstein AE: deterministic code, MMD (IMQ kernel, U-statistic) to the prior",
        "Tolstikhin et al. 2018, Wasserstein auto-encoders",
        kinds={"objective": "wae-mmd"},
        options={"prior": "normal"},
    ),
    Recipe(
        "swae",
        "Sliced-Wasserstein AE: sliced Wasserstein distance to any samplable prior",
        "Kolouri et al. 2019, Sliced-Wasserstein autoencoders",
        kinds={"objective": "swae"},
        options={"prior": "normal"},
    ),
):
    register_recipe(recipe)


VQ_PAPER = "van den Oord, Vinyals & Kavukcuoglu 2017, Neural discrete representation learning"
DEAD_CODES = {"restart": True}
"""What the VQ recipes add to the paper: unused codes are pulled to the encoder outputs nearest
them (CVQ-VAE, Zheng & Vedaldi 2023). With the paper's N(0, I) codebook alone, the small
outputs of a freshly initialised encoder all pick the same few codes: on Fashion-MNIST (conv
body, K=512, one epoch, 3 seeds) plain VQ uses 0.8 % of its codes at MSE 0.0216; with
restarts 75.9 % at MSE 0.0101. k-means initialisation on top gives 84.7 % at MSE 0.0111 (more
codes, worse reconstructions), so it stays an option (`benchmarks/quantizer_defaults.py`).
`--no-restart` is the paper's setting."""
for recipe in (
    Recipe(
        "vqvae",
        "VQ-VAE: nearest of K=512 codes per grid position, straight-through, commitment loss; "
        "dead codes restarted (CVQ-VAE; --no-restart: the paper)",
        VQ_PAPER + "; Zheng & Vedaldi 2023, Online clustered codebook (CVQ-VAE)",
        kinds={"bottleneck": "vq"},
        options=DEAD_CODES,
    ),
    Recipe(
        "vqvae-ema",
        "VQ-VAE with the codebook learned by exponential moving averages (decay 0.99); dead "
        "codes restarted (--no-restart: the paper)",
        VQ_PAPER + " (appendix A.1); Zheng & Vedaldi 2023 (CVQ-VAE)",
        kinds={"bottleneck": "vq"},
        options={"ema": True, **DEAD_CODES},
    ),
    Recipe(
        "rqvae",
        "Residual VQ: 4 stages quantize successive residuals; quantizer dropout optional",
        "Lee et al. 2022, Autoregressive image generation using residual quantization; "
        "Zeghidour et al. 2021, SoundStream",
        kinds={"bottleneck": "rvq"},
    ),
    Recipe(
        "fsq",
        "Finite scalar quantization: tanh-bounded, rounded dims (levels 8,5,5,5), no aux loss",
        "Mentzer et al. 2024, Finite scalar quantization: VQ-VAE made simple",
        kinds={"bottleneck": "fsq"},
    ),
    Recipe(
        "lfq",
        "Lookup-free quantization: sign of each of 10 dims, entropy penalty",
        "Yu et al. 2024, Language model beats diffusion: tokenizer is key to visual generation",
        kinds={"bottleneck": "lfq"},
    ),
    Recipe(
        "bsq",
        "Binary spherical quantization: unit-sphere projection, then sign; entropy penalty",
        "Zhao, Xiong & Krahenbuhl 2024, Image and video tokenization with binary spherical "
        "quantization",
        kinds={"bottleneck": "bsq"},
    ),
):
    register_recipe(recipe)


SAE_TRAIN: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 4096,
    "eval_batch_size": 4096,
    "log_every": 50,
    "checkpoint_every": 500,
    "nll_k": 0,
}
"""Training defaults of every SAE recipe: one pass over a large store in batches of 4,096
activations (Gao et al. 2024), the terms logged every 50 steps and a checkpoint every 500."""


def sae_recipe(
    name: str,
    summary: str,
    paper: str,
    bottleneck: str,
    options: dict[str, Any],
    *,
    paired: bool = False,
) -> Recipe:
    """A sparse autoencoder on activations: the dictionary body, a sparse bottleneck and the
    sparse-coding objective (a Gaussian likelihood with a fixed scale only names the output
    space; the objective measures the error itself)."""
    return Recipe(
        name,
        summary,
        paper,
        kinds={
            "body": "dictionary",
            "bottleneck": bottleneck,
            "likelihood": "gaussian",
            "objective": "sparse-coding",
        },
        options={"variance": "fixed", **options},
        train=SAE_TRAIN,
        lr_by_latents=True,
        activations=True,
        paired=paired,
    )


K_SPARSE = {"reconstruction": "fvu"}
"""The k-sparse SAE recipes: FVU, AuxK (the objective's default 1/32), unit-norm decoder rows,
encoder rows at 1/sqrt(3) (`resolve_encoder_init`)."""
L1 = {
    "unit_norm_decoder": False,
    "reconstruction": "mse",
    "l1_coefficient": 5.0,
    "l1_warmup_steps": 1000,
    "aux_coefficient": 0.0,
}
"""ReLU + L1 (Anthropic, April 2024): decoder rows free (the L1 is weighted by their norms),
lambda 5 in their units, warmed up over 1,000 steps (the first 5% of training)."""
ANTHROPIC = (
    "Bricken et al. 2023, Towards monosemanticity; Conerly et al. 2024, Circuits Updates "
    "(April): training sparse autoencoders"
)
for recipe in (
    sae_recipe(
        "sae-relu",
        "Sparse autoencoder: ReLU latents, L1 penalty weighted by decoder norms, L1 warm-up",
        ANTHROPIC,
        "relu",
        L1,
    ),
    sae_recipe(
        "sae-topk",
        "TopK sparse autoencoder: exactly k active latents, AuxK loss on dead latents",
        "Gao et al. 2024, Scaling and evaluating sparse autoencoders",
        "topk",
        K_SPARSE,
    ),
    sae_recipe(
        "sae-batchtopk",
        "BatchTopK: the top B*k activations of the batch; a threshold for inference",
        "Bussmann, Leask & Nanda 2024, BatchTopK sparse autoencoders",
        "batchtopk",
        K_SPARSE,
    ),
    sae_recipe(
        "sae-jumprelu",
        "JumpReLU: learned per-latent thresholds, straight-through L0 penalty",
        "Rajamanoharan et al. 2024, Jumping ahead: improving reconstruction fidelity with "
        "JumpReLU sparse autoencoders; Lieberum et al. 2024, Gemma Scope",
        "jumprelu",
        {
            "reconstruction": "mse",
            "l0_coefficient": 0.001,
            "l0_warmup_steps": 10_000,
            "aux_coefficient": 0.0,
        },
    ),
    sae_recipe(
        "sae-matryoshka",
        "Matryoshka SAE: BatchTopK with nested prefix reconstruction losses",
        "Bussmann et al. 2025, Learning multi-level features with Matryoshka sparse autoencoders",
        "batchtopk",
        {**K_SPARSE, "matryoshka": "auto"},
    ),
    sae_recipe(
        "sae-abstopk",
        "AbsTopK: the k largest |pre-activations| with their signs (bidirectional features)",
        "AbsTopK: rethinking sparse autoencoders for bidirectional features (2025)",
        "abstopk",
        K_SPARSE,
    ),
    sae_recipe(
        "transcoder",
        "Transcoder: sparse latents from one site reconstruct another (an MLP's output from "
        "its input), ReLU + L1 as in the paper",
        "Dunefsky, Chlenski & Nanda 2024, Transcoders find interpretable LLM feature circuits",
        "relu",
        L1,
        paired=True,
    ),
    Recipe(
        "gumbel-vae",
        "Categorical VAE: 30 relaxed 10-way variables (Gumbel-softmax, annealed tau), KL",
        "Jang, Gu & Poole 2017, Categorical reparameterization with Gumbel-softmax; Maddison, "
        "Mnih & Teh 2017, The Concrete distribution",
        kinds={"bottleneck": "categorical", "objective": "elbo"},
        data={"binarize": True},
    ),
    Recipe(
        "jointvae",
        "JointVAE: 10 Gaussian + one 10-way relaxed categorical latent, a capacity per kind",
        "Dupont 2018, Learning disentangled joint continuous and discrete representations",
        kinds={"bottleneck": "joint", "objective": "joint-capacity"},
        data={"binarize": True},
    ),
    Recipe(
        "ksae",
        "k-sparse autoencoder: linear units, only the k largest kept (k=25), on images",
        "Makhzani & Frey 2013, k-Sparse autoencoders",
        kinds={"body": "mlp", "bottleneck": "topk"},
        options={"hidden": (), "k": 25, "rectify": False},
        latent_dim=1000,
    ),
):
    register_recipe(recipe)


FACTOR_LATENTS = 10
"""The latent width of the disentanglement recipes: 10, as in the FactorVAE and beta-TCVAE
papers' dSprites models and twice dSprites' five factors (the QLAE paper's rule)."""
for recipe in (
    Recipe(
        "beta-tcvae",
        "beta-TCVAE: the KL split into index-code MI, total correlation (x beta=6) and "
        "dimension-wise KL, estimated from the batch (mws or mss)",
        "Chen et al. 2018, Isolating sources of disentanglement in variational autoencoders",
        kinds={"bottleneck": "gaussian", "objective": "beta-tcvae"},
        data={"binarize": True},
        latent_dim=FACTOR_LATENTS,
    ),
    Recipe(
        "factor-vae",
        "FactorVAE: ELBO + gamma (35) x total correlation, estimated by a discriminator on "
        "per-dimension permuted codes, trained alongside with its own Adam",
        "Kim & Mnih 2018, Disentangling by factorising",
        kinds={"bottleneck": "gaussian", "objective": "factor-vae"},
        data={"binarize": True},
        latent_dim=FACTOR_LATENTS,
        train={"lr": 1e-4},
    ),
    Recipe(
        "qlae",
        "Quantized latent AE: a learned 10-value scalar codebook per latent, straight-through, "
        "AdamW with weight decay 0.1",
        "Hsu et al. 2023, Disentanglement via latent quantization",
        kinds={"bottleneck": "lq"},
        latent_dim=FACTOR_LATENTS,
        train={"optimizer": "adamw", "weight_decay": 0.1, "grad_clip": 1.0},
    ),
    Recipe(
        "factorized-ae",
        "Learned image codec: GDN conv transforms, latents rounded and entropy-coded under a "
        "learned density per channel; loss lambda x MSE(0-255) + bits per pixel",
        "Ballé et al. 2018, Variational image compression with a scale hyperprior "
        "(the factorized prior)",
        kinds={"body": "grid", "bottleneck": "factorized", "objective": "rd"},
        options={**CODEC_OPTIONS, "latent_channels": 16},
        train=CODEC_TRAIN,
    ),
    Recipe(
        "hyperprior-ae",
        "Learned image codec: GDN conv transforms, latents coded under Gaussians whose means "
        "and scales a side latent predicts (mean-scale hyperprior); lambda x MSE + bpp",
        "Minnen, Ballé & Toderici 2018, Joint autoregressive and hierarchical priors for "
        "learned image compression (the mean-scale hyperprior)",
        kinds={"body": "grid", "bottleneck": "hyperprior", "objective": "rd"},
        options=CODEC_OPTIONS,
        train=CODEC_TRAIN,
    ),
):
    register_recipe(recipe)


register_recipe(
    Recipe(
        "mae",
        "Masked autoencoder: a ViT encodes the visible 25 % of the patches, a light decoder "
        "predicts the hidden ones",
        "He et al. 2022, Masked autoencoders are scalable vision learners",
        kinds={
            "body": "vit",
            "corruption": "patches",
            "objective": "masked-patches",
            "likelihood": "gaussian",
        },
        options={"token_decoder": True, "variance": "fixed"},
        train=MAE_TRAIN,
    )
)


def recipe_table() -> str:
    """`aekit models`: one line per recipe with its summary and paper."""
    width = max(len(name) for name in RECIPES)
    return "\n".join(
        f"{name:<{width}}  {recipe.summary}  [{recipe.paper}]" for name, recipe in RECIPES.items()
    )
