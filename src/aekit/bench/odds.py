"""`aekit bench odds`: aekit's default detector beside PyOD's on the 17 ODDS outlier sets, under
PyOD's published benchmark protocol, in one run.

The protocol (PyOD's `notebooks/benchmark.py`): per seed i, a 60 / 40 random split of the whole
set (`train_test_split(X, y, test_size=0.4, random_state=numpy.random.RandomState(i))`), each
column standardised with statistics of the training part (`pyod.utils.utility.standardizer`),
every detector fitted on the training part (outliers included, labels unseen) and scored on
the test part: ROC-AUC and average precision. PyOD's detectors run at their defaults, given the
seed where they take one. aekit's detector runs at its defaults too (`aekit.Detector()`), and
the other aekit scores are read from the same fit (their time is the default's).

Rows go to OUT/results.jsonl (resumed: finished rows are skipped), the table to OUT/odds.md.
"""

from __future__ import annotations

import importlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aekit.bench.provenance import environment
from aekit.errors import AekitError
from aekit.io import append_jsonl, atomic_write_text, read_jsonl

ODDS_SETS = (
    "arrhythmia", "cardio", "glass", "ionosphere", "letter", "lympho", "mnist", "musk",
    "optdigits", "pendigits", "pima", "satellite", "satimage-2", "shuttle", "vertebral",
    "vowels", "wbc",
)  # fmt: skip
PEERS = {
    "pyod-AutoEncoder": ("pyod.models.auto_encoder", "AutoEncoder"),
    "pyod-VAE": ("pyod.models.vae", "VAE"),
    "pyod-IForest": ("pyod.models.iforest", "IForest"),
    "pyod-ECOD": ("pyod.models.ecod", "ECOD"),
    "pyod-KNN": ("pyod.models.knn", "KNN"),
}
AEKIT = "aekit"
SAME_FIT_SCORES = (
    "reconstruction",
    "scaled-reconstruction",
    "mahalanobis",
    "reconstruction+mahalanobis",
    "mean-shift",
)
"""Other scores of aekit's default fit, reported beside it with its first member alone (not
in the ranking)."""
PROTOCOL = (
    "PyOD's benchmark protocol: per seed i a 60/40 split of each set with "
    "`train_test_split(X, y, test_size=0.4, random_state=numpy.random.RandomState(i))`, columns "
    "standardised on the training part, each detector fitted on the training part (outliers "
    "included, labels unseen) at its defaults and scored on the test part."
)
PROVENANCE_SHOWN = ("aekit", "git_commit", "torch", "threads", "device_name", "timestamp")
DATA_HINT = (
    "the ODDS .mat files (PyOD's notebooks/data, or http://odds.cs.stonybrook.edu): pass --data-dir"
)


def odds_data_dir(given: str | None) -> Path:
    candidates = [Path(given)] if given else [Path("../shared/data/odds"), Path("data/odds")]
    for folder in candidates:
        if folder.is_dir() and any((folder / f"{name}.mat").is_file() for name in ODDS_SETS):
            return folder
    where = f"{given}" if given else "../shared/data/odds or data/odds"
    raise AekitError(f"no ODDS sets in {where}; the benchmark needs {DATA_HINT}")


def split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """PyOD's split and standardisation for seed `seed`."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.4, random_state=np.random.RandomState(seed)
    )
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test), y_train, y_test


def available_peers() -> tuple[dict[str, type], list[str]]:
    found, missing = {}, []
    for name, (module, attr) in PEERS.items():
        try:
            found[name] = getattr(importlib.import_module(module), attr)
        except ImportError as e:
            missing.append(f"{name} ({e.name or e})")
    return found, missing


def peer_detector(cls: type, seed: int) -> Any:
    parameters = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "random_state" in parameters:
        kwargs["random_state"] = seed
    if "verbose" in parameters:
        kwargs["verbose"] = 0
    return cls(**kwargs)


def odds_files(data_dir: Path, names: tuple[str, ...] = ODDS_SETS) -> dict[str, Path]:
    files = {name: data_dir / f"{name}.mat" for name in names}
    for path in files.values():
        if not path.is_file():
            raise AekitError(f"{path} is missing; the benchmark needs {DATA_HINT}")
    return files


def load_xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X and y of an ODDS .mat or an ADBench .npz file (1 = outlier)."""
    if path.suffix == ".mat":
        from scipy.io import loadmat

        contents = loadmat(path)
    else:
        from aekit.data.arrays import read_npz

        contents = read_npz(path)
    return np.asarray(contents["X"], dtype=np.float64), np.asarray(contents["y"]).ravel().astype(
        int
    )


