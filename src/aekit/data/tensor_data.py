"""In-memory data: one tensor, batched by index slicing (no per-example Python on the hot path)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from aekit.data.config import DataConfig
from aekit.data.validate import check_array, check_labels
from aekit.errors import AekitError


class Batch(NamedTuple):
    """One batch of any data source."""

    x: torch.Tensor
    """The model's input rows."""
    y: torch.Tensor | None
    """Labels (TensorData), or the paired target (a transcoder's output site), or None."""
    by_site: dict[str, torch.Tensor] | None = None
    """Activation sources: every site read, by name (a group of models reads several)."""

    def rows(self, start: int, stop: int) -> Batch:
        """Rows [start, stop) of every part (a rank's slice of a global batch)."""
        by_site = self.by_site
        if by_site is not None:
            by_site = {name: v[start:stop] for name, v in by_site.items()}
        y = None if self.y is None else self.y[start:stop]
        return Batch(self.x[start:stop], y, by_site)


class TensorData:
    """Examples `x` of shape (N, *shape), float32, with optional integer labels `y` (N,) and
    ground-truth factors (N, K) (integer indices, e.g. dSprites' shape, scale, orientation,
    x and y) that disentanglement metrics score codes against.

    With `binarize=True` every batch is re-sampled as Bernoulli(x) (dynamic binarisation);
    data that should be binarised once (validation, test) is binarised at construction
    with `binarize_seed` instead.
    """

    def __init__(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray | None = None,
        *,
        binarize: bool = False,
        name: str = "data",
        spec: DataConfig | None = None,
        factors: torch.Tensor | np.ndarray | None = None,
        factor_names: tuple[str, ...] | None = None,
    ) -> None:
        x_np = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        check_array(x_np, name)
        self.x = torch.as_tensor(x_np, dtype=torch.float32)
        if y is not None:
            y_np = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
            y_np = check_labels(y_np, len(self.x), name)
            self.y: torch.Tensor | None = torch.as_tensor(y_np, dtype=torch.int64)
        else:
            self.y = None
        self.factors: torch.Tensor | None = None
        if factors is not None:
            f = torch.as_tensor(np.asarray(factors), dtype=torch.int64)
            if f.ndim != 2 or f.shape[0] != len(self.x):
                raise AekitError(
                    f"{name}: factors must be (N, K) with N = {len(self.x)} (got {tuple(f.shape)})"
                )
            self.factors = f
        self.factor_names = tuple(factor_names) if factor_names is not None else None
        self.binarize = binarize
        self.name = name
        self.spec = spec

    @classmethod
    def binarized_once(cls, data: TensorData, seed: int) -> TensorData:
        """A fixed stochastic binarisation (the usual protocol for test sets)."""
        if data.x.min() < 0 or data.x.max() > 1:
            raise AekitError(f"{data.name}: binarisation needs values in [0, 1]")
        generator = torch.Generator().manual_seed(seed)
        x = torch.bernoulli(data.x.cpu(), generator=generator)
        return cls(
            x,
            data.y,
            binarize=False,
            name=data.name,
            spec=data.spec,
            factors=data.factors,
            factor_names=data.factor_names,
        )

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example."""
        return tuple(self.x.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> TensorData:
        if self.x.device == torch.device(device):
            return self
        moved = TensorData.__new__(TensorData)
        moved.__dict__.update(self.__dict__)
        moved.x = self.x.to(device)
        moved.y = self.y.to(device) if self.y is not None else None
        return moved

    def subset(
        self, index: torch.Tensor | np.ndarray | slice, name: str | None = None
    ) -> TensorData:
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.int64, device=self.x.device)
        sub = TensorData.__new__(TensorData)
        sub.__dict__.update(self.__dict__)
        sub.x = self.x[index]
        sub.y = self.y[index] if self.y is not None else None
        if self.factors is not None:
            sub.factors = self.factors[index.cpu() if isinstance(index, torch.Tensor) else index]
        sub.name = name or self.name
        return sub

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Yield batches by slicing one tensor. `generator` (on the CPU) drives both the
        shuffling and the dynamic binarisation, so a seeded epoch is reproducible."""
        if batch_size < 1:
            raise AekitError(f"batch size must be at least 1 (got {batch_size})")
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.x.device) if shuffle else None
        on_device = generator is not None and generator.device == self.x.device
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            if order is None:
                x = self.x[start : start + batch_size]
                y = self.y[start : start + batch_size] if self.y is not None else None
            else:
                idx = order[start : start + batch_size]
                x = self.x[idx]
                y = self.y[idx] if self.y is not None else None
            if self.binarize:
                # A CPU generator cannot draw on another device; there the global RNG,
                # which the trainer seeds per epoch, keeps the run reproducible.
                u = torch.rand(x.shape, generator=generator if on_device else None, device=x.device)
                x = (u < x).to(x.dtype)
            yield Batch(x, y)


MAX_LABEL_CLASSES = 100_000
"""The most classes a label-conditioned model is built for. Its labels enter the networks
one-hot, so K classes are K inputs per conditioned layer; labels beyond this (ImageNet-21k has
21,841 classes) are identifiers, not class indices, and would only allocate a network too
large to train."""


@dataclass
class Splits:
    """Train/validation/test data from one source, with the spec that rebuilds them."""

    train: TensorData
    val: TensorData | None
    test: TensorData | None
    spec: DataConfig
    class_names: list[str] | None = None

    def label_classes(self) -> int:
        """The number of classes a label-conditioned model is built for."""
        if self.train.y is None:
            raise AekitError(
                "a conditional model needs labels: use a labelled source or --labels / "
                "--label-column"
            )
        classes = len(self.class_names) if self.class_names else int(self.train.y.max()) + 1
        if classes > MAX_LABEL_CLASSES:
            raise AekitError(
                f"label {classes - 1} in the train split would make {classes:,} classes; a "
                f"label-conditioned model takes labels 0..K-1 for K classes, at most "
                f"{MAX_LABEL_CLASSES:,} (number identifiers 0..K-1 first)"
            )
        for split in ("train", "val", "test"):
            data = getattr(self, split)
            y = None if data is None else data.y
            if y is None or not len(y):
                continue
            bad = (y < 0) | (y >= classes)
            if bool(bad.any()):
                raise AekitError(
                    f"label {int(y[bad][0])} in the {split} split is outside 0..{classes - 1}, "
                    f"the labels of the {classes} classes the model is built for"
                )
        return classes

    def get(self, split: str) -> TensorData:
        data = {"train": self.train, "val": self.val, "test": self.test}.get(split)
        if split not in ("train", "val", "test"):
            raise AekitError(f"unknown split {split!r}; choose train, val or test")
        if data is None or len(data) == 0:
            raise AekitError(f"the {split} split of {self.spec.source!r} is empty")
        return data
