"""Feature extractors for the generation metrics (`aekit.eval.generation`), with nothing to
download: a small classifier that aekit trains on the dataset's own labels and caches
(`cached_classifier`), or a TorchScript module the user supplies (`TorchScriptFeatures`, e.g.
Inception weights for a real FID).

    classifier = cached_classifier(train.x, train.y, name="mnist")
    classifier.features(x)  # (B, feature_dim)
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from aekit.data import download
from aekit.data.validate import check_array, check_labels
from aekit.errors import AekitError, one_line
from aekit.io import atomic_path, atomic_write_json, read_json, read_safetensors

__all__ = [
    "CLASSIFIER_DESCRIPTION",
    "FeatureClassifier",
    "TorchScriptFeatures",
    "cached_classifier",
    "data_fingerprint",
    "train_classifier",
]

logger = logging.getLogger(__name__)

CLASSIFIER_DESCRIPTION = "aekit FeatureClassifier (trained on the dataset's labels), not Inception"

_CACHE_FORMAT = 1
_FINGERPRINT_HEX = 16


# --- the feature classifier -------------------------------------------------------------------


def _is_image(shape: tuple[int, ...]) -> bool:
    # Two 2x2 poolings need at least 4x4; smaller "images" go through the MLP.
    return len(shape) == 3 and shape[1] >= 4 and shape[2] >= 4


class FeatureClassifier(nn.Module):
    """A small classifier whose penultimate layer is the feature space of the metrics.

    (C, H, W) inputs of at least 4x4: [3x3 conv(32) + ReLU + 2x2 max-pool] -> [3x3 conv(64) +
    ReLU + 2x2 max-pool] -> linear(feature_dim) + ReLU -> linear(classes). Other shapes:
    flatten -> linear(256) + ReLU -> linear(feature_dim) + ReLU -> linear(classes).
    Inputs are standardised by the training data's scalar mean and standard deviation
    (buffers, saved with the weights), so any value range trains alike.
    """

    name = "classifier"
    description = CLASSIFIER_DESCRIPTION

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        feature_dim: int = 128,
        classes: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        if not self.input_shape or min(self.input_shape) < 1:
            raise AekitError(f"classifier input shape must be non-empty (got {self.input_shape})")
        if num_classes < 2:
            raise AekitError(f"a classifier needs at least 2 classes (got {num_classes})")
        if feature_dim < 1:
            raise AekitError(f"feature_dim must be at least 1 (got {feature_dim})")
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.classes = list(classes) if classes is not None else list(range(num_classes))
        if len(self.classes) != self.num_classes:
            raise AekitError(f"{len(self.classes)} class labels for {num_classes} classes")
        self.held_out_accuracy: float | None = None
        """Accuracy on the held-out part of the training data; None when nothing was held out."""
        self.register_buffer("input_shift", torch.zeros(()))
        self.register_buffer("input_scale", torch.ones(()))
        if _is_image(self.input_shape):
            c, h, w = self.input_shape
            self.body = nn.Sequential(
                nn.Conv2d(c, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(64 * (h // 4) * (w // 4), feature_dim),
                nn.ReLU(),
            )
        else:
            self.body = nn.Sequential(
                nn.Flatten(),
                nn.Linear(math.prod(self.input_shape), 256),
                nn.ReLU(),
                nn.Linear(256, feature_dim),
                nn.ReLU(),
            )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate embedding, (B, feature_dim)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise AekitError(
                f"the feature classifier expects examples of shape {self.input_shape}, "
                f"got {tuple(x.shape[1:])}"
            )
        x = x.to(self.input_shift.device, torch.float32)
        return self.body((x - self.input_shift) / self.input_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, (B, num_classes), in the order of `classes`."""
        return self.head(self.features(x))


