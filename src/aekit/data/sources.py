"""Data sources: small readers return raw arrays; one place splits, scales and wraps them."""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aekit.data.arrays import read_npy, read_npz
from aekit.data.config import BUILTIN_SOURCES, DataConfig
from aekit.data.download import cache_dir, download_dataset
from aekit.data.idx import read_idx
from aekit.data.images import image_pixels, is_grey, open_image
from aekit.data.tabular import fit_standardization
from aekit.data.tensor_data import Splits, TensorData
from aekit.data.validate import check_array, check_labels
from aekit.errors import AekitError, one_line

logger = logging.getLogger(__name__)

# Debian's dataset-fashion-mnist installs here; a module constant so tests can redirect it.
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPZ_X_KEYS = ("x", "X", "data", "images", "arr_0")
NPZ_Y_KEYS = ("y", "Y", "labels", "targets")

Part = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]
"""Examples, their labels and their ground-truth factors, where the source has them."""


@dataclass
class _Raw:
    """A source's examples as read, before splitting and scaling."""

    x: np.ndarray
    y: np.ndarray | None
    what: str
    x_test: np.ndarray | None = None  # an official test split, kept out of the pool
    y_test: np.ndarray | None = None
    what_test: str | None = None
    class_names: list[str] | None = None
    full_scale: float | None = None  # the known maximum value, for scale=auto
    tabular: bool = False  # rows x features by nature (.mat): scale=auto standardises
    factors: np.ndarray | None = None  # (N, K) ground-truth factor indices (dsprites)
    factor_names: tuple[str, ...] | None = None


def load_data(spec: DataConfig) -> Splits:
    """Train/validation/test splits of `spec.source`, scaled; `Splits.spec` is a copy of
    `spec` with the resolved `offset`/`divisor`, which later loads re-apply unchanged."""
    raw = _read_source(spec)
    parts = _split(raw, spec, spec.limit)
    # A scaling fitted on data sees the whole training part, whatever the limit (split again,
    # unlimited, only when a limit cut it).
    whole = (lambda: parts) if spec.limit is None else (lambda: _split(raw, spec))
    scaling = _resolve_scaling(spec, raw, lambda: whole()["train"][0])
    resolved = scaling.resolved(spec)

    data: dict[str, TensorData | None] = {}
    for name, part in parts.items():
        if part is None:
            data[name] = None
            continue
        x = scaling.apply(part[0])
        data[name] = TensorData(
            x,
            part[1],
            binarize=spec.binarize and name == "train",
            name=f"{spec.source} ({name})",
            spec=resolved,
            factors=part[2],
            factor_names=raw.factor_names,
        )
    if spec.binarize:
        for name, td in data.items():
            if td is None:
                continue
            lo, hi = float(td.x.min()), float(td.x.max())
            if lo < 0 or hi > 1:
                raise AekitError(
                    f"{td.name}: binarize needs values in [0, 1] after scaling, "
                    f"got [{lo:.4g}, {hi:.4g}]; choose another scale"
                )
            if name != "train":  # evaluation data is binarised once, reproducibly
                seed = _derived_seed(spec.split_seed, 1 if name == "val" else 2)
                data[name] = TensorData.binarized_once(td, seed)
    assert data["train"] is not None
    return Splits(data["train"], data["val"], data["test"], resolved, raw.class_names)


def load_all(spec: DataConfig) -> TensorData:
    """Every example of the source in file order (for built-ins: train then test), scaled
    like `load_data` would scale it and never binarised."""
    raw = _read_source(spec)
    scaling = _resolve_scaling(spec, raw, lambda: _split(raw, spec)["train"][0])
    x, y = raw.x, raw.y
    if raw.x_test is not None:
        x = np.concatenate([x, raw.x_test])
        y = None if y is None or raw.y_test is None else np.concatenate([y, raw.y_test])
    return TensorData(
        scaling.apply(x),
        y,
        name=spec.source,
        spec=scaling.resolved(spec),
        factors=raw.factors,
        factor_names=raw.factor_names,
    )


