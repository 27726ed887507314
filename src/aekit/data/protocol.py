"""The data-source interface: what the Trainer, evaluation and reports read data through.

In-memory tensors (`TensorData`), views of an activation store (`StoreView`) and activations
streamed from a running model (`ModelStream`) all offer it, so every family trains and
evaluates on any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from aekit.data.tensor_data import Batch


@runtime_checkable
class DataSource(Protocol):
    name: str
    """What the data is, for messages ("training data", "activations store:site")."""

    def __len__(self) -> int:
        """Examples per pass."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example (`Batch.x[i]`)."""

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """One pass in batches of `Batch(x, y[, by_site])`; shuffled with `generator` (on the
        CPU), so that a seeded pass is reproducible. `y` holds labels, or a paired target."""

    def to(self, device: torch.device | str) -> DataSource:
        """The same examples, with batches landing on `device`."""


@runtime_checkable
class PairedSource(DataSource, Protocol):
    """A source whose `Batch.y` is a target of another shape (a transcoder's output site)."""

    @property
    def target_shape(self) -> tuple[int, ...]:
        """The shape of one target (`Batch.y[i]`)."""
