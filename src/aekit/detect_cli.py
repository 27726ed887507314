"""`aekit detect DATA`: fit a detector on a table (or load one) and write each row's score.

Without `--fit`, the detector is fitted on DATA itself and scores the same rows, the usual
unsupervised setting (PyOD's `decision_scores_`); labels, where the file has them, are used only
to print the ROC-AUC and average precision of the scores.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from aekit.cli_flags import add_flags, positive_int, section_values
from aekit.data import DataConfig, read_rows
from aekit.errors import AekitError
from aekit.eval.anomaly import SCORES
from aekit.io import atomic_write_text


def add_detect_parser(p: argparse.ArgumentParser) -> None:
    """`aekit detect`'s flags, on its subparser."""
    from aekit.detector import DetectorConfig

    p.description = (
        "Fit an autoencoder detector on DATA (or on --fit) and write one score per row of "
        "DATA, in file order; with labels in the file, print ROC-AUC and average precision "
        "(labels never reach the fit)."
    )
    p.add_argument("data", help="the rows to score: .mat (X, y), .csv, .npz or .npy")
    p.add_argument("--out", default="scores.csv", help="the scores (default: scores.csv)")
    p.add_argument(
        "--score",
        metavar="S[,S...]",
        help=f"one or more of {', '.join(SCORES)}; the first is the `score` column "
        "(default: auto, the detector's: scaled-reconstruction+mahalanobis for dense codes)",
    )
    p.add_argument("--fit", metavar="TRAIN", help="fit on these rows instead of DATA")
    p.add_argument("--detector", metavar="DIR", help="score with a saved detector (no fit)")
    p.add_argument("--save", metavar="DIR", help="save the fitted detector here")
    p.add_argument("--label-column", help="CSV column (name or 0-based index) with labels")
    p.add_argument(
        "--run",
        metavar="RUN",
        help="score DATA (a source such as mnist, read with the run's scaling) with a trained "
        "run of any recipe, images included, against its training split: out-of-distribution "
        "detection",
    )
    p.add_argument("--data-dir", help="--run: the folder of DATA's IDX files")
    p.add_argument(
        "--split", choices=("train", "val", "test", "all"), default="test", help="--run: rows"
    )
    p.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads")
    add_flags(
        p.add_argument_group("detector"), "detector", DetectorConfig, skip=("options", "score")
    )


def read_table(path: str, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows of a table as read (unscaled: the detector fits its own standardisation)."""
    spec = DataConfig(source=path, label_column=label_column, scale="none")
    x, y = read_rows(spec)
    if x.ndim != 2:
        x = x.reshape(len(x), -1)
    return x, y


def cmd_detect(args: argparse.Namespace) -> int:
    import torch

    from aekit.detector import Detector, DetectorConfig

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.getLogger("aekit").setLevel(logging.WARNING)  # one summary, not a line per epoch
    scores = _score_names(args.score)
    if args.run:
        return _detect_with_run(args, scores)
    x, y = read_table(args.data, args.label_column)
    values = section_values(args, "detector")
    start = time.perf_counter()
    if args.detector:
        if values or args.fit:
            raise AekitError("--detector scores with a saved detector: drop the fitting flags")
        detector = Detector.load(args.detector)
        fitted_on = args.detector
    else:
        config = DetectorConfig(**values, **({"score": scores[0]} if scores else {}))
        detector = Detector(config)
        train = read_table(args.fit, args.label_column)[0] if args.fit else x
        detector.fit(train)
        fitted_on = args.fit or args.data
    scores = scores or [detector.config.score]
    columns, thresholds = {}, {}
    for name in scores:
        scorer = detector if name == detector.config.score else detector.with_score(name)
        columns[name], thresholds[name] = scorer.score_samples(x), scorer.threshold_
    flags = (columns[scores[0]] > thresholds[scores[0]]).astype(int)
    seconds = time.perf_counter() - start
    _write_scores(Path(args.out), columns, scores[0], flags, y)
    if args.save:
        detector.save(args.save)
    print(
        f"{len(x)} rows scored by {detector.config.recipe} ({scores[0]}; fitted on "
        f"{fitted_on}) in {seconds:.1f} s -> {args.out}; {int(flags.sum())} flagged above the "
        f"{detector.config.contamination:g} contamination threshold"
    )
    if y is not None:
        _print_quality(y, columns)
    return 0


def _detect_with_run(args: argparse.Namespace, scores: list[str]) -> int:
    from aekit.detector import DEFAULT_SCORE, score_with_run

    given = [k for k in ("fit", "detector", "save", "label_column") if getattr(args, k)]
    if given or section_values(args, "detector").keys() - {"seed", "nll_k"}:
        raise AekitError("--run scores with a trained run: drop the detector's fitting flags")
    values = section_values(args, "detector")
    scores = scores or [DEFAULT_SCORE]
    start = time.perf_counter()
    columns = score_with_run(
        args.run,
        scores,
        source=args.data,
        data_dir=args.data_dir,
        split=args.split,
        nll_k=values.get("nll_k", 100),
        seed=values.get("seed", 0),
    )
    first = columns[scores[0]]
    _write_scores(Path(args.out), columns, scores[0], None, None)
    print(
        f"{len(first)} rows of {args.data} ({args.split}) scored by {args.run} ({scores[0]}) in "
        f"{time.perf_counter() - start:.1f} s -> {args.out}"
    )
    return 0


def _score_names(text: str | None) -> list[str]:
    if not text:
        return []
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in SCORES:
            raise AekitError(f"unknown score {name!r}; choose from {', '.join(SCORES)}")
    return names


def _write_scores(
    path: Path,
    columns: dict[str, np.ndarray],
    first: str,
    flags: np.ndarray | None,
    labels: np.ndarray | None,
) -> None:
    """`row,score[,outlier],<other scores>[,label]`, one line per row in input order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = [n for n in columns if n != first]
    flag = ["outlier"] if flags is not None else []
    writer.writerow(["row", "score", *flag, *extra] + (["label"] if labels is not None else []))
    for i in range(len(columns[first])):
        row = [i, repr(float(columns[first][i]))] + ([int(flags[i])] if flags is not None else [])
        row += [repr(float(columns[n][i])) for n in extra]
        if labels is not None:
            row.append(int(labels[i]))
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def _print_quality(labels: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """ROC-AUC and average precision per score; non-zero labels are the anomalies."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    anomalous = labels != 0
    if anomalous.all() or not anomalous.any():
        print("labels: a single class, so no ROC-AUC")
        return
    for name, values in columns.items():
        print(
            f"{name}: ROC-AUC {roc_auc_score(anomalous, values):.4f}, average precision "
            f"{average_precision_score(anomalous, values):.4f} ({int(anomalous.sum())} of "
            f"{len(labels)} rows labelled anomalous; labels not used in the fit)"
        )
