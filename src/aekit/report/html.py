"""`report.html` of a run: model, data, training and test metrics, curves and figures, in one
self-contained page whose images are `figures/*.png` beside it. One page builder for every
run kind: images get their figures, quantizers their codebook, sparse codes their density
histogram, models of a network's activations the splice and the feature browser
(`report/sparse.py`), and a group a page over its members, each with its own report."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from aekit.bottlenecks.quantizer import Quantizer
from aekit.data.config import DataConfig
from aekit.data.tensor_data import Splits, TensorData
from aekit.errors import AekitError
from aekit.eval.codebook import codebook_health_of
from aekit.eval.metrics import ACTIVE_UNIT_THRESHOLD
from aekit.io import atomic_write_text, read_json, read_jsonl
from aekit.models.autoencoder import Autoencoder
from aekit.report import figures
from aekit.report.images import is_image_shape
from aekit.train.checkpoint import (
    EVAL,
    METRICS,
    METRICS_FIELDS,
    REPORT,
    STEPS_FIELDS,
    load,
    read_config,
)
from aekit.train.trainer import STEPS

FIGURES = "figures"
LAST_EPOCHS = 10
INTERPOLATION_PAIRS = 4
INTERPOLATION_STEPS = 8
COLLAPSE_ACTIVE_FRACTION = 0.5
"""Warn of posterior collapse when fewer than this fraction of the latent dimensions are
active (see ACTIVE_UNIT_THRESHOLD) ..."""
COLLAPSE_KL_NATS = 0.01
"""... or when some dimension's test KL is below this many nats: it carries almost no
information about x, so the decoder learns to ignore it."""
CODEBOOK_COLLAPSE_USAGE = 0.5
"""Warn of codebook collapse when the codebooks use fewer than this fraction of their codes
(mean over slots) although the data coded enough vectors to use them all."""
SLOTS = ("body", "bottleneck", "likelihood", "corruption", "objective")
CAPTIONS = {
    "curves": "Training curves per epoch.",
    "kl_per_dim": "Test KL per latent dimension (nats).",
    "reconstructions": "Test inputs (rows 1, 3, ...) above their reconstructions E[x|z].",
    "masked_predictions": "Rows: test inputs; the patches the encoder sees (hidden ones grey, "
    "{ratio:.0%} hidden); the predicted image{norm}; the prediction of the hidden patches with "
    "the visible ones pasted back. {losses}",
    "samples": "Decoded samples, E[x|z] for z from the prior p(z) or, for models without one, "
    "from the Gaussian mixture fitted on the training codes; one row per class for "
    "label-conditioned models.",
    "traversal": "Latent traversals: one row per dimension, the most active first (a "
    "categorical variable: one row through its values).",
    "sae_curves": "Training terms every few steps.",
    "density": "Feature density: the fraction of the evaluated rows on which each latent fires "
    "(log scale); dead latents are counted in the title.",
    "latent_pca": "Codes of test examples in two dimensions.",
    "interpolation": "Interpolation between pairs of test inputs A and B (first and last "
    "columns): E[x|z] along the {method} path between their codes, ends included.",
    "prior_posterior": "The aggregate posterior over the prior: posterior means (codes) of "
    "{n} test examples, coloured by class where the data has labels, over {n} grey draws from "
    "{prior}. Where the two clouds differ, samples decoded from the prior look unlike the data.",
    "factor_information": "Mutual information between each ground-truth factor and each "
    "latent (mean codes of {n:,} examples, {bins} bins a latent), as a share of the factor's "
    "entropy: a disentangled code has one bright cell per row and per column.",
    "factor_traversals": "Per factor, the latent that carries most of it (the brightest cell "
    "of its row in the mutual-information map) swept from its 2nd to 98th percentile, the "
    "other latents at the median code.",
    "codebook_usage": "Code use on the {split} split: how many vectors each code coded, "
    "against its rank by frequency (log axes); one panel per slot (residual stage or product "
    "group, at most {panels}); the shaded band holds the dead codes, never used.",
    "posterior_only": "The aggregate posterior: posterior means (codes) of {n} test examples, "
    "coloured by class where the data has labels. The model has no prior and no fitted latent "
    "density, so no prior draws are shown.",
}
"""Captions by figure; some are templates filled in when the figure is drawn."""
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warning { background: #fde2e2; border: 1px solid #c33; padding: 0.6em 1em; }
.note { background: #fff6d6; border: 1px solid #cb3; padding: 0.6em 1em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; image-rendering: pixelated; }
figcaption { font-size: 0.9em; color: #555; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(rows: list[list[Any]], header: list[str] | None = None) -> str:
    """An HTML table of `rows` (cells escaped, numbers right-aligned), with an optional
    header row."""

    def cells(row: list[Any], tag: str) -> str:
        return "".join(
            f"<{tag}{' class=num' if _numeric(v) else ''}>{html.escape(_fmt(v))}</{tag}>"
            for v in row
        )

    head = f"<tr>{cells(header, 'th')}</tr>" if header else ""
    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def box(kind: str, text: str) -> str:
    """A paragraph of escaped `text` styled as `kind` ("note" or "warning" in `CSS`)."""
    return f'<p class="{kind}">{html.escape(text)}</p>'


def _component(d: dict[str, Any]) -> str:
    options = ", ".join(f"{k}={_fmt(v)}" for k, v in d.items() if k != "kind")
    return f"{d['kind']} ({options})" if options else d["kind"]


def _model_section(config: dict[str, Any], model: Autoencoder) -> str:
    m = config["model"]
    rows = [
        ["recipe", m["recipe"]],
        ["input shape", tuple(m["input_shape"])],
        ["latent_dim", m["latent_dim"]],
    ]
    if m.get("output_shape") is not None:
        rows.append(["target shape (paired)", tuple(m["output_shape"])])
    rows += [[slot, _component(m[slot])] for slot in SLOTS if slot in m]
    rows.append(["parameters", f"{sum(p.numel() for p in model.parameters()):,}"])
    return "<h2>Model</h2>" + table(rows)


def _data_section(
    spec: dict[str, Any] | None, splits: Splits | None, used: str | None, notes: list[str]
) -> str:
    rows = []
    if spec is not None:
        rows += [
            ["source", spec.get("source")],
            ["binarize", spec.get("binarize")],
            ["scale", spec.get("scale")],
        ]
    if splits is not None:
        sizes = {name: getattr(splits, name) for name in ("train", "val", "test")}
        rows += [
            ["example shape", splits.train.shape],
            ["split sizes", ", ".join(f"{k} {len(d) if d else 0}" for k, d in sizes.items())],
            ["figures use", used],
        ]
    body = table(rows) if rows else ""
    return "<h2>Data</h2>" + "".join(box("note", n) for n in notes) + body


def _has_kl_term(model: Autoencoder, metrics: dict[str, Any]) -> bool:
    """Whether the model's objective has a KL to the prior, so that collapse can happen."""
    return "kl" in metrics or "kl_per_dim" in metrics or model.bottleneck.has_density


