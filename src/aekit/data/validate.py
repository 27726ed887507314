"""Checks on user data, each failing with a one-line message that says what and where."""

from __future__ import annotations

import numpy as np

from aekit.errors import AekitError


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_array(x: np.ndarray, what: str) -> None:
    """Examples `x` of shape (N, ...): numeric, N >= 1, non-empty examples, all finite."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise AekitError(f"{what}: data must be real numbers (got dtype {x.dtype})")
    if x.ndim < 2:
        raise AekitError(
            f"{what}: expected examples x features, at least 2 dimensions "
            f"(got shape {_fmt_shape(x.shape)})"
        )
    if x.shape[0] < 1 or x.size == 0:
        raise AekitError(f"{what}: no examples (empty data)")
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    n_nan = int(np.isnan(x).sum())
    n_inf = int(bad.sum()) - n_nan
    counts = " and ".join(
        f"{count} {kind}" for count, kind in ((n_nan, "NaN"), (n_inf, "inf")) if count
    )
    plural = "value" if n_nan + n_inf == 1 else "values"
    first = np.unravel_index(int(np.flatnonzero(bad)[0]), x.shape)
    position = str(int(first[1])) if x.ndim == 2 else _fmt_shape(first[1:])
    raise AekitError(
        f"{what}: {counts} {plural}; first at example {int(first[0])}, position {position}"
    )


def check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """One integer label per example; floats are accepted when integral. Returns int64."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise AekitError(
            f"{what}: labels must be one value per example (got shape {_fmt_shape(y.shape)})"
        )
    if len(y) != n:
        raise AekitError(f"{what}: {len(y)} labels for {n} examples")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or np.iscomplexobj(y):
        raise AekitError(f"{what}: labels must be integers (got dtype {y.dtype})")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise AekitError(f"{what}: labels must be integers; label {i} is {y[i]}")
    return y.astype(np.int64)


def check_shape(actual: tuple[int, ...], expected: tuple[int, ...], what: str) -> None:
    """The shape of one example must be the one a model was built for."""
    if tuple(actual) != tuple(expected):
        raise AekitError(
            f"{what}: examples have shape {_fmt_shape(tuple(actual))} "
            f"but the model expects {_fmt_shape(tuple(expected))}"
        )
