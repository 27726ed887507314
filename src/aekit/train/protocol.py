"""The interface the one Trainer relies on: any module offering it trains, checkpoints,
resumes and validates the same way (an `Autoencoder` of any family, a `ModelGroup`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import torch

from aekit.components import AuxiliaryStep
from aekit.data.protocol import DataSource
from aekit.data.tensor_data import Batch


class StepOutput(Protocol):
    loss: torch.Tensor
    """The scalar minimised."""
    terms: dict[str, torch.Tensor]
    """Named, detached batch means that the epoch record averages."""


class RunConfig(Protocol):
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what `config.json` records to rebuild the model."""


@runtime_checkable
class Trainable(Protocol):
    """What the Trainer calls, in order: `check_data` once per source and
    `see_training_data` once per run; per step `step_forward`, `backward`, the optimiser
    step, `after_step`, then each of `auxiliary_steps` on the step's output; per epoch
    `calibrate` before validation and saving; `schedule_end` to warn when
    the run ends before the schedules do. Besides these it is an `nn.Module` (parameters,
    state_dict, train/eval, to) whose `config` is saved in the run directory under its
    `run_kind` (how `aekit.load` rebuilds it), and whose `folded_state_dict()`, when it has
    one, gives the weights saved for inference."""

    config: RunConfig
    run_kind: str

    def check_data(self, data: DataSource) -> None:
        """Raise an AekitError naming what does not fit (shape, labels, targets)."""

    def step_forward(self, batch: Batch, step: int) -> StepOutput:
        """The training objective of one batch at global step `step`."""

    def backward(self, out: StepOutput) -> None:
        """Gradients of the objective, with any projection the parameters need."""

    def after_step(self) -> None:
        """After the optimiser step: constraints (unit-norm rows)."""

    def calibrate(self, batches: Iterable[Batch]) -> None:
        """At the end of an epoch: statistics fixed from its final weights over shuffled
        training batches (BatchTopK's inference threshold); a no-op for most models."""

    def schedule_end(self) -> int:
        """The step at which warm-ups and annealing reach their final values."""

    def see_training_data(self, data: DataSource) -> None:
        """Once per fit, before its first step: what the model takes from the training data
        itself (beta-TCVAE's data-set size), kept in its config; a value the config already
        holds (a resumed run's) is kept."""

    def auxiliary_steps(self) -> list[AuxiliaryStep]:
        """Parts trained by optimisers of their own after each step (a discriminator); their
        parameters stay out of the model's optimiser. Empty for most models."""