def collapse_warning(metrics: dict[str, Any], latent_dim: int, has_kl: bool) -> str | None:
    """The posterior-collapse warning for the test metrics of a model with a KL term, or None.

    It fires when fewer than COLLAPSE_ACTIVE_FRACTION of the latent dimensions are active
    (`active_units`) or when some dimension's KL (`kl_per_dim`) is below COLLAPSE_KL_NATS;
    those dimensions carry (almost) no information about x, so the decoder ignores them.
    """
    if not has_kl:
        return None
    active = metrics.get("active_units")
    kl = metrics.get("kl_per_dim") or []
    dims = len(kl) or latent_dim
    collapsed = [j for j, v in enumerate(kl) if v < COLLAPSE_KL_NATS]
    few_active = isinstance(active, int) and active < COLLAPSE_ACTIVE_FRACTION * dims
    if not few_active and not collapsed:
        return None
    findings = []
    if isinstance(active, int) and active < dims:
        findings.append(
            f"{dims - active} of the {dims} latent dimensions are inactive (variance of the "
            f"posterior means over the test set at most {ACTIVE_UNIT_THRESHOLD})"
        )
    if collapsed:
        shown = ", ".join(f"z{j}" for j in collapsed[:10]) + (
            ", ..." if len(collapsed) > 10 else ""
        )
        findings.append(
            f"{len(collapsed)} of the {dims} have a test KL below {COLLAPSE_KL_NATS} nats ({shown})"
        )
    return (
        f"Posterior collapse: {'; '.join(findings)}, so the decoder ignores them. "
        "Usual remedies: KL warm-up (--kl-warmup-steps), free bits (--free-bits), or a "
        "smaller latent_dim (--latent-dim)."
    )


