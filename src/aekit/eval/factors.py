"""Disentanglement of a trained model (`aekit eval RUN --disentanglement`): its codes of every
example of a data set with ground-truth factors (dSprites' shape, scale, orientation, x, y),
scored by the metrics of `aekit.eval.disentanglement`.

Every metric is computed on the mean codes (the posterior mean; a deterministic or quantized
code as it is), disentanglement_lib's choice. MIG is also given in the variants that public
implementations silently differ by, side by side (`mig_variants`): mean or sampled codes
(one draw z ~ q(z|x) per example), and all factors or all but shape (the beta-TCVAE authors'
code leaves shape out). The metrics sample from the data without replacement where they fit
on one part and score on another (MIG, DCI, SAP, InfoMEC), so the data must hold their
sample sizes; BetaVAE and FactorVAE draw batches with one factor fixed, with replacement.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aekit.data.tensor_data import TensorData
from aekit.errors import AekitError
from aekit.eval import disentanglement as metrics
from aekit.eval.metrics import encode_all

MIG_CODES = ("mean", "sampled")
TRAIN_POINTS = 10_000
TEST_POINTS = 5_000
"""disentanglement_lib's sample sizes (num_train, num_test / num_eval) for every metric."""


def sample_sizes(examples: int, train: int | None = None) -> tuple[int, int]:
    """(train, test) points per metric: disentanglement_lib's 10,000 and 5,000 where the data
    holds 15,000 examples; on a smaller data set (a dSprites sub-grid) two thirds and one
    third of it. `train` sets both (test = train / 2)."""
    if train is not None:
        if train < 2:
            raise AekitError(f"the metrics' sample size must be at least 2 (got {train})")
        return train, max(1, train // 2)
    if examples >= TRAIN_POINTS + TEST_POINTS:
        return TRAIN_POINTS, TEST_POINTS
    return 2 * examples // 3, examples // 3


def factor_data(data: TensorData) -> tuple[np.ndarray, tuple[str, ...]]:
    """The factor indices (N, K) and names of a data set, or a one-line error."""
    if getattr(data, "factors", None) is None:
        raise AekitError(
            f"{data.name} has no ground-truth factors: disentanglement metrics need data "
            "generated from known factors (--data dsprites)"
        )
    factors = data.factors.cpu().numpy()
    names = data.factor_names or tuple(f"factor{k}" for k in range(factors.shape[1]))
    return factors, tuple(names)


@torch.no_grad()
def sampled_codes(model: Any, data: TensorData, *, seed: int, batch_size: int) -> np.ndarray:
    """One draw z ~ q(z|x) per example (N, latent_dim), under a fixed seed (a relaxed
    categorical draws as it does in evaluation); the code itself for bottlenecks that draw
    nothing (deterministic and quantized codes)."""
    if not model.bottleneck.has_kl:
        return encode_all(model, data, batch_size).numpy()
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            chunks = [
                model.bottleneck(model.features(batch.x.to(model.device), None)).z.cpu()
                for batch in data.batches(batch_size)
            ]
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()


def evaluate_disentanglement(
    model: Any,
    data: TensorData,
    *,
    seed: int = 0,
    train: int | None = None,
    mig_codes: str = "mean",
    mig_factors: list[str] | None = None,
    mig_bins: int = 20,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Every metric of the model's codes of `data` (which must carry factors), with the
    variant and sample sizes of each; `mig_*` choose the variant of the headline MIG."""
    if mig_codes not in MIG_CODES:
        raise AekitError(f"--mig-codes must be one of {', '.join(MIG_CODES)} (got {mig_codes!r})")
    if model.conditional:
        raise AekitError("disentanglement of a conditional model: its codes depend on the label")
    factors, names = factor_data(data)
    n_train, n_test = sample_sizes(len(data), train)
    used = list(range(len(names)))
    if mig_factors is not None:
        unknown = [f for f in mig_factors if f not in names]
        if unknown or not mig_factors:
            raise AekitError(
                f"--mig-factors names factors of {', '.join(names)} (got "
                f"{', '.join(mig_factors) or 'none'})"
            )
        used = [names.index(f) for f in mig_factors]
    codes = {"mean": encode_all(model, data, batch_size).double().numpy()}
    codes["sampled"] = sampled_codes(model, data, seed=seed, batch_size=batch_size)
    codes["sampled"] = codes["sampled"].astype(np.float64)
    rng = np.random.default_rng(seed)
    results = metrics.all_metrics(
        codes["mean"], factors, rng, num_train=n_train, num_test=n_test, num_bins=mig_bins
    )
    headline = metrics.mig(
        codes[mig_codes], factors, np.random.default_rng(seed), num_train=n_train,
        num_bins=mig_bins, factors_used=used,
    )  # fmt: skip
    results["mig"] = {**headline, "codes": mig_codes, "factors": [names[k] for k in used]}
    variants = []
    without_shape = [k for k, name in enumerate(names) if name != "shape"]
    factor_sets = {"all": list(range(len(names)))}
    if len(without_shape) < len(names):
        factor_sets["without shape"] = without_shape
    for kind in MIG_CODES:
        for label, subset in factor_sets.items():
            value = metrics.mig(
                codes[kind], factors, np.random.default_rng(seed), num_train=n_train,
                num_bins=mig_bins, factors_used=subset,
            )["mig"]  # fmt: skip
            variants.append({"codes": kind, "factors": label, "bins": mig_bins, "mig": value})
    return {
        "examples": len(data),
        "factors": list(names),
        "factor_sizes": [int(v) for v in factors.max(0) + 1],
        "codes": "mean",
        "stochastic": bool(model.bottleneck.has_kl),
        **results,
        "mig_variants": variants,
    }


def summary_rows(result: dict[str, Any]) -> list[list[Any]]:
    """[metric, value, variant and sample sizes] for every score of `evaluate_disentanglement`
    (the lines `aekit eval` prints and the report's table)."""
    names = ("beta_vae", "factor_vae", "mig", "dci", "sap", "infomec")
    b, f, m, d, s, i = (result[k] for k in names)
    codes = f"{result['codes']} codes of {result['examples']:,} examples"
    held_out = f"{d['num_train']:,} fitted / {d['num_test']:,} scored, disjoint"
    mig_factors = "all factors" if len(m["factors"]) == len(result["factors"]) else (
        "factors " + ", ".join(m["factors"])
    )  # fmt: skip
    rows = [
        ["beta_vae", b["score"], f"eval accuracy of a logistic regression on |z1 - z2| "
         f"averaged over batches of {b['batch_size']} pairs sharing a factor; "
         f"{b['num_train']:,} / {b['num_eval']:,} points; {codes}"],
        ["factor_vae", f["score"], f"eval accuracy of majority votes (argmin of normalised "
         f"variance) over batches of {f['batch_size']} with a factor fixed; "
         f"{f['num_train']:,} / {f['num_eval']:,} votes; {f.get('num_active_dims', 0)} "
         f"active dims (std >= {f.get('prune_threshold', 0.05)}); {codes}"],
        ["mig", m["mig"], f"{m['codes']} codes, {mig_factors}, {m['num_bins']} bins a latent, "
         f"{m['num_train']:,} points"],
        ["dci_disentanglement", d["disentanglement"], f"gradient-boosted trees' importances; "
         f"{held_out}; {codes}"],
        ["dci_completeness", d["completeness"], "the same importances"],
        ["dci_informativeness", d["informativeness_test"], "the trees' mean test accuracy"],
        ["sap", s["sap"], f"linear SVMs (C=0.01) on each latent alone, "
         f"{'R^2' if s['continuous_factors'] else 'accuracy'}; {held_out}; {codes}"],
        ["infom", i["infom"], f"{'discrete' if i['discrete_latents'] else 'binned'} latents "
         f"({i['num_bins']} bins), {len(i['active_latents'])} active; "
         f"{i['num_samples']:,} points; {codes}"],
        ["infoc", i["infoc"], "the same normalised mutual information"],
        ["infoe", i["infoe"], "unpenalised multinomial logistic regression, training log loss"],
    ]  # fmt: skip
    for v in result["mig_variants"]:
        rows.append([f"mig[{v['codes']}, {v['factors']}]", v["mig"], f"{v['bins']} bins a latent"])
    return rows


def summary_lines(result: dict[str, Any]) -> list[str]:
    rows = summary_rows(result)
    width = max(len(r[0]) for r in rows)
    head = f"disentanglement against {', '.join(result['factors'])}:"
    return [head] + [f"{name:>{width}}  {value:.4f}  ({text})" for name, value, text in rows]
