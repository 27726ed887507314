"""`report.html` of a run: model, data, training and test metrics, curves and figures, in one
self-contained page whose images are `figures/*.png` beside it."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from aekit.data.config import DataConfig
from aekit.data.tensor_data import Splits, TensorData
from aekit.errors import AekitError
from aekit.eval.metrics import ACTIVE_UNIT_THRESHOLD
from aekit.io import atomic_write_text, read_json, read_jsonl
from aekit.models.autoencoder import Autoencoder
from aekit.report import figures
from aekit.report.images import is_image_shape
from aekit.train.checkpoint import EVAL, METRICS, REPORT, load, read_config

FIGURES = "figures"
LAST_EPOCHS = 10
SLOTS = ("bottleneck", "likelihood", "corruption", "objective")
CAPTIONS = {
    "curves": "Training curves per epoch.",
    "kl_per_dim": "Test KL per latent dimension (nats).",
    "reconstructions": "Test inputs (rows 1, 3, ...) above their reconstructions E[x|z].",
    "samples": "Decoded samples from the prior, E[x|z] for z ~ p(z).",
    "traversal": "Latent traversals: one row per dimension, the most active first.",
    "latent_pca": "Codes of test examples in two dimensions.",
}
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


def _table(rows: list[list[Any]], header: list[str] | None = None) -> str:
    def cells(row: list[Any], tag: str) -> str:
        return "".join(
            f"<{tag}{' class=num' if _numeric(v) else ''}>{html.escape(_fmt(v))}</{tag}>"
            for v in row
        )

    head = f"<tr>{cells(header, 'th')}</tr>" if header else ""
    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _box(kind: str, text: str) -> str:
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
        ["networks", ", ".join(f"{k}={_fmt(v)}" for k, v in m["net"].items())],
    ]
    rows += [[slot, _component(m[slot])] for slot in SLOTS if slot in m]
    rows.append(["parameters", f"{sum(p.numel() for p in model.parameters()):,}"])
    return "<h2>Model</h2>" + _table(rows)


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
    body = _table(rows) if rows else ""
    return "<h2>Data</h2>" + "".join(_box("note", n) for n in notes) + body


def _eval_section(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return "<h2>Test metrics</h2>" + _box("note", f"no {EVAL} in this run (run aekit eval)")
    metrics = evaluation.get("metrics", {})
    rows = [[k, v] for k, v in metrics.items() if isinstance(v, int | float | str | bool)]
    where = f"split {evaluation.get('split', '?')} of {evaluation.get('data', '?')}"
    return f"<h2>Test metrics</h2><p>{html.escape(where)}</p>" + _table(rows, ["metric", "value"])


def _history_section(history: list[dict[str, Any]]) -> str:
    if not history:
        return _box("note", f"no epochs recorded in {METRICS}")
    rows = [
        [
            r["epoch"],
            r["train"].get("loss"),
            r.get("val", {}).get("loss"),
            r.get("val", {}).get("elbo"),
            r.get("examples_per_second"),
            "*" if r.get("best") else "",
        ]
        for r in history[-LAST_EPOCHS:]
    ]
    header = ["epoch", "train loss", "val loss", "val elbo", "ex/s", "best"]
    seconds = sum(r.get("train_seconds", 0.0) for r in history)
    return (
        f"<h3>Last epochs</h3><p>{len(history)} epochs, {seconds:.1f} s of training</p>"
        + _table(rows, header)
    )


def _figure_html(name: str) -> str:
    return (
        f'<figure><img src="{FIGURES}/{name}.png" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>"
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


def _make_figures(
    model: Autoencoder,
    history: list[dict[str, Any]],
    evaluation: dict[str, Any] | None,
    data: TensorData | None,
    folder: Path,
    notes: list[str],
) -> list[str]:
    """Write the figures that apply; their names, in page order."""
    made = []
    if history:
        figures.curves(history, folder / "curves.png")
        made.append("curves")
    kl = (evaluation or {}).get("metrics", {}).get("kl_per_dim")
    if kl:
        figures.kl_per_dim(kl, folder / "kl_per_dim.png")
        made.append("kl_per_dim")
    images = is_image_shape(model.input_shape)
    if images and model.has_prior:
        figures.samples(model, folder / "samples.png")
        made.append("samples")
    if data is None:
        return made
    x = data.x[: figures.MAX_EXAMPLES]
    try:
        if images:
            figures.reconstructions(model, x, folder / "reconstructions.png")
            figures.traversal(model, x, folder / "traversal.png")
            made += ["reconstructions", "traversal"]
        figures.latent_pca(model, x, data.y, folder / "latent_pca.png")
        made.append("latent_pca")
    except AekitError as e:
        notes.append(f"Some data figures are missing: {e}.")
    return made


def build_report(
    run_dir: str | Path, model: Autoencoder | None = None, splits: Splits | None = None
) -> Path:
    """Write `run_dir/report.html` and its figures in `run_dir/figures/`; return the page's
    path. The model is loaded from the run unless given; the data is rebuilt from the run's
    config unless `splits` is given, and figures use its test split (else val, else train)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model = load(run_dir) if model is None else model
    history = read_jsonl(run_dir / METRICS)
    notes: list[str] = []
    evaluation = read_json(run_dir / EVAL, "eval file") if (run_dir / EVAL).is_file() else None
    if splits is None:
        splits = _load_splits(config.get("data"), notes)
    picked = _pick(splits) if splits is not None else None
    made = _make_figures(
        model, history, evaluation, picked[1] if picked else None, run_dir / FIGURES, notes
    )

    warnings = []
    metrics = (evaluation or {}).get("metrics", {})
    if model.has_prior and metrics.get("active_units") == 0:
        warnings.append(
            f"Posterior collapse: no latent dimension is active (variance of the posterior "
            f"means over the test set is at most {ACTIVE_UNIT_THRESHOLD} in all "
            f"{model.latent_dim} dimensions), so the decoder ignores z."
        )
    spec = config.get("data") or (splits.spec.to_dict() if splits is not None else None)
    title = f"{config['model']['recipe']} — {run_dir.resolve().name}"

    def figure(name: str) -> str:
        return _figure_html(name) if name in made else ""

    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        *(_box("warning", w) for w in warnings),
        _model_section(config, model),
        _data_section(spec, splits, picked[0] if picked else None, notes),
        "<h2>Training configuration</h2>",
        _table([[k, v] for k, v in (config.get("train") or {}).items()]),
        _eval_section(evaluation),
        figure("kl_per_dim"),
        "<h2>Training</h2>",
        _history_section(history),
        figure("curves"),
        "<h2>Figures</h2>",
        *(figure(name) for name in ("reconstructions", "samples", "traversal", "latent_pca")),
        "</body></html>\n",
    ]
    path = run_dir / REPORT
    atomic_write_text(path, "\n".join(parts))
    return path