def _training_tensors(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float32 examples and int64 labels, on x's device."""
    if y is None:
        raise AekitError("the feature classifier needs labels, and the data has none")
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    x_np = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y_np = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y_np.size == 0:
        raise AekitError("the feature classifier needs labels, and the label array is empty")
    check_array(x_np, "classifier data")
    y_np = check_labels(y_np, len(x_np), "classifier data")
    if len(np.unique(y_np)) < 2:
        raise AekitError(
            f"the feature classifier needs at least 2 classes; every label is {int(y_np[0])}"
        )
    x_t = torch.as_tensor(x_np, dtype=torch.float32).to(device)
    return x_t, torch.as_tensor(y_np, dtype=torch.int64).to(device)


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    val_fraction: float = 0.1,
    feature_dim: int = 128,
) -> tuple[FeatureClassifier, float | None]:
    """Train a `FeatureClassifier` on (x, y) with Adam and cross-entropy; return it (in eval
    mode) with its accuracy on a held-out random `val_fraction` of the examples (None when
    `val_fraction` is 0). The split, the initialisation and the batch order all come from
    `seed`, and the global RNG is left as it was, so a seed gives the same classifier."""
    if epochs < 1:
        raise AekitError(f"classifier epochs must be at least 1 (got {epochs})")
    if batch_size < 1:
        raise AekitError(f"classifier batch size must be at least 1 (got {batch_size})")
    if not lr > 0:
        raise AekitError(f"classifier learning rate must be positive (got {lr})")
    if not 0 <= val_fraction < 1:
        raise AekitError(f"val_fraction must be in [0, 1) (got {val_fraction})")
    x, y = _training_tensors(x, y)
    device = x.device
    classes, targets = torch.unique(y, sorted=True, return_inverse=True)
    n = len(x)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).to(device)
    # At least one held-out example when asked for any, and at least one to train on.
    n_val = min(max(round(n * val_fraction), 1), n - 1) if val_fraction > 0 else 0
    if n - n_val < 1:
        raise AekitError(f"too few examples to train a classifier ({n})")
    train_idx, val_idx = order[n_val:], order[:n_val]
    x_train, t_train = x[train_idx], targets[train_idx]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initial weights
        classifier = FeatureClassifier(
            tuple(x.shape[1:]), len(classes), feature_dim, classes=classes.tolist()
        )
    classifier.to(device)
    classifier.input_shift.fill_(float(x_train.mean()))
    # A constant input would give a zero scale; the floor keeps the division finite.
    classifier.input_scale.fill_(max(float(x_train.std()) if len(x_train) > 1 else 1.0, 1e-6))

    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_train), generator=generator).to(device)
        for start in range(0, len(x_train), batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(classifier(x_train[idx]), t_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    classifier.eval()

    accuracy = None
    if n_val:
        with torch.no_grad():
            correct = sum(
                int((classifier(x[idx]).argmax(1) == targets[idx]).sum())
                for idx in val_idx.split(max(batch_size, 512))
            )
        accuracy = correct / n_val
    classifier.held_out_accuracy = accuracy
    return classifier, accuracy


_TRAIN_DEFAULTS: dict[str, Any] = {
    name: p.default
    for name, p in inspect.signature(train_classifier).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


# --- the cache ---------------------------------------------------------------------------------


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 over the shapes and the bytes of x (float32) and y (int64), truncated to 16 hex
    digits: it changes whenever the training data does."""
    digest = hashlib.sha256()
    for t, dtype in ((x, np.float32), (y, np.int64)):
        a = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)
        # The shape goes in too, so the same bytes reshaped are different data.
        digest.update(f"{a.dtype.str}{a.shape};".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()[:_FINGERPRINT_HEX]


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def cached_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    name: str,
    cache_dir: str | Path | None = None,
    **train_kwargs: Any,
) -> FeatureClassifier:
    """A `FeatureClassifier` for (x, y), trained once and then read back from the cache.

    The cache holds `<cache_dir>/<name>.safetensors` (weights) and `<name>.json` (classes,
    input shape, feature_dim, held-out accuracy, training options and the data fingerprint);
    `cache_dir` defaults to `aekit.data.download.cache_dir() / "classifiers"`. The cached
    classifier is used when the fingerprint of (x, y) and the training options match; otherwise
    (or when the files are unreadable) it is retrained and both files are overwritten. Its
    held-out accuracy is in `.held_out_accuracy`.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AekitError(
            f"classifier cache name must be letters, digits, '.', '_' or '-' (got {name!r})"
        )
    unknown = sorted(set(train_kwargs) - set(_TRAIN_DEFAULTS))
    if unknown:
        raise AekitError(
            f"unknown classifier training option(s) {', '.join(unknown)}; "
            f"choose from {', '.join(_TRAIN_DEFAULTS)}"
        )
    settings = {**_TRAIN_DEFAULTS, **train_kwargs}
    directory = Path(cache_dir) if cache_dir is not None else download.cache_dir() / "classifiers"
    weights, sidecar = directory / f"{name}.safetensors", directory / f"{name}.json"
    x, y = _training_tensors(x, y)
    fingerprint = data_fingerprint(x, y)

    classifier = _load_cached(weights, sidecar, fingerprint, settings)
    if classifier is not None:
        return classifier.to(x.device)
    classifier, _ = train_classifier(x, y, **settings)
    _save_cached(classifier, weights, sidecar, fingerprint, settings, len(x))
    return classifier


def _save_cached(
    classifier: FeatureClassifier,
    weights: Path,
    sidecar: Path,
    fingerprint: str,
    settings: Mapping[str, Any],
    n_examples: int,
) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
    # The fingerprint also goes into the weights file: the two renames are not one atomic
    # step, and a crash between them must not pair new weights with an old sidecar.
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"fingerprint": fingerprint})
    atomic_write_json(
        sidecar,
        {
            "format": _CACHE_FORMAT,
            "fingerprint": fingerprint,
            "classes": classifier.classes,
            "input_shape": list(classifier.input_shape),
            "feature_dim": classifier.feature_dim,
            "held_out_accuracy": classifier.held_out_accuracy,
            "n_examples": n_examples,
            "train_settings": dict(settings),
            "weights": weights.name,
        },
    )


_CACHE_ERRORS = (
    AekitError,  # read_json / read_safetensors: missing, invalid or corrupt files
    OSError,
    KeyError,
    TypeError,
    ValueError,
    RuntimeError,  # load_state_dict: missing keys or mismatched shapes
)


def _load_cached(
    weights: Path, sidecar: Path, fingerprint: str, settings: Mapping[str, Any]
) -> FeatureClassifier | None:
    """The cached classifier, or None when there is none for this data and these options."""
    if not sidecar.is_file() or not weights.is_file():
        return None
    try:
        meta = read_json(sidecar, "classifier cache sidecar")
        if (
            meta.get("format") != _CACHE_FORMAT
            or meta.get("fingerprint") != fingerprint
            or meta.get("train_settings") != dict(settings)
        ):
            return None
        state, metadata = read_safetensors(weights, "classifier cache")
        if metadata.get("fingerprint") != fingerprint:
            return None
        classifier = FeatureClassifier(
            tuple(meta["input_shape"]),
            len(meta["classes"]),
            int(meta["feature_dim"]),
            classes=[int(c) for c in meta["classes"]],
        )
        classifier.load_state_dict(state, strict=True)
    except _CACHE_ERRORS as e:
        # A torn, foreign or outdated cache is not the user's error: retrain over it.
        logger.warning("ignoring unreadable classifier cache %s (%s); retraining", sidecar, e)
        return None
    accuracy = meta.get("held_out_accuracy")
    classifier.held_out_accuracy = None if accuracy is None else float(accuracy)
    return classifier.eval()


# --- user-supplied TorchScript features (e.g. Inception for a real FID) ------------------------


class TorchScriptFeatures:
    """Features from a TorchScript module the user supplies; aekit downloads nothing.

    For a real FID use NVIDIA's `inception-2015-12-05.pt` (the network of StyleGAN2-ADA and
    clean-fid), which maps uint8 NCHW RGB images to 2048-d pool3 features when called as
    `module(x, return_features=True)`, and pass `inception=True` so the metrics are named
    `fid_*`. Images are prepared as such networks expect: 1-channel images are replicated to
    3, [0, 1] floats are resized bilinearly to `image_size` (None: as they are) and quantised
    to uint8 0..255. `call_kwargs` (default {"return_features": True}) are passed when the
    module's forward accepts them, otherwise it is called with the images alone.

    torch.jit.load runs the file's TorchScript code: load only files you trust.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        image_size: int | None = 299,
        call_kwargs: Mapping[str, Any] | None = None,
        inception: bool = False,
        name: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.path = Path(path)
        self.image_size = image_size
        self.call_kwargs = {"return_features": True} if call_kwargs is None else dict(call_kwargs)
        self.inception = inception
        self.name = name or ("inception" if inception else "torchscript")
        self.device = torch.device(device)
        self.module = _load_torchscript(self.path).to(self.device).eval()
        self._pass_kwargs = _accepts_kwargs(self.module, self.call_kwargs)

    @property
    def description(self) -> str:
        kind = "Inception features (user-supplied weights)" if self.inception else "features"
        return f"TorchScript {kind} from {self.path}"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1 or 3, H, W) images in [0, 1] (or uint8) -> uint8 (B, 3, size, size)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise AekitError(
                f"TorchScript features need images (N, 1 or 3, H, W); got shape {tuple(x.shape)}"
            )
        x = x.to(self.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        x = x.expand(-1, 3, -1, -1)  # grey -> RGB; a no-op for 3 channels
        size = self.image_size
        if size is not None and tuple(x.shape[2:]) != (size, size):
            # Resize the floats, then quantise once: resizing uint8 would round twice.
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) features of the images x."""
        images = self.preprocess(x)
        if self._pass_kwargs is None:  # forward's schema unknown: try once, remember
            try:
                out = self.module(images, **self.call_kwargs)
                self._pass_kwargs = True
            except RuntimeError:
                out = self.module(images)
                self._pass_kwargs = False
        elif self._pass_kwargs:
            out = self.module(images, **self.call_kwargs)
        else:
            out = self.module(images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise AekitError(f"{self.path}: the module returned {type(out).__name__}, not a tensor")
        return out.reshape(len(images), -1).float()


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise AekitError(f"feature extractor not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch.jit is deprecated, but it is the format these published weights come in.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError, ValueError or others on a bad file
        raise AekitError(
            f"{path} is not a readable TorchScript module ({one_line(e, 200)})"
        ) from None


def _accepts_kwargs(module: Any, kwargs: Mapping[str, Any]) -> bool | None:
    """Whether module.forward takes every keyword in kwargs; None when its schema is unknown."""
    if not kwargs:
        return False
    try:
        names = {a.name for a in module.forward.schema.arguments}
    except (AttributeError, RuntimeError):
        return None
    return set(kwargs) <= names
