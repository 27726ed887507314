"""Options of the shared training loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aekit.components import SavedConfig
from aekit.errors import AekitError
from aekit.precision import check_precision


@dataclass
class TrainConfig(SavedConfig):
    epochs: int = 100
    """Passes over the training data."""
    batch_size: int = 64
    """Examples per optimisation step."""
    lr: float = 1e-3
    """Peak learning rate."""
    optimizer: str = "adam"
    """`adam` or `adamw`."""
    weight_decay: float = 0.0
    """L2 penalty (adam) or decoupled weight decay (adamw)."""
    schedule: str = "constant"
    """Learning-rate schedule after warm-up: `constant` or `cosine` (down to min_lr_ratio * lr)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine schedule, as a fraction of lr."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0: off)."""
    patience: int = 0
    """Stop after this many epochs without a better validation loss (0: never stop early)."""
    seed: int = 0
    """Seeds initialisation, shuffling, binarisation and sampling: equal seeds, equal runs."""
    device: str = "auto"
    """`cpu`, `cuda`, `cuda:N`, `mps`, or `auto` (cuda when available)."""
    precision: str = "fp32"
    """`fp32`, `tf32` (CUDA matmuls in TensorFloat-32) or `bf16` (the network bodies autocast to
    bfloat16; losses, KL and likelihood sums stay float32): see `aekit/precision.py`."""
    compile: bool = False
    """torch.compile the training step's forward (the first steps pay for compiling)."""
    place_sites: bool = False
    """On several ranks, a group of models (`--site A,B,...`): each rank trains the members of
    its sites on whole batches (round robin), instead of a slice of every batch for all."""
    eval_batch_size: int = 1000
    """Examples per batch in validation and evaluation."""
    nll_k: int = 100
    """Importance samples per example of the test -log p(x) after training (0: skip)."""
    nll_examples: int = 1000
    """Test examples of that -log p(x): the first N of the test split (0: all). The default
    keeps the end of training cheaper than an epoch on Fashion-MNIST (`benchmarks/
    end_of_run.py`); `aekit eval RUN` estimates it on the whole test split."""
    out: str | None = None
    """Run directory (config, weights, checkpoints, metrics, report); None: keep nothing on disk."""
    overwrite: bool = False
    """Replace the run that `out` already holds (refused otherwise, unless it is an unfinished
    run of the same model and data, which starts over)."""
    progress: bool = True
    """Show a progress bar with the loss and throughput."""
    log_every: int = 0
    """Also record the training terms every this many steps in RUN/steps.jsonl (0: off)."""
    checkpoint_every: int = 0
    """Also write the resumable checkpoint every this many steps, for long epochs (0: at the
    end of each epoch only)."""
    tensorboard: bool = False
    """Also log to TensorBoard in RUN/tensorboard (needs the `tensorboard` package)."""

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "eval_batch_size")
        for name in positive:
            if not getattr(self, name) >= 1:
                raise AekitError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not 0 < self.lr < math.inf:
            raise AekitError(f"lr must be positive and finite (got {self.lr})")
        for name in ("weight_decay", "grad_clip", "min_lr_ratio"):
            if not math.isfinite(getattr(self, name)):
                raise AekitError(f"{name} must be finite (got {getattr(self, name)})")
        for name in (
            "weight_decay", "warmup_steps", "grad_clip", "patience", "min_lr_ratio", "nll_k",
            "nll_examples",
            "log_every", "checkpoint_every",
        ):  # fmt: skip
            # `not >= 0` also refuses NaN, which `< 0` lets through.
            if not getattr(self, name) >= 0:
                raise AekitError(f"{name} must be non-negative (got {getattr(self, name)})")
        if not 0 <= self.seed < 2**63:
            raise AekitError(f"seed must be in [0, 2**63) (got {self.seed})")
        check_precision(self.precision)
        if self.optimizer not in ("adam", "adamw"):
            raise AekitError(f"optimizer must be adam or adamw (got {self.optimizer!r})")
        if self.schedule not in ("constant", "cosine"):
            raise AekitError(f"schedule must be constant or cosine (got {self.schedule!r})")