def run_odds(
    files: dict[str, Path],
    out: Path,
    seeds: list[int],
    *,
    peers: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every detector on every set and seed (the module's protocol); finished rows in
    OUT/results.jsonl are kept and skipped."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from aekit.detector import Detector

    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    rows = read_jsonl(results) if results.is_file() else []
    done = {(r["data"], r["detector"], r["seed"]) for r in rows}
    found, _ = available_peers() if peers else ({}, [])
    where = environment("cpu")

    def record(row: dict[str, Any]) -> None:
        row = {**row, "provenance": where}
        append_jsonl(results, row)
        rows.append(row)
        if on_row is not None:
            on_row(row)

    def quality(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        return {
            "roc_auc": float(roc_auc_score(y, scores)),
            "average_precision": float(average_precision_score(y, scores)),
        }

    for name, path in files.items():
        x, y = load_xy(path)
        for seed in seeds:
            x_train, x_test, _, y_test = split(x, y, seed)
            base = {"data": name, "seed": seed, "n_train": len(x_train), "n_test": len(x_test)}
            if (name, AEKIT, seed) not in done:
                start = time.perf_counter()
                detector = Detector(seed=seed).fit(x_train)
                fit_seconds = time.perf_counter() - start
                start = time.perf_counter()
                scores = detector.score_samples(x_test)
                record(
                    {
                        **base,
                        "detector": AEKIT,
                        "score": detector.config.score,
                        **quality(y_test, scores),
                        "fit_seconds": fit_seconds,
                        "score_seconds": time.perf_counter() - start,
                        "epochs": [h["epochs"] for h in detector.history],
                    }
                )
                variants = {f"{AEKIT} (1 member)": detector.first_members(1)}
                variants.update({f"{AEKIT} ({s})": detector.with_score(s) for s in SAME_FIT_SCORES})
                for label, variant in variants.items():
                    values = variant.score_samples(x_test)
                    record(
                        {
                            **base,
                            "detector": label,
                            "score": variant.config.score,
                            "same_fit": True,
                            **quality(y_test, values),
                            "fit_seconds": fit_seconds,
                        }
                    )
            for peer, cls in found.items():
                if (name, peer, seed) in done:
                    continue
                model = peer_detector(cls, seed)
                start = time.perf_counter()
                model.fit(x_train)
                fit_seconds = time.perf_counter() - start
                start = time.perf_counter()
                scores = np.asarray(model.decision_function(x_test), dtype=np.float64)
                score_seconds = time.perf_counter() - start
                finite = bool(np.isfinite(scores).all())
                record(
                    {
                        **base,
                        "detector": peer,
                        **(quality(y_test, scores) if finite else {"roc_auc": None}),
                        "finite": finite,
                        "fit_seconds": fit_seconds,
                        "score_seconds": score_seconds,
                    }
                )
    return rows


def odds_table(rows: list[dict[str, Any]], command: str, protocol: str = PROTOCOL) -> str:
    """The markdown table: per-set ROC-AUC mean ± sd (n-1) over seeds for every detector, the
    mean over sets, the mean rank (among the ranked detectors, per set by mean ROC-AUC), mean
    average precision and median fit time."""
    sets = list(dict.fromkeys(r["data"] for r in rows))
    names = list(dict.fromkeys(r["detector"] for r in rows))
    ranked = [n for n in names if not any(r.get("same_fit") for r in rows if r["detector"] == n)]

    def values(name: str, data: str, key: str = "roc_auc") -> list[float]:
        return [
            r[key]
            for r in rows
            if r["detector"] == name and r["data"] == data and r.get(key) is not None
        ]

    means = {
        (n, s): float(np.mean(values(n, s))) if values(n, s) else np.nan
        for n in names
        for s in sets
    }
    ranks: dict[str, list[float]] = {n: [] for n in ranked}
    from scipy.stats import rankdata

    for s in sets:
        order = rankdata([-np.nan_to_num(means[(n, s)], nan=-1.0) for n in ranked])
        for n, rank in zip(ranked, order, strict=True):
            ranks[n].append(float(rank))
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"{protocol} Seeds {', '.join(map(str, seeds))}; ROC-AUC mean ± sd over seeds; the "
        "mean rank is among the detectors ranked (aekit's other scores come from the same fit "
        f"as its default and are not ranked). Reproduce: `{command}`.",
        "",
        "| data | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for s in sets:
        cells = []
        for n in names:
            v = values(n, s)
            cells.append(
                f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"
                if len(v) > 1
                else (f"{v[0]:.3f}" if v else "n/a")
            )
        lines.append(f"| {s} | " + " | ".join(cells) + " |")

    def summary(label: str, fn: Callable[[str], str]) -> None:
        lines.append(f"| **{label}** | " + " | ".join(fn(n) for n in names) + " |")

    summary("mean ROC-AUC", lambda n: f"**{np.nanmean([means[(n, s)] for s in sets]):.3f}**")
    summary("mean rank", lambda n: f"{np.mean(ranks[n]):.2f}" if n in ranks else "—")
    summary(
        "mean average precision",
        lambda n: f"{np.nanmean([np.mean(values(n, s, 'average_precision')) for s in sets]):.3f}",
    )
    summary(
        "median fit s",
        lambda n: f"{np.median([r['fit_seconds'] for r in rows if r['detector'] == n]):.2f}",
    )
    where = rows[-1].get("provenance", {}) if rows else {}
    shown = {k: where[k] for k in PROVENANCE_SHOWN if k in where}
    lines += ["", f"Measured with: {json.dumps(shown)}"]
    return "\n".join(lines) + "\n"


def write_odds_table(rows: list[dict[str, Any]], out: Path, command: str) -> Path:
    path = out / "odds.md"
    atomic_write_text(path, odds_table(rows, command, PROTOCOL))
    return path
