"""Tabular data: per-column standardisation fitted on the training rows, with the columns that
are constant there dropped (a constant column carries no information, and dividing by its zero
spread would make every later value infinite)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from aekit.errors import AekitError

logger = logging.getLogger(__name__)

CONSTANT_RELATIVE_STD = 1e-12
"""A column whose standard deviation is below this fraction of its magnitude (or of 1) is
constant up to float64 rounding of the mean."""


@dataclass(frozen=True)
class Standardization:
    """x' = (x[:, columns] - mean) / std, every statistic from the training rows."""

    mean: np.ndarray
    std: np.ndarray
    columns: np.ndarray | None
    """Indices of the kept input columns; None: all of them."""
    n_features: int
    """The width of the input this was fitted on."""

    def apply(self, x: np.ndarray, what: str = "data") -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise AekitError(
                f"{what}: expected rows of {self.n_features} features, got shape {tuple(x.shape)}"
            )
        if self.columns is not None:
            x = x[:, self.columns]
        return ((x.astype(np.float64) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "columns": None if self.columns is None else self.columns.tolist(),
            "n_features": self.n_features,
        }

    @classmethod
    def from_dict(cls, values: dict) -> Standardization:
        columns = values.get("columns")
        return cls(
            np.asarray(values["mean"], dtype=np.float64),
            np.asarray(values["std"], dtype=np.float64),
            None if columns is None else np.asarray(columns, dtype=np.int64),
            int(values["n_features"]),
        )


def fit_standardization(x: np.ndarray, what: str = "data") -> Standardization:
    """Column means and standard deviations of the rows `x` (N, D); columns constant over them
    are dropped with a warning that names them, and all-constant data is an error."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise AekitError(f"{what}: expected rows x features, got shape {tuple(x.shape)}")
    if len(x) < 2:
        raise AekitError(
            f"{what}: {len(x)} row(s); standardising columns needs at least 2 training rows"
        )
    mean = x.mean(0)
    std = x.std(0)
    constant = std <= CONSTANT_RELATIVE_STD * np.maximum(1.0, np.abs(mean))
    if constant.all():
        raise AekitError(
            f"{what}: every one of the {x.shape[1]} columns is constant over the "
            f"{len(x)} training rows; there is nothing to learn"
        )
    columns = None
    if constant.any():
        dropped = np.flatnonzero(constant)
        shown = ", ".join(str(int(i)) for i in dropped[:10]) + (
            ", ..." if len(dropped) > 10 else ""
        )
        logger.warning(
            "%s: dropped %d constant column(s) (0-based: %s); %d remain",
            what,
            len(dropped),
            shown,
            int((~constant).sum()),
        )
        columns = np.flatnonzero(~constant)
        mean, std = mean[columns], std[columns]
    return Standardization(mean, std, columns, x.shape[1])
