"""How good a representation is: classifiers fitted on a model's frozen codes of the training
split and scored on held-out codes (`aekit eval RUN --probe linear,knn`).

    linear  logistic regression (scikit-learn's lbfgs, C = 1) on codes standardised with the
            training codes' mean and standard deviation
    knn     k-nearest-neighbour majority votes on the raw codes: k = 20 under the cosine
            distance (DINO's k, Caron et al. 2021, without its temperature weighting) and
            k = 5 under the Euclidean one

Fitting touches the training codes only; the labels of the scored split are used for the
accuracy alone. A representation is worth its probe's accuracy against the same probes on the
raw inputs (`benchmarks/probes.py` measures both).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from aekit.errors import AekitError

LINEAR_MAX_ITER = 1000
"""lbfgs iterations of the linear probe (scikit-learn's default is 100). A fit that stops
before converging says so in its protocol: on the 784 raw Fashion-MNIST pixels it did, on
aekit's 16- and 1,000-wide codes of the same images it converged
(benchmarks/results/peers-probes-pixels.json, peers-probes.json)."""
KNN_PROBES = {"knn20_cosine": (20, "cosine"), "knn5_euclidean": (5, "euclidean")}
PROBES = ("linear", "knn")


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float
    protocol: str

    def to_dict(self) -> dict[str, float | str]:
        return {"accuracy": self.accuracy, "protocol": self.protocol}


def parse_probes(text: str) -> list[str]:
    """'linear,knn' -> ['linear', 'knn'], refusing unknown names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROBES]
    if unknown or not names:
        raise AekitError(
            f"unknown probe {', '.join(map(repr, unknown)) or repr(text)}; choose from "
            f"{', '.join(PROBES)} (comma-separated)"
        )
    return list(dict.fromkeys(names))


def probe(
    names: list[str],
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
    seed: int = 0,
) -> dict[str, ProbeResult]:
    """Each probe's accuracy on the test codes, fitted on the training codes (N, D)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    train_codes, test_codes = _as_rows(train_codes), _as_rows(test_codes)
    if train_codes.shape[1] != test_codes.shape[1]:
        raise AekitError(
            f"training codes have {train_codes.shape[1]} dimensions, test codes "
            f"{test_codes.shape[1]}"
        )
    classes = np.unique(train_labels)
    if len(classes) < 2:
        raise AekitError(
            f"a probe needs at least two classes in the training labels (got {classes})"
        )
    n, d, m = len(train_codes), train_codes.shape[1], len(test_codes)
    where = f"fitted on {n:,} training codes of {d} dimensions, scored on {m:,} held-out codes"
    results: dict[str, ProbeResult] = {}
    if "linear" in names:
        scaler = StandardScaler().fit(train_codes)
        classifier = LogisticRegression(max_iter=LINEAR_MAX_ITER, random_state=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            classifier.fit(scaler.transform(train_codes), train_labels)
        stopped = any(issubclass(w.category, ConvergenceWarning) for w in caught)
        accuracy = classifier.score(scaler.transform(test_codes), test_labels)
        results["linear"] = ProbeResult(
            float(accuracy),
            "logistic regression (scikit-learn lbfgs, C=1, max_iter "
            f"{LINEAR_MAX_ITER}) on codes standardised by the training codes"
            + (f", stopped at {LINEAR_MAX_ITER} iterations before converging" if stopped else "")
            + f"; {where}",
        )
    if "knn" in names:
        for name, (k, metric) in KNN_PROBES.items():
            if k > n:
                raise AekitError(f"the {name} probe needs at least {k} training codes (got {n})")
            classifier = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute")
            accuracy = classifier.fit(train_codes, train_labels).score(test_codes, test_labels)
            results[name] = ProbeResult(
                float(accuracy),
                f"{k}-nearest-neighbour majority vote, {metric} distance, raw codes; {where}",
            )
    return results


def _as_rows(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float64).reshape(len(codes), -1)
    if not np.isfinite(codes).all():
        raise AekitError("the codes hold NaN or infinite values; a probe cannot be fitted")
    return codes