def codebook_remedy(model: Autoencoder) -> str:
    """What to try against collapse, for the model's kind of codebook: explicit codebooks can
    be revived or re-parametrised; implicit ones (LFQ, BSQ) are spread by their entropy
    penalty, and FSQ's grid only shrinks."""
    options = model.config.bottleneck.options
    if hasattr(options, "restart"):
        return "try --restart, --rotation, --simvq, --kmeans-init or --ema"
    if hasattr(options, "entropy_weight"):
        return "try a larger --entropy-weight or --diversity"
    return "try fewer codes (--levels)"


def codebook_warning(health: dict[str, Any], remedy: str) -> str | None:
    """The codebook-collapse warning, or None. It fires when the mean usage over slots is
    below CODEBOOK_COLLAPSE_USAGE, unless the data coded fewer vectors than there are codes:
    then full use was impossible and low usage says little about the codebook."""
    if health["codebook_usage"] >= CODEBOOK_COLLAPSE_USAGE:
        return None
    sizes = health["codebook_size"]
    if _vectors_coded(health) < max(sizes):
        return None
    return f"Codebook collapse: {health['dead_codes']} of {sum(sizes)} codes dead; {remedy}."


def _vectors_coded(health: dict[str, Any]) -> float:
    """Vectors coded per slot (infinite when the counts were not kept)."""
    counts = health.get("code_counts")
    return sum(counts[0]) if counts else math.inf


def _codebook_health(
    model: Autoencoder, data: TensorData | None, metrics: dict[str, Any], notes: list[str]
) -> dict[str, Any] | None:
    """The codebook health of a quantizer model on the report's data, else that of the test
    metrics (eval.json); None for continuous bottlenecks or when neither is at hand."""
    if not isinstance(model.bottleneck, Quantizer):
        return None
    if data is not None:
        try:
            return codebook_health_of(model, data, batch_size=figures.BATCH)
        except AekitError as e:
            notes.append(f"The codebook health is not computed on the data: {e}.")
    return metrics if "codebook_usage_per_slot" in metrics else None


def _codebook_section(
    model: Autoencoder, health: dict[str, Any] | None, split: str, folder: Path
) -> str:
    """Usage, perplexity and dead codes per slot and overall (means over slots, dead codes
    summed), the quantisation error, the usage figure and the collapse warning of a quantizer
    model."""
    if health is None:
        return ""
    sizes = health["codebook_size"]
    rows = [
        [
            s,
            size,
            health["codebook_usage_per_slot"][s],
            health["codebook_perplexity_per_slot"][s],
            health["dead_codes_per_slot"][s],
            None,
        ]
        for s, size in enumerate(sizes)
        if len(sizes) > 1
    ]
    rows.append(
        [
            "all" if len(sizes) > 1 else 0,
            sum(sizes),
            health["codebook_usage"],
            health["codebook_perplexity"],
            health["dead_codes"],
            health.get("quantization_error"),
        ]
    )
    header = ["slot", "codes", "usage", "perplexity", "dead codes", "|h − z_q|² per example"]
    parts = [f"<h2>Codebook</h2><p>on the {html.escape(split)} split</p>"]
    warning = codebook_warning(health, codebook_remedy(model))
    if warning:
        parts.append(box("warning", warning))
    vectors = _vectors_coded(health)
    if vectors < max(sizes):
        parts.append(
            box("note", f"Only {vectors} vectors were coded: at most that many codes can be used.")
        )
    parts.append(table(rows, header))
    if health.get("code_counts"):
        figures.codebook_usage(health["code_counts"], folder / "codebook_usage.png")
        caption = CAPTIONS["codebook_usage"].format(split=split, panels=figures.CODEBOOK_PANELS)
        parts.append(figure_html("codebook_usage", caption))
    return "".join(parts)