def read_rows(spec: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Every example of the source in file order (for built-ins: train then test) as read,
    unscaled, and its labels if it has them: for callers that fit their own scaling."""
    raw = _read_source(spec)
    x, y = raw.x, raw.y
    if raw.x_test is not None:
        x = np.concatenate([x, raw.x_test])
        y = None if y is None or raw.y_test is None else np.concatenate([y, raw.y_test])
    return x, y


# --- reading -------------------------------------------------------------------------------


def _read_source(spec: DataConfig) -> _Raw:
    if spec.split_seed < 0:
        raise AekitError(f"split_seed must be non-negative (got {spec.split_seed})")
    source = spec.source
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if source in BUILTIN_SOURCES:
        kind = source if source in ("digits", "dsprites") else "idx"
    elif path.is_dir():
        kind = "folder"
    elif path.is_file() and suffix in (".npy", ".npz", ".csv", ".mat"):
        kind = suffix[1:]
    else:
        raise AekitError(
            f"unknown data source {source!r}: not one of {', '.join(BUILTIN_SOURCES)}, "
            "nor an existing .npy/.npz/.csv/.mat file or image folder"
        )
    _check_options(spec, kind)

    if kind == "digits":
        raw = _read_digits()
    elif kind == "dsprites":
        raw = _read_dsprites(spec.subset)
    elif kind == "idx":
        raw = _read_idx_dataset(source, spec.data_dir)
    elif kind == "folder":
        raw = _read_image_folder(path, spec.grayscale, spec.image_size)
    elif kind == "npy":
        raw = _read_npy(path)
    elif kind == "npz":
        raw = _read_npz(path)
    elif kind == "mat":
        raw = _read_mat(path)
    else:
        raw = _read_csv(path, spec.label_column)

    check_array(raw.x, raw.what)
    if spec.labels is not None:
        raw.y = check_labels(_read_label_file(spec.labels), len(raw.x), spec.labels)
    elif raw.y is not None:
        raw.y = check_labels(raw.y, len(raw.x), raw.what)
    raw.x = _reshape(raw.x, spec.shape, raw.what)
    if raw.x_test is not None:
        what_test = raw.what_test or raw.what
        check_array(raw.x_test, what_test)
        if raw.y_test is not None:
            raw.y_test = check_labels(raw.y_test, len(raw.x_test), what_test)
        raw.x_test = _reshape(raw.x_test, spec.shape, what_test)
    return raw


def _check_options(spec: DataConfig, kind: str) -> None:
    """Refuse options that would otherwise be silently ignored for this kind of source."""
    if spec.data_dir is not None and kind != "idx":
        raise AekitError("data_dir applies only to mnist and fashion-mnist")
    if spec.labels is not None and kind not in ("npy", "npz", "csv", "mat"):
        raise AekitError("labels applies only to .npy/.npz/.csv/.mat sources")
    if spec.label_column is not None and kind != "csv":
        raise AekitError("label_column applies only to .csv sources")
    if spec.labels is not None and spec.label_column is not None:
        raise AekitError("give either labels or label_column, not both")
    if spec.image_size is not None and kind != "folder":
        raise AekitError("image_size applies only to image folders")
    if spec.grayscale is not None and kind != "folder":
        raise AekitError("grayscale applies only to image folders")
    if spec.subset != 1 and kind != "dsprites":
        raise AekitError("subset applies only to dsprites")


def _read_digits() -> _Raw:
    from sklearn.datasets import load_digits  # slow import, only when needed

    digits = load_digits()
    return _Raw(digits.images[:, None], digits.target, "digits", full_scale=16.0)


def _read_dsprites(subset: int) -> _Raw:
    from aekit.data import dsprites

    x, factors, grid = dsprites.load(subset)
    return _Raw(
        x,
        factors[:, 0],
        f"dsprites (procedural, subset {subset}: {' x '.join(map(str, grid.sizes))})",
        class_names=list(dsprites.SHAPES),
        full_scale=1.0,
        factors=factors,
        factor_names=dsprites.FACTOR_NAMES,
    )


def _idx_layout(folder: Path) -> dict[str, Path] | None:
    """The IDX files in `folder` if they form a usable set: all four, or the t10k pair alone."""
    found = {}
    for base in IDX_TRAIN + IDX_TEST:
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
    has_test = all(base in found for base in IDX_TEST)
    n_train = sum(base in found for base in IDX_TRAIN)
    return found if has_test and n_train in (0, 2) else None


def _locate_idx(name: str, data_dir: str | None) -> Path:
    if data_dir is not None:
        # An explicit folder never falls through: silently using another copy would mislead.
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise AekitError(f"{name}: data_dir {folder} is not a folder")
        for candidate in (folder, folder / name):
            if _idx_layout(candidate):
                return candidate
        raise AekitError(
            f"{name}: no IDX files in {folder}: expected {', '.join(IDX_TRAIN + IDX_TEST)} "
            "(each raw or .gz), or at least the two t10k files"
        )
    candidates = []
    if os.environ.get("AEKIT_DATA"):
        root = Path(os.environ["AEKIT_DATA"]).expanduser()
        candidates += [root / name, root]
    candidates.append(SYSTEM_DATA_DIR / name)
    for folder in candidates:
        if _idx_layout(folder):
            return folder
    folder = cache_dir() / name
    download_dataset(name, folder)  # fetches only what the cache lacks
    return folder


def _read_idx_pair(found: dict[str, Path], names: tuple[str, str]) -> tuple[np.ndarray, ...]:
    images, labels = found[names[0]], found[names[1]]
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise AekitError(f"{images}: expected images (N, H, W), the header gives {x.shape}")
    return x[:, None], check_labels(y, len(x), str(labels))


def _read_idx_dataset(name: str, data_dir: str | None) -> _Raw:
    found = _idx_layout(_locate_idx(name, data_dir))
    assert found is not None
    x_test, y_test = _read_idx_pair(found, IDX_TEST)
    if IDX_TRAIN[0] not in found:
        logger.warning(
            "%s: only the t10k files are in %s; using their %d examples as the whole data "
            "set, split by val_fraction and test_fraction",
            name,
            found[IDX_TEST[0]].parent,
            len(x_test),
        )
        return _Raw(x_test, y_test, str(found[IDX_TEST[0]]))
    x, y = _read_idx_pair(found, IDX_TRAIN)
    return _Raw(x, y, str(found[IDX_TRAIN[0]]), x_test, y_test, what_test=str(found[IDX_TEST[0]]))


def _image_layout(x: np.ndarray) -> np.ndarray:
    """(N,H,W) -> (N,1,H,W); channels-last (N,H,W,C) -> channels-first."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _read_npy(path: Path) -> _Raw:
    if zipfile.is_zipfile(path):
        raise AekitError(f"{path}: is an .npz archive, not a .npy array; rename it to .npz")
    return _Raw(_image_layout(read_npy(path)), None, str(path))


def _read_npz(path: Path) -> _Raw:
    with open(path, "rb") as f:
        zipped = f.read(2) == b"PK"
    if not zipped:  # a .npy under another name: take it as is
        return _Raw(_image_layout(read_npy(path)), None, str(path))
    archive = read_npz(path)
    keys = list(archive)
    x_key = keys[0] if len(keys) == 1 else next((k for k in NPZ_X_KEYS if k in keys), None)
    if x_key is None:
        raise AekitError(
            f"{path}: no array named {', '.join(NPZ_X_KEYS)} "
            f"(it holds: {', '.join(keys) or 'nothing'})"
        )
    y_key = next((k for k in NPZ_Y_KEYS if k in keys and k != x_key), None)
    y = archive[y_key] if y_key is not None else None
    return _Raw(_image_layout(archive[x_key]), y, str(path))


def _read_mat(path: Path) -> _Raw:
    """A MATLAB v4-v7 file with rows x features `X` and optional labels `y` (the ODDS format;
    1 marks an outlier there)."""
    from scipy.io import loadmat  # scikit-learn's own dependency; slow import, only when needed

    try:
        contents = loadmat(path)
    except NotImplementedError:
        raise AekitError(
            f"{path}: a MATLAB v7.3 (HDF5) file, which is not supported; save it with "
            "save(..., '-v7') or as .npz"
        ) from None
    except (ValueError, OSError, TypeError) as e:
        raise AekitError(f"{path}: not a readable .mat file ({one_line(e)})") from None
    keys = [k for k in contents if not k.startswith("__")]
    x_key = next((k for k in NPZ_X_KEYS if k in keys), None)
    if x_key is None:
        raise AekitError(f"{path}: no matrix named X (it holds: {', '.join(keys) or 'nothing'})")
    y_key = next((k for k in NPZ_Y_KEYS if k in keys and k != x_key), None)
    x = np.asarray(contents[x_key])
    if x.dtype == object:
        raise AekitError(f"{path}: {x_key} is a cell array or struct, not a numeric matrix")
    if x.ndim == 2 and x.shape[1] == 0:
        raise AekitError(f"{path}: {x_key} has no columns")
    y = None if y_key is None else np.asarray(contents[y_key])
    return _Raw(x, y, str(path), tabular=True)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, label_column: str | int | None) -> _Raw:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            first = next((row for row in reader if row), None)
            first_line = reader.line_num
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AekitError(f"{path}: cannot read as CSV ({one_line(e)})") from None
    if first is None:
        raise AekitError(f"{path}: no examples (empty data)")
    header = None if all(_is_number(c) for c in first) else [c.strip() for c in first]
    skip = first_line if header is not None else first_line - 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data" is reported below
            data = np.loadtxt(
                path,
                delimiter=",",
                skiprows=skip,
                ndmin=2,
                dtype=np.float64,
                encoding="utf-8",
                comments=None,
                quotechar='"',
            )
    except ValueError as e:
        where = _find_bad_csv_cell(path, skip, len(first)) or one_line(e)
        raise AekitError(f"{path}: {where}") from None
    if data.size == 0:
        raise AekitError(f"{path}: no examples (empty data)")
    if label_column is None:
        return _Raw(data, None, str(path))
    column = _column_index(str(label_column), header, len(first), path)
    return _Raw(np.delete(data, column, axis=1), data[:, column], str(path))


