"""Anomaly detection with any recipe, in scikit-learn's shape.

    detector = aekit.Detector().fit(X_train)          # rows x features, no labels
    scores = detector.score_samples(X_test)           # higher = more anomalous
    flags = detector.predict(X_test)                  # 1 = outlier, 0 = inlier

`fit` standardises each column over the training rows (constant columns dropped), trains the
recipe's model with the shared Trainer, early-stopped on a held-out share of the (unlabelled)
training rows, and fits the reference statistics of the scores (`eval/anomaly.py`) on the
training rows. Every default is chosen without labels: the network is sized from the number of
features (`tabular_layout`), never wider than the input, and nothing is tuned on a labelled
score. An ensemble (`ensemble=N`) averages the z-scored scores of N seeds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aekit.bottlenecks import BOTTLENECKS, Quantizer
from aekit.components import SavedConfig
from aekit.data.config import DataConfig
from aekit.data.tabular import Standardization, fit_standardization
from aekit.data.tensor_data import TensorData
from aekit.data.validate import check_array
from aekit.errors import AekitError
from aekit.eval.anomaly import (
    SCORES,
    ScoreReference,
    anomaly_scores,
    check_score,
    fit_reference,
    mean_shift,
    mean_std,
)
from aekit.io import atomic_write_json, read_aekit_safetensors, read_json, write_safetensors
from aekit.models.autoencoder import Autoencoder
from aekit.models.config import ModelConfig
from aekit.registry import build_from_config, get_recipe, model_config
from aekit.train.checkpoint import load_state
from aekit.train.config import TrainConfig
from aekit.train.trainer import Trainer, resolve_device

DETECTOR_FILE = "detector.json"
DEFAULT_SCORE = "scaled-reconstruction+mahalanobis"
"""On the 17 ODDS sets (`aekit bench odds`, 3 seeds, same fit) mean ROC-AUC 0.821 against
0.815 for Denouden et al.'s plain reconstruction + Mahalanobis, 0.772 for reconstruction and
0.767 for Mahalanobis alone; the same check on ADBench sets outside that table is in
`docs/benchmarks.md` (`benchmarks/detector_unseen.py`)."""
DEFAULT_SPARSE_SCORE = "scaled-reconstruction"
MIN_VALIDATION_ROWS = 20
"""Below this many held-out rows early stopping would follow noise: train the fixed epochs."""


def tabular_layout(n_features: int) -> tuple[tuple[int, ...], int]:
    """(hidden widths, latent width) of the default network for `n_features` columns: a code
    of about sqrt(d) (at least 1, below d so the identity cannot be learned) and two hidden
    layers of twice the input width, capped at 128. PyOD's fixed [64, 32] encoder is wider than
    the input on half of the ODDS sets.

    Not tuned per set: this layout, the scaled score and the ensemble were picked over a
    handful of alternatives (one hidden layer, a d/4 code, 30 epochs, weight decay, denoising)
    by their mean ROC-AUC on the ODDS sets, one seed, then checked on 18 ADBench sets outside
    that table (`benchmarks/detector_unseen.py`, `docs/benchmarks.md`)."""
    latent = max(1, min(n_features - 1, math.ceil(math.sqrt(n_features))))
    hidden = max(2 * latent, min(128, 2 * n_features))
    return (hidden, hidden), latent


@dataclass
class DetectorConfig(SavedConfig):
    """The detector's choices; each field is an `aekit detect` flag."""

    recipe: str = "ae"
    """Any recipe with a dense code: ae, dae, vae, wae-mmd, ... (`aekit models`)."""
    score: str = "auto"
    """`auto` (scaled-reconstruction+mahalanobis; scaled-reconstruction for sparse codes, which
    have no covariance) or one of `eval.anomaly.SCORES`: reconstruction, scaled-reconstruction,
    mahalanobis, their z-scored sums (`...+mahalanobis`), mean-shift, elbo, nll and complexity
    (the last three for recipes with a posterior density)."""
    latent_dim: int | None = None
    """Code width (default: about sqrt(features), `tabular_layout`)."""
    hidden: tuple[int, ...] | None = None
    """Hidden widths of the MLP body (default: `tabular_layout`)."""
    likelihood: str = "gaussian"
    """p(x|z) on the standardised features: gaussian or laplace (unit scale: the loss is the
    squared or absolute error)."""
    epochs: int = 100
    """At most this many passes; early stopping on the held-out rows usually ends sooner."""
    patience: int = 10
    """Epochs without a better held-out loss before stopping."""
    val_fraction: float = 0.2
    """Share of the training rows held out (unlabelled) for early stopping."""
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    contamination: float = 0.1
    """Expected share of outliers: `predict` flags scores above this quantile of the training
    scores."""
    ensemble: int = 5
    """Members trained with seeds seed, seed + 1, ...; their z-scored scores are averaged.
    Five members: mean ODDS ROC-AUC 0.821 against 0.814 for the first member alone of the same
    fits (`aekit bench odds`), with smaller spreads over seeds, at five times the fit time."""
    seed: int = 0
    nll_k: int = 100
    """Importance samples of the `nll` score."""
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    """Further options of the recipe's parts (e.g. {"beta": 2} or {"noise": 0.2})."""

    def __post_init__(self) -> None:
        if self.hidden is not None:
            self.hidden = tuple(int(h) for h in self.hidden)
        get_recipe(self.recipe)
        if self.score != "auto" and self.score not in SCORES:
            raise AekitError(f"unknown score {self.score!r}; choose from auto, {', '.join(SCORES)}")
        if not 0.0 < self.contamination <= 0.5:
            raise AekitError(f"contamination must be in (0, 0.5] (got {self.contamination})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise AekitError(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        for name in ("ensemble", "epochs", "batch_size", "nll_k"):
            if getattr(self, name) < 1:
                raise AekitError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.latent_dim is not None and self.latent_dim < 1:
            raise AekitError(f"latent_dim must be at least 1 (got {self.latent_dim})")
        if self.likelihood not in ("gaussian", "laplace"):
            raise AekitError(f"likelihood must be gaussian or laplace (got {self.likelihood!r})")


@dataclass
class Member:
    model: Autoencoder
    reference: ScoreReference
    spread: tuple[float, float]
    """Mean and standard deviation of this member's score over the training rows, so that
    members of an ensemble are averaged on one scale."""


class Detector:
    """An autoencoder anomaly detector: `fit(X)`, `score_samples(X)` (higher = more
    anomalous), `decision_function(X)` (score minus the threshold: positive = outlier),
    `predict(X)` (1 = outlier), `fit_predict(X)`; `save(path)` and `Detector.load(path)`.
    After `fit`: `threshold_` and `decision_scores_` (the training rows' scores), as in PyOD."""

    def __init__(self, config: DetectorConfig | None = None, **values: Any) -> None:
        if config is not None and values:
            raise AekitError("pass either a DetectorConfig or its fields, not both")
        self.config = config or DetectorConfig(**values)
        self.standardization: Standardization | None = None
        self.members: list[Member] = []
        self.threshold_: float | None = None
        self.decision_scores_: np.ndarray | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any = None) -> Detector:
        """Train on the rows of `X` (N, features). `y` is ignored: labels never reach a
        detector's fit (it is accepted for scikit-learn pipelines)."""
        del y
        x = _rows(X, "training data")
        if len(x) < 2:
            raise AekitError(f"training data: {len(x)} row(s); a detector needs at least 2")
        self.standardization = fit_standardization(x, "training data")
        xs = torch.from_numpy(self.standardization.apply(x, "training data"))
        self.members, self.history, raws = [], [], []
        for i in range(self.config.ensemble):
            member, raw = self._fit_member(xs, self.config.seed + i)
            self.members.append(member)
            raws.append(raw)
        self.decision_scores_ = self._average(raws)
        self.threshold_ = self._threshold(self.decision_scores_)
        return self

    def _fit_member(self, xs: torch.Tensor, seed: int) -> tuple[Member, np.ndarray]:
        """A trained member and its scores of the training rows `xs`."""
        c = self.config
        n, d = xs.shape
        hidden, latent = tabular_layout(d)
        # The tabular MLP where the recipe leaves the body to the data (not a dictionary).
        body = {"body": "mlp", "hidden": c.hidden or hidden}
        if get_recipe(c.recipe).kinds.get("body", "auto") != "auto":
            body = {}
        options = {**body, "likelihood": c.likelihood, "variance": "fixed", **c.options}
        latent = c.latent_dim or self._latent(d, latent, options)
        config = model_config(c.recipe, (d,), latent, **options)
        torch.manual_seed(seed)
        model = build_from_config(config)
        if c.score == "auto":  # resolved once, so a saved detector names its score
            c.score = DEFAULT_SCORE if not model.bottleneck.is_sparse else DEFAULT_SPARSE_SCORE
        check_score(c.score, model)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_val = round(c.val_fraction * n)
        use_val = n_val >= MIN_VALIDATION_ROWS and n - n_val >= 2
        train_rows = order[n_val:] if use_val else order
        train = TensorData(xs[train_rows], name="training rows")
        val = TensorData(xs[order[:n_val]], name="held-out rows") if use_val else None
        train_config = TrainConfig(
            epochs=c.epochs,
            batch_size=min(c.batch_size, len(train)),
            lr=c.lr,
            weight_decay=c.weight_decay,
            patience=c.patience if use_val else 0,
            seed=seed,
            device=c.device,
            nll_k=0,
            progress=False,
        )
        result = Trainer(model, train, val, train_config).fit()
        self.history.append(
            {"seed": seed, "epochs": result.epochs, "best_epoch": result.best_epoch}
        )
        model.eval()
        reference = fit_reference(model, xs.to(model.device))
        member = Member(model, reference, (0.0, 1.0))
        raw = self._member_scores(member, xs)
        member.spread = mean_std(raw)
        return member, raw

    def _latent(self, d: int, sized: int, options: dict[str, Any]) -> int | None:
        """The data-sized code width, unless the recipe's bottleneck sizes its own code:
        quantizers (vectors x code width), sparse codes (k of many latents) and categorical
        latents (variables x categories)."""
        probe = model_config(self.config.recipe, (d,), None, **options)
        kind = BOTTLENECKS[probe.bottleneck.kind]
        own_width = hasattr(probe.bottleneck.options, "latent_width")
        return None if issubclass(kind, Quantizer) or kind.is_sparse or own_width else sized

    # ------------------------------------------------------------------------- scoring
    def _member_scores(
        self, member: Member, xs: torch.Tensor, shifted: torch.Tensor | None = None
    ) -> np.ndarray:
        c = self.config
        return anomaly_scores(
            member.model,
            xs,
            (c.score,),
            member.reference,
            nll_k=c.nll_k,
            seed=c.seed,
            shifted=shifted,
        )[c.score]

    def _combined(self, xs: torch.Tensor) -> np.ndarray:
        shifted = None
        if self.config.score == "mean-shift":  # the rows' shift, shared by every member
            shifted = mean_shift(xs, self.members[0].reference.x)
        return self._average([self._member_scores(m, xs, shifted) for m in self.members])

    def _average(self, raws: list[np.ndarray]) -> np.ndarray:
        """One member's scores as they are; an ensemble's z-scored and averaged."""
        if len(raws) == 1:
            return raws[0]
        total = np.zeros(len(raws[0]))
        for member, raw in zip(self.members, raws, strict=True):
            mean, std = member.spread
            total += (raw - mean) / std
        return total / len(raws)

    def _check_fitted(self) -> Standardization:
        if self.standardization is None or not self.members:
            raise AekitError("this detector is not fitted yet: call fit(X) first")
        return self.standardization

    def score_samples(self, X: Any) -> np.ndarray:
        """The anomaly score of each row of `X` (higher = more anomalous), float64."""
        standardization = self._check_fitted()
        xs = torch.from_numpy(standardization.apply(_rows(X, "data"), "data"))
        return self._combined(xs)

    def decision_function(self, X: Any) -> np.ndarray:
        """score - threshold: positive for rows `predict` flags as outliers."""
        scores = self.score_samples(X)
        assert self.threshold_ is not None
        return scores - self.threshold_

    def predict(self, X: Any) -> np.ndarray:
        """1 for rows scored above the contamination threshold, else 0."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X).predict(X)

    # ---------------------------------------------------------------------- save, load
    def save(self, path: str | Path) -> Path:
        """A folder: detector.json (config, standardisation, threshold, each member's model
        config) and memberN.safetensors (weights and score statistics). No pickle."""
        standardization = self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        members = []
        for i, member in enumerate(self.members):
            tensors = {f"model.{k}": v for k, v in member.model.state_dict().items()}
            tensors.update({f"reference.{k}": v for k, v in member.reference.tensors().items()})
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
            write_safetensors(path / f"member{i}.safetensors", tensors, "aekit-detector")
            members.append({"model": member.model.config.to_dict(), "spread": member.spread})
        atomic_write_json(
            path / DETECTOR_FILE,
            {
                "format": "aekit-detector",
                "config": self.config.to_dict(),
                "standardization": standardization.to_dict(),
                "threshold": self.threshold_,
                "members": members,
                "history": self.history,
            },
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        path = Path(path)
        saved = read_json(path / DETECTOR_FILE, "detector file")
        if not isinstance(saved, dict) or saved.get("format") != "aekit-detector":
            raise AekitError(f"{path / DETECTOR_FILE} is not an aekit detector")
        detector = cls(DetectorConfig.from_dict(saved["config"]))
        detector.standardization = Standardization.from_dict(saved["standardization"])
        detector.threshold_ = float(saved["threshold"])
        detector.history = saved.get("history", [])
        device = resolve_device(detector.config.device)
        for i, entry in enumerate(saved["members"]):
            tensors, _ = read_aekit_safetensors(
                path / f"member{i}.safetensors", "detector member", "aekit-detector"
            )
            model = build_from_config(ModelConfig.from_dict(entry["model"]))
            state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
            load_state(model, state, path / f"member{i}.safetensors")
            model.to(device).eval()
            reference = ScoreReference.from_tensors(
                {k[10:]: v for k, v in tensors.items() if k.startswith("reference.")}
            )
            spread = tuple(float(v) for v in entry["spread"])
            detector.members.append(Member(model, reference, spread))  # type: ignore[arg-type]
        return detector

    def first_members(self, n: int) -> Detector:
        """The detector made of the first `n` members only (no retraining): what a smaller
        ensemble of the same fit would score."""
        self._check_fitted()
        if not 1 <= n <= len(self.members):
            raise AekitError(f"n must be in [1, {len(self.members)}] (got {n})")
        other = Detector(dataclasses.replace(self.config, ensemble=n))
        other.standardization, other.members = self.standardization, self.members[:n]
        other.history = self.history[:n]
        other.decision_scores_ = other._combined(self.members[0].reference.x)
        other.threshold_ = other._threshold(other.decision_scores_)
        return other

    def _threshold(self, training_scores: np.ndarray) -> float:
        return float(np.quantile(training_scores, 1.0 - self.config.contamination))

    def with_score(self, score: str) -> Detector:
        """The same fitted members scored by another score (no retraining): each member's
        statistics are refitted for it on the reference rows."""
        standardization = self._check_fitted()
        other = Detector(dataclasses.replace(self.config, score=score))
        other.standardization = standardization
        other.history = self.history
        rows = self.members[0].reference.x
        shifted = mean_shift(rows, rows) if score == "mean-shift" else None
        raws = []
        for member in self.members:
            check_score(score, member.model)
            m = Member(member.model, member.reference, (0.0, 1.0))
            raws.append(other._member_scores(m, rows, shifted))
            m.spread = mean_std(raws[-1])
            other.members.append(m)
        other.decision_scores_ = other._average(raws)
        other.threshold_ = other._threshold(other.decision_scores_)
        return other


def score_with_run(
    run: str | Path,
    names: list[str],
    *,
    source: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    nll_k: int = 100,
    reference_rows: int = 20_000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Anomaly scores of a trained run (any recipe, images included) for the `split` (train,
    val, test or all) of `source` (default: the run's own data) read with the run's scaling,
    against statistics of at most `reference_rows` of its training split:
    out-of-distribution detection."""
    from aekit.data import load_all, load_data
    from aekit.train.checkpoint import load, read_config

    model = load(run)
    if not isinstance(model, Autoencoder):
        raise AekitError(f"{run}: anomaly scores need a single autoencoder, not a group run")
    spec = DataConfig.from_dict(read_config(run)["data"])
    for name in names:
        check_score(name, model)
    train = load_data(spec).train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    train_x = train.x[order[:reference_rows]]
    if train.binarize:  # the reference rows binarised once, as evaluation data is
        train_x = torch.bernoulli(train_x, generator=torch.Generator().manual_seed(seed))
    if source is not None:
        spec = dataclasses.replace(spec, source=source, data_dir=data_dir)
    if split == "all":  # every example in file order, binarised once like evaluation data
        data = load_all(spec)
        if spec.binarize:
            data = TensorData.binarized_once(data, seed)
    else:
        splits = load_data(spec)
        data = {"train": splits.train, "val": splits.val, "test": splits.test}.get(split)
        if data is None:
            raise AekitError(f"{spec.source} has no {split} split")
    model.eval()
    reference = fit_reference(model, train_x.to(model.device))
    x = data.x.to(model.device)
    return anomaly_scores(model, x, names, reference, nll_k=nll_k, seed=seed)


def _rows(X: Any, what: str) -> np.ndarray:
    """`X` as a float64 array of rows x features, checked (finite, numeric, 2-D)."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    x = np.asarray(X)
    if x.ndim == 1:
        raise AekitError(
            f"{what}: expected rows x features, got a 1-D array of {len(x)} values; "
            "reshape it to (-1, 1) for one feature or (1, -1) for one row"
        )
    check_array(x, what)
    if x.ndim != 2:
        raise AekitError(f"{what}: expected rows x features, got shape {tuple(x.shape)}")
    return x.astype(np.float64)
