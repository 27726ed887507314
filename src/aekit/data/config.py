"""Where the data comes from and how it is split and scaled: one JSON-able dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from aekit.components import SavedConfig
from aekit.errors import AekitError

BUILTIN_SOURCES = ("digits", "mnist", "fashion-mnist", "dsprites")
MAX_SUBSET = 5
"""The sparsest dSprites sub-grid: every 5th of the 6 scales still keeps two."""
SCALES = ("auto", "none", "minmax", "255", "standard")


@dataclass
class DataConfig(SavedConfig):
    """A data source and its preparation. Saved in a run's `config.json`, so that `aekit eval`
    and `aekit report` rebuild exactly the same splits and scaling."""

    source: str = "digits"
    """`digits` (scikit-learn, bundled), `mnist`, `fashion-mnist`, `dsprites` (drawn here, with
    its five factors: `aekit.data.dsprites`), a `.npy`/`.npz`/`.csv` file,
    a MATLAB `.mat` file with `X` (and `y`: the ODDS outlier sets), or a folder of PNG/JPEG
    images (one sub-folder per class gives labels)."""
    data_dir: str | None = None
    """Folder holding the IDX files of `mnist`/`fashion-mnist` (else $AEKIT_DATA, Debian's
    /usr/share/datasets, the cache, then a verified download)."""
    labels: str | None = None
    """A `.npy`/`.csv`/`.txt` file of integer labels for an array source."""
    label_column: str | None = None
    """CSV column (name or 0-based index) holding integer labels."""
    shape: tuple[int, ...] | None = None
    """Reshape each example, e.g. `1,28,28` for flat 784-vectors that are images."""
    image_size: tuple[int, int] | None = None
    """Resize the images of a folder to H,W (else all must share one size)."""
    grayscale: bool | None = None
    """Read a folder's images as grey (True), RGB (False) or decide from the files (None)."""
    subset: int = 1
    """dsprites: keep every n-th value of scale, orientation, x and y (all three shapes); 1 is
    the full grid of 737,280 images (11 GiB as float32), 2 keeps 46,080, 4 keeps 3,840, 5
    keeps 2,352."""
    scale: str = "auto"
    """`auto` (uint8 -> /255, digits -> /16, `.mat` tables -> standard, data in [0,1] kept,
    otherwise min-max), `none`, `minmax`, `255`, or `standard` (each feature to zero mean and
    unit variance over the training split; rows x features data drops its constant columns)."""
    binarize: bool = False
    """Dynamic binarisation for Bernoulli likelihoods: training batches are re-sampled as
    x ~ Bernoulli(pixel) every time; validation and test are binarised once, with a fixed seed."""
    val_fraction: float = 0.1
    """Fraction of the training pool held out for validation (best weights, early stopping)."""
    test_fraction: float = 0.1
    """Used only when the source has no official test split (digits, arrays, folders)."""
    split_seed: int = 0
    """Seed of the train/validation/test split (independent of the training seed, so runs with
    different seeds are evaluated on the same test set)."""
    limit: int | None = None
    """Use at most this many training examples (quick experiments)."""
    offset: float | list[float] | None = None
    divisor: float | list[float] | None = None
    """The resolved scaling x' = (x - offset) / divisor (one number, or one per feature for
    `standard`), filled in when the data is first loaded so that later loads (eval, encode)
    transform new data identically."""
    columns: list[int] | None = None
    """The kept columns of rows x features data after `standard` dropped the constant ones
    (resolved like offset and divisor; None: all)."""

    PATHS: ClassVar[tuple[str, ...]] = ("source", "data_dir", "labels")
    """Fields that may name files: saved absolute, so that `aekit eval RUN` works from any
    working directory."""

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        for name in self.PATHS:
            value = values[name]
            if isinstance(value, str) and value not in BUILTIN_SOURCES:
                path = Path(value).expanduser()
                if path.exists():
                    values[name] = str(path.resolve())
        return values

    def __post_init__(self) -> None:
        if self.shape is not None:
            self.shape = tuple(int(s) for s in self.shape)
        if self.image_size is not None:
            self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
        if self.scale not in SCALES:
            raise AekitError(f"scale must be one of {', '.join(SCALES)} (got {self.scale!r})")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise AekitError(f"{name} must be in [0, 1) (got {value})")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise AekitError("val_fraction + test_fraction must be below 1")
        if not 1 <= self.subset <= MAX_SUBSET:
            raise AekitError(
                f"subset must be from 1 to {MAX_SUBSET} (got {self.subset}): beyond it "
                "dSprites' scale would keep one value and stop being a factor"
            )
        if self.limit is not None and self.limit < 1:
            raise AekitError(f"limit must be at least 1 (got {self.limit})")