def _eval_section(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return "<h2>Test metrics</h2>" + box("note", f"no {EVAL} in this run (run aekit eval)")
    metrics = evaluation.get("metrics", {})
    rows = [[k, v] for k, v in metrics.items() if isinstance(v, int | float | str | bool)]
    where = f"split {evaluation.get('split', '?')} of {evaluation.get('data', '?')}"
    parts = [f"<h2>Test metrics</h2><p>{html.escape(where)}</p>", table(rows, ["metric", "value"])]
    probes = metrics.get("probe")
    if isinstance(probes, dict) and probes:
        rows = [[name, r.get("accuracy"), r.get("protocol")] for name, r in probes.items()]
        parts += [
            "<h3>Representation probes (frozen codes)</h3>",
            table(rows, ["probe", f"accuracy on {evaluation.get('split', '?')}", "protocol"]),
        ]
    factors = metrics.get("disentanglement")
    if isinstance(factors, dict):
        from aekit.eval.factors import summary_rows

        parts += [
            f"<h3>Disentanglement against the factors {html.escape(', '.join(factors['factors']))}"
            "</h3>",
            table(summary_rows(factors), ["metric", "value", "variant and sample sizes"]),
        ]
    splice = metrics.get("splice")
    if isinstance(splice, dict):
        parts += [
            "<h3>Downstream: the model spliced into its network</h3>",
            table([[k, v] for k, v in splice.items()]),
        ]
    return "".join(parts)


def _history_section(history: list[dict[str, Any]]) -> str:
    if not history:
        return box("note", f"no epochs recorded in {METRICS}")
    shown = [key for key in ("elbo", "fvu", "l0") if any(key in r.get("val", {}) for r in history)]
    rows = [
        [
            r["epoch"],
            r["train"].get("loss"),
            r.get("val", {}).get("loss"),
            *(r.get("val", {}).get(key) for key in shown),
            r.get("examples_per_second"),
            "*" if r.get("best") else "",
        ]
        for r in history[-LAST_EPOCHS:]
    ]
    header = ["epoch", "train loss", "val loss", *(f"val {key}" for key in shown), "ex/s", "best"]
    seconds = sum(r.get("train_seconds", 0.0) for r in history)
    return f"<h3>Last epochs</h3><p>{len(history)} epochs, {seconds:.1f} s of training</p>" + table(
        rows, header
    )


def figure_html(name: str, caption: str) -> str:
    """A figure showing `FIGURES/<name>.png` (relative to the page) with an escaped caption."""
    return (
        f'<figure><img src="{FIGURES}/{name}.png" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _load_splits(data: dict[str, Any] | None, notes: list[str]) -> Splits | None:
    if data is None:
        notes.append(
            "No data section in config.json (the model was trained on in-memory data): "
            "data figures are missing; pass splits= to build_report to draw them."
        )
        return None
    from aekit.data import load_data

    spec = DataConfig.from_dict(data)
    if spec.binarize:
        # Grey-level inputs show what the model does with an image; a fixed binarisation
        # (used for the test metrics) would show mostly sampling noise at 8x8.
        spec.binarize = False
        notes.append(
            "The model was trained on dynamically binarised images and its test metrics use a "
            "fixed binarisation; the figures show the grey-level test images."
        )
    try:
        return load_data(spec)
    except AekitError as e:
        notes.append(f"Data figures are missing: the data could not be loaded ({e}).")
        return None


def _pick(splits: Splits) -> tuple[str, TensorData] | None:
    for name in ("test", "val", "train"):
        data = getattr(splits, name)
        if data is not None and len(data) > 0:
            return name, data
    return None


def _prior_posterior_caption(model: Autoencoder, prior: torch.Tensor | None, n: int) -> str:
    if prior is None:
        return CAPTIONS["posterior_only"].format(n=n)
    return CAPTIONS["prior_posterior"].format(n=n, prior=_prior_source(model))


def _prior_source(model: Autoencoder) -> str:
    # A model without p(z) that still gives draws has them from a fitted latent density.
    return "the prior p(z)" if model.has_prior else "the fitted latent density"


def _masked_caption(model: Autoencoder, evaluation: dict[str, Any] | None) -> str:
    """The masked-predictions caption: the mask ratio, and the test loss against the two
    references (predicting zero, predicting each hidden patch's mean) when evaluated."""
    metrics = (evaluation or {}).get("metrics", {})
    norm = getattr(model.objective.options, "norm_pix", False)
    losses = ""
    if "loss_predict_zero" in metrics:
        losses = (
            f"Test loss on the hidden patches {metrics['loss']:.4f}, against "
            f"{metrics['loss_predict_zero']:.4f} for predicting zero and "
            f"{metrics['loss_patch_mean']:.4f} for predicting each hidden patch's own mean"
            f"{' (the loss is on normalised patches)' if norm else ''}."
        )
    return CAPTIONS["masked_predictions"].format(
        ratio=model.corruption.options.mask_ratio,
        norm=", each patch scaled back from its normalised prediction by the true patch's mean "
        "and standard deviation"
        if norm
        else "",
        losses=losses,
    )


def _make_figures(
    model: Autoencoder,
    history: list[dict[str, Any]],
    evaluation: dict[str, Any] | None,
    data: TensorData | None,
    folder: Path,
    notes: list[str],
) -> dict[str, str]:
    """Write the figures that apply; their captions by name, in page order."""
    made = {}
    if history:
        figures.curves(history, folder / "curves.png")
        made["curves"] = CAPTIONS["curves"]
    kl = (evaluation or {}).get("metrics", {}).get("kl_per_dim")
    if kl:
        figures.kl_per_dim(kl, folder / "kl_per_dim.png")
        made["kl_per_dim"] = CAPTIONS["kl_per_dim"]
    factors = (evaluation or {}).get("metrics", {}).get("disentanglement")
    nmi = (factors or {}).get("infomec", {}).get("nmi")
    if nmi:
        figures.factor_information(nmi, factors["factors"], folder / "factor_information.png")
        made["factor_information"] = CAPTIONS["factor_information"].format(
            n=factors["infomec"].get("num_samples", factors["examples"]),
            bins=factors["infomec"].get("num_bins", "?"),
        )
    images = is_image_shape(model.input_shape)
    if images and (model.has_prior or model.latent_density is not None):
        figures.samples(model, folder / "samples.png")
        made["samples"] = CAPTIONS["samples"]
    if data is None:
        return made
    x = data.x[: figures.MAX_EXAMPLES]
    if model.conditional:
        if images and data.y is not None:
            y = data.y[: figures.MAX_EXAMPLES]
            figures.reconstructions(model, x, folder / "reconstructions.png", condition=y)
            made["reconstructions"] = CAPTIONS["reconstructions"]
        notes.append(
            "Latent traversals, interpolations and latent scatter plots are not drawn for "
            "conditional models (each would need a choice of condition)."
        )
        return made
    # Spherical paths stay where codes under a standard-normal prior are typical; without
    # such a prior there is no reason to prefer them over straight lines.
    method = "spherical" if model.has_prior else "linear"
    captions = dict(CAPTIONS, interpolation=CAPTIONS["interpolation"].format(method=method))
    drawers: dict[str, Callable[[Path], Path]] = {}
    if images and model.decodes_tokens:  # it completes images; it decodes no code alone
        if hasattr(model.corruption.options, "mask_ratio"):
            captions["masked_predictions"] = _masked_caption(model, evaluation)
            drawers["masked_predictions"] = lambda path: figures.masked_predictions(model, x, path)
    elif images:
        drawers["reconstructions"] = lambda path: figures.reconstructions(model, x, path)
        drawers["traversal"] = lambda path: figures.traversal(model, x, path)
        if nmi:
            drawers["factor_traversals"] = lambda path: figures.factor_traversals(
                model, x, nmi, factors["factors"], path
            )
        if len(x) >= 2:  # a pair of examples to interpolate between
            drawers["interpolation"] = lambda path: figures.interpolation(
                model, x, path, INTERPOLATION_PAIRS, INTERPOLATION_STEPS, method
            )
    drawers["latent_pca"] = lambda path: figures.latent_pca(model, x, data.y, path)
    if model.latent_dim == 2:
        prior = figures.prior_latents(model, len(x))
        captions["prior_posterior"] = _prior_posterior_caption(model, prior, len(x))
        drawers["prior_posterior"] = lambda path: figures.prior_vs_posterior(
            model, x, data.y, prior, path, prior_label=_prior_source(model)
        )
    for name, draw in drawers.items():
        # One figure failing (e.g. a degenerate test split) should not take the others along.
        try:
            draw(folder / f"{name}.png")
        except AekitError as e:
            notes.append(f"Some data figures are missing: {e}.")
            continue
        made[name] = captions[name]
    return made


def _page(title: str, parts: list[str]) -> str:
    return "\n".join(
        [
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
            *parts,
            "</body></html>\n",
        ]
    )


def _sparse_figures(
    run_dir: Path, metrics: dict[str, Any], steps: list[dict[str, Any]]
) -> dict[str, str]:
    """The step curves (any run that logged steps) and a sparse code's density histogram."""
    from aekit.report import sparse

    made = {}
    folder = run_dir / FIGURES
    if sparse.step_curves(steps, folder / "sae_curves.png"):
        made["sae_curves"] = CAPTIONS["sae_curves"]
    if "log10_density_histogram" in metrics:
        sparse.density_histogram(
            metrics["log10_density_histogram"], metrics.get("n", 0), folder / "density.png"
        )
        made["density"] = CAPTIONS["density"]
    return made


def build_report(
    run_dir: str | Path,
    model: Any = None,
    splits: Splits | None = None,
    *,
    opened: Any = None,
    source_model: Any = None,
) -> Path:
    """Write `run_dir/report.html` and its figures in `run_dir/figures/`; return the page's
    path. The model is loaded from the run unless given. Runs on a data set rebuild it from
    their config unless `splits` is given, and the figures use its test split (else val,
    else train). Runs on activations draw the feature browser when the opened activation
    source (`opened`) is given, with token strings when the network is (`source_model`)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model = load(run_dir) if model is None else model
    if config["kind"] == "group":
        return _group_report(run_dir, config, model, opened, source_model)
    history = read_jsonl(run_dir / METRICS, METRICS_FIELDS)
    steps = read_jsonl(run_dir / STEPS, STEPS_FIELDS) if (run_dir / STEPS).is_file() else []
    notes: list[str] = []
    evaluation = read_json(run_dir / EVAL, "eval file") if (run_dir / EVAL).is_file() else None
    metrics = (evaluation or {}).get("metrics", {})
    (run_dir / FIGURES).mkdir(exist_ok=True)
    activations = config.get("activations")
    if activations is not None:
        picked = None
        made = _make_figures(model, history, evaluation, None, run_dir / FIGURES, notes)
        from aekit.report.sparse import BROWSER, feature_browser

        browser = feature_browser(run_dir, model, opened, source_model, notes)
        data_part = "<h2>Activations</h2>" + "".join(box("note", n) for n in notes)
        data_part += table([[k, v] for k, v in activations.items()])
        if browser is not None:
            data_part += f'<p><a href="{BROWSER}/index.html">Feature browser</a></p>'
    else:
        if splits is None:
            splits = _load_splits(config.get("data"), notes)
        picked = _pick(splits) if splits is not None else None
        made = _make_figures(
            model, history, evaluation, picked[1] if picked else None, run_dir / FIGURES, notes
        )
        spec = config.get("data") or (splits.spec.to_dict() if splits is not None else None)
        data_part = _data_section(spec, splits, picked[0] if picked else None, notes)
    made.update(_sparse_figures(run_dir, metrics, steps))
    health = _codebook_health(model, picked[1] if picked else None, metrics, notes)
    health_split = picked[0] if picked else (evaluation or {}).get("split", "test")
    codebook = _codebook_section(model, health, health_split, run_dir / FIGURES)
    collapse = collapse_warning(metrics, model.latent_dim, _has_kl_term(model, metrics))
    warnings = [collapse] if collapse else []

    def figure(name: str) -> str:
        return figure_html(name, made[name]) if name in made else ""

    parts = [
        *(box("warning", w) for w in warnings),
        _model_section(config, model),
        data_part,
        "<h2>Training configuration</h2>",
        table([[k, v] for k, v in (config.get("train") or {}).items()]),
        _eval_section(evaluation),
        figure("factor_information"),
        figure("kl_per_dim"),
        figure("density"),
        "<h2>Training</h2>",
        _history_section(history),
        figure("curves"),
        figure("sae_curves"),
        codebook,
    ]
    images = [
        "reconstructions", "masked_predictions", "samples", "traversal", "factor_traversals",
        "interpolation", "latent_pca",
        "prior_posterior",
    ]  # fmt: skip
    if any(name in made for name in images):
        parts += ["<h2>Figures</h2>", *(figure(name) for name in images)]
    title = f"{config['model']['recipe']} — {run_dir.resolve().name}"
    path = run_dir / REPORT
    atomic_write_text(path, _page(title, parts))
    return path


def _group_report(
    run_dir: Path, config: dict[str, Any], group: Any, opened: Any, source_model: Any
) -> Path:
    """The group's page: a row per member (its site and held-out figures, a link to its own
    report, built here), the training terms of all members per step."""
    import dataclasses

    from aekit.models.group import MEMBERS

    evaluation = read_json(run_dir / EVAL, "eval file") if (run_dir / EVAL).is_file() else None
    metrics = (evaluation or {}).get("metrics", {})
    history = read_jsonl(run_dir / METRICS, METRICS_FIELDS)
    last = history[-1].get("val", {}) if history else {}
    steps = read_jsonl(run_dir / STEPS, STEPS_FIELDS) if (run_dir / STEPS).is_file() else []
    (run_dir / FIGURES).mkdir(exist_ok=True)
    rows, links, notes = [], [], []
    shown = metrics if metrics else last
    for m in group.members:
        member_dir = run_dir / MEMBERS / m.name
        if (member_dir / "config.json").is_file():
            view = None
            if opened is not None:
                view = dataclasses.replace(opened, sites=m.sites)
            report = build_report(member_dir, group[m.name], opened=view, source_model=source_model)
            links.append(f'<a href="{MEMBERS}/{m.name}/{report.name}">{html.escape(m.name)}</a>')
        else:
            notes.append(f"{member_dir} is missing: the group was not trained to the end")
        keys = ("fvu", "l0", "dead_fraction")
        rows.append([m.name, m.site, m.target_site, *(shown.get(f"{m.name}/{k}") for k in keys)])
    made = _sparse_figures(run_dir, {}, steps)
    where = f"held-out metrics from {EVAL}" if metrics else "the last validation (no eval.json)"
    parts = [
        *(box("note", n) for n in notes),
        "<h2>Members</h2>",
        f"<p>{html.escape(where)}; reports: {', '.join(links) or 'none'}</p>",
        table(rows, ["member", "site", "target site", "fvu", "l0", "dead fraction"]),
        "<h2>Activations</h2>",
        table([[k, v] for k, v in (config.get("activations") or {}).items()]),
        "<h2>Training configuration</h2>",
        table([[k, v] for k, v in (config.get("train") or {}).items()]),
        "<h2>Training</h2>",
        _history_section(history),
        figure_html("sae_curves", made["sae_curves"]) if "sae_curves" in made else "",
    ]
    title = f"group of {len(group.members)} — {run_dir.resolve().name}"
    path = run_dir / REPORT
    atomic_write_text(path, _page(title, parts))
    return path