def _find_bad_csv_cell(path: Path, skip: int, n_columns: int) -> str | None:
    """The first line that numpy refused, described for a person."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            if reader.line_num <= skip or not row:
                continue
            if len(row) != n_columns:
                return f"line {reader.line_num} has {len(row)} values, expected {n_columns}"
            for j, cell in enumerate(row):
                if not _is_number(cell):
                    return f"line {reader.line_num}, column {j + 1}: {cell!r} is not a number"
    return None


def _column_index(label_column: str, header: list[str] | None, n: int, path: Path) -> int:
    if header is not None and label_column in header:
        return header.index(label_column)
    try:
        index = int(label_column)
    except ValueError:
        if header is None:
            raise AekitError(
                f"{path}: has no header line, so label_column must be a 0-based index "
                f"(got {label_column!r})"
            ) from None
        raise AekitError(
            f"{path}: no column named {label_column!r} (columns: {', '.join(header[:20])}"
            f"{', ...' if len(header) > 20 else ''})"
        ) from None
    if not -n <= index < n:
        raise AekitError(f"{path}: label column {index} is out of range ({n} columns)")
    return index % n


def _read_label_file(name: str) -> np.ndarray:
    path = Path(name).expanduser()
    if not path.is_file():
        raise AekitError(f"labels file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path)
    if suffix not in (".csv", ".txt"):
        raise AekitError(f"{path}: labels must be a .npy, .csv or .txt file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AekitError(f"{path}: cannot read ({one_line(e)})") from None
    values: list[float] = []
    first = True
    for number, line in enumerate(lines, start=1):
        cell = line.strip().strip('"')
        if not cell:
            continue
        if not _is_number(cell) and not first:
            raise AekitError(f"{path}: line {number}: {cell!r} is not a label (one per line)")
        if _is_number(cell):  # else the first line is a header
            values.append(float(cell))
        first = False
    return np.asarray(values)


def _read_image_folder(folder: Path, grayscale: bool | None, size: tuple[int, int] | None) -> _Raw:
    def images_in(d: Path) -> list[Path]:
        return sorted(
            p
            for p in d.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )

    loose = images_in(folder)
    classes = [
        (d.name, images)
        for d in sorted(folder.iterdir())
        if d.is_dir() and not d.name.startswith(".") and (images := images_in(d))
    ]
    if classes and loose:
        raise AekitError(
            f"{folder}: holds both images ({loose[0].name}, ...) and class sub-folders; "
            "put every image in a class sub-folder"
        )
    if not classes and not loose:
        hint = ""
        if _idx_layout(folder):
            hint = "; for IDX files use source mnist or fashion-mnist with this folder as data_dir"
        raise AekitError(f"{folder}: no PNG or JPEG images in it or its sub-folders{hint}")
    if not classes:
        return _Raw(_load_images(loose, grayscale, size), None, str(folder))
    files = [p for _, images in classes for p in images]
    y = np.concatenate([np.full(len(images), i) for i, (_, images) in enumerate(classes)])
    names = [name for name, _ in classes]
    return _Raw(_load_images(files, grayscale, size), y, str(folder), class_names=names)


def _load_images(
    files: list[Path], grayscale: bool | None, size: tuple[int, int] | None
) -> np.ndarray:
    """(N, C, H, W) uint8: grey (C=1) or RGB (C=3)."""
    from PIL import Image

    pixels = []
    first_size = None
    for path in files:
        try:
            with open_image(path) as image:
                if size is None:
                    if first_size is None:
                        first_size = image.size
                    elif image.size != first_size:
                        raise AekitError(
                            f"{path}: size {image.height}x{image.width} differs from "
                            f"{files[0].name} ({first_size[1]}x{first_size[0]}, HxW); "
                            "set image_size to resize"
                        )
                grey = grayscale if grayscale is not None else is_grey(image)
                array = image_pixels(image, grey)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise AekitError(f"{path}: unreadable image ({one_line(e)})") from None
        if size is not None and array.shape[:2] != tuple(size):
            array = np.asarray(
                Image.fromarray(array).resize(tuple(size)[::-1], Image.Resampling.BILINEAR)
            )
        pixels.append(array)

    if grayscale is None:  # grey if every image is, including RGB files with equal channels
        grayscale = all(
            a.ndim == 2 or ((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
            for a in pixels
        )
    if grayscale:
        return np.stack([a if a.ndim == 2 else a[..., 0] for a in pixels])[:, None]
    rgb = np.stack([a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in pixels])
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))


# --- splitting and scaling -----------------------------------------------------------------


def _reshape(x: np.ndarray, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    if shape is None:
        return x
    have, want = int(np.prod(x.shape[1:])), int(np.prod(shape))
    if any(s < 1 for s in shape) or have != want:
        raise AekitError(
            f"{what}: cannot reshape examples of shape {tuple(x.shape[1:])} to {tuple(shape)} "
            f"({have} values vs {want})"
        )
    return x.reshape((x.shape[0], *shape))


def _split(raw: _Raw, spec: DataConfig, limit: int | None = None) -> dict[str, Part | None]:
    """Deterministic from split_seed alone; the permuted order also makes `limit` a random
    subset rather than the first (often class-sorted) examples of a file. With a limit only
    the first `limit` training examples of that order are copied out."""
    n = len(raw.x)
    order = np.random.default_rng(spec.split_seed).permutation(n)
    n_test = 0 if raw.x_test is not None else round(spec.test_fraction * n)
    n_val = round(spec.val_fraction * n)
    if n - n_test - n_val < 1:
        raise AekitError(
            f"{raw.what}: {n} examples leave none for training after {n_val} validation "
            f"and {n_test} test examples"
        )

    def take(index: np.ndarray) -> Part | None:
        if len(index) == 0:
            return None
        y = None if raw.y is None else raw.y[index]
        return raw.x[index], y, None if raw.factors is None else raw.factors[index]

    if raw.x_test is not None:
        test: Part | None = (raw.x_test, raw.y_test, None)
    else:
        test = take(order[:n_test])
    train = order[n_test + n_val :]
    return {
        "train": take(train if limit is None else train[:limit]),
        "val": take(order[n_test : n_test + n_val]),
        "test": test,
    }


@dataclass(frozen=True)
class _Scaling:
    """x' = (x[:, columns] - offset) / divisor; offset and divisor are numbers or per-feature
    arrays (`standard`)."""

    offset: float | np.ndarray
    divisor: float | np.ndarray
    columns: np.ndarray | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.columns is not None:
            x = x[:, self.columns]
        # float64 data keeps its precision until the offset is removed.
        work = x.astype(np.float64 if x.dtype == np.float64 or self.per_feature else np.float32)
        if np.any(self.offset):
            work -= self.offset
        if np.any(self.divisor != 1):
            work /= self.divisor
        return work.astype(np.float32, copy=False)

    @property
    def per_feature(self) -> bool:
        return isinstance(self.divisor, np.ndarray)

    def resolved(self, spec: DataConfig) -> DataConfig:
        def saved(v: float | np.ndarray) -> float | list[float]:
            return v.tolist() if isinstance(v, np.ndarray) else float(v)

        columns = None if self.columns is None else [int(c) for c in self.columns]
        return dataclasses.replace(
            spec, offset=saved(self.offset), divisor=saved(self.divisor), columns=columns
        )


def _resolve_scaling(spec: DataConfig, raw: _Raw, train_x: Callable[[], np.ndarray]) -> _Scaling:
    """The scaling of the data. Values already in the spec win: that is how a saved run scales
    new data exactly as it scaled its training data."""
    if spec.divisor is not None:
        return _saved_scaling(spec, raw)
    if spec.scale == "none":
        return _Scaling(0.0, 1.0)
    if spec.scale == "auto" and raw.full_scale is not None:  # before uint8: dsprites is 0/1
        return _Scaling(0.0, raw.full_scale)
    if spec.scale == "255" or (spec.scale == "auto" and raw.x.dtype == np.uint8):
        return _Scaling(0.0, 255.0)
    if spec.scale == "standard" or (spec.scale == "auto" and raw.tabular):
        return _standard_scaling(train_x(), raw.what)
    x = train_x()
    lo, hi = float(x.min()), float(x.max())
    if spec.scale == "auto" and lo >= 0 and hi <= 1:
        return _Scaling(0.0, 1.0)
    if hi == lo:
        raise AekitError(
            f"{raw.what}: every training value is {lo:g}, so min-max scaling would divide "
            "by zero; use scale none"
        )
    return _Scaling(lo, hi - lo)


def _standard_scaling(x: np.ndarray, what: str) -> _Scaling:
    if x.ndim == 2:  # rows x features: constant columns are dropped
        s = fit_standardization(x, f"{what} (train)")
        return _Scaling(s.mean, s.std, s.columns)
    # Images and other shapes: per position; a constant position (a border pixel) is only
    # centred, so shapes are kept.
    flat = x.reshape(len(x), -1).astype(np.float64)
    std = flat.std(0)
    return _Scaling(
        flat.mean(0).reshape(x.shape[1:]), np.where(std > 0, std, 1.0).reshape(x.shape[1:])
    )


def _saved_scaling(spec: DataConfig, raw: _Raw) -> _Scaling:
    offset = np.asarray(spec.offset if spec.offset is not None else 0.0, dtype=np.float64)
    divisor = np.asarray(spec.divisor, dtype=np.float64)
    if (divisor == 0).any() or not np.isfinite(divisor).all() or not np.isfinite(offset).all():
        raise AekitError("divisor must be non-zero numbers and offset finite numbers")
    columns = None if spec.columns is None else np.asarray(spec.columns, dtype=np.int64)
    if columns is not None and (raw.x.ndim != 2 or columns.max(initial=-1) >= raw.x.shape[1]):
        raise AekitError(
            f"{raw.what}: the saved scaling keeps columns up to {int(columns.max())}, the data "
            f"has shape {tuple(raw.x.shape[1:])} per example"
        )
    example = (len(columns),) if columns is not None else raw.x.shape[1:]
    for name, v in (("offset", offset), ("divisor", divisor)):
        if v.ndim and v.shape != tuple(example):
            raise AekitError(
                f"{raw.what}: the saved scaling has a {name} of shape {v.shape}, the data's "
                f"examples have shape {tuple(example)}"
            )
    if divisor.ndim == 0 and offset.ndim == 0:
        return _Scaling(float(offset), float(divisor), columns)
    return _Scaling(offset, divisor, columns)


def _derived_seed(split_seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([split_seed, stream]).generate_state(1)[0])
