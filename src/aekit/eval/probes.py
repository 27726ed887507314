"""How good a representation is: classifiers fitted on a model's frozen codes of the training
split and scored on held-out codes (`aekit eval RUN --probe linear,knn`).

    linear  logistic regression (scikit-learn's lbfgs, C = 1) on codes standardised with the
            training codes' mean and standard deviation
    knn     k-nearest-neighbour majority votes on the raw codes: k = 20 under the cosine
            distance (DINO's k, Caron et al. 2021, without its temperature weighting) and
            k = 5 under the Euclidean one
    finetune  not frozen: a copy of the encoder with a linear head on its code, trained
            end to end with cross-entropy on the training split for a few epochs (the
            protocol MAE is judged by, He et al. 2022, section 4, without its augmentations,
            layer-wise decay and label smoothing); the run's model is left as it was

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
PROBES = ("linear", "knn", "finetune")
FROZEN_PROBES = ("linear", "knn")
FINETUNE_LR = 1e-3
"""Peak AdamW learning rate of the fine-tuning probe, after a linear warm-up over the first
FINETUNE_WARMUP of the steps and before cosine decay to 0. MAE fine-tunes ViT-B at a base lr
of 5e-4 scaled by batch / 256 (He et al. 2022, Table 9); 1e-3 at batch 128 is larger, for
small models fine-tuned briefly. One value for every model: the probe compares
representations, not tuning."""
FINETUNE_WEIGHT_DECAY = 0.05
"""AdamW weight decay of the fine-tuning probe: MAE's fine-tuning value (He et al. 2022,
Table 9)."""
FINETUNE_WARMUP = 0.05
"""The warm-up's share of the fine-tuning steps: MAE warms up for 5 of its 100 fine-tuning
epochs (He et al. 2022, Table 9)."""
FINETUNE_BATCH = 128
FINETUNE_EPOCHS = 5


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
    """Each frozen probe's accuracy on the test codes, fitted on the training codes (N, D)."""
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


def finetune(
    model,
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    epochs: int = FINETUNE_EPOCHS,
    seed: int = 0,
    lr: float = FINETUNE_LR,
    batch_size: int = FINETUNE_BATCH,
) -> ProbeResult:
    """The fine-tuning probe: a copy of `model` whose `encode` feeds a linear head, trained
    with cross-entropy on (train_x, train_y) and scored on (test_x, test_y), tensors. The
    model itself is not touched. An untrained model of the same config gives the
    from-scratch baseline with the same budget."""
    import copy
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    from aekit.schedules import scheduled_lr

    if epochs < 1:
        raise AekitError(f"the fine-tuning probe needs at least one epoch (got {epochs})")
    classes = int(train_y.max()) + 1
    if len(torch.unique(train_y)) < 2:
        raise AekitError("a probe needs at least two classes in the training labels")
    device, dtype = model.device, model.dtype
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        tuned = copy.deepcopy(model).train()
        head = nn.Linear(model.latent_dim, classes).to(device, dtype)
    encoder = (*tuned.encoder.parameters(), *tuned.bottleneck.parameters())
    params = [p for p in encoder if p.requires_grad] + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=FINETUNE_WEIGHT_DECAY)
    n = len(train_x)
    per_epoch = math.ceil(n / batch_size)
    total = epochs * per_epoch
    warmup = max(1, math.ceil(FINETUNE_WARMUP * total))
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        for rows in torch.randperm(n, generator=generator).split(batch_size):
            for group in optimiser.param_groups:
                group["lr"] = scheduled_lr(step, total, lr, warmup)
            x = train_x[rows].to(device, dtype)
            loss = F.cross_entropy(head(tuned.encode(x)), train_y[rows].to(device).long())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
    tuned.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_x), 1000):
            x = test_x[start : start + 1000].to(device, dtype)
            predicted = head(tuned.encode(x)).argmax(1).cpu()
            correct += int((predicted == test_y[start : start + 1000].long()).sum())
    return ProbeResult(
        correct / len(test_x),
        f"encoder + linear head fine-tuned end to end (cross-entropy, AdamW lr {lr:g}, "
        f"{FINETUNE_WARMUP:.0%} of the steps warm-up then cosine, weight decay "
        f"{FINETUNE_WEIGHT_DECAY:g}, batch {batch_size}, {epochs} epochs, seed {seed}, no "
        f"augmentation) on {n:,} labelled "
        f"training examples; scored on {len(test_x):,} held-out examples",
    )
