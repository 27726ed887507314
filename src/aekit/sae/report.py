"""`report.html` of an SAE run: configuration, held-out metrics, the downstream effect,
training curves per step, the feature-density histogram, and the feature browser."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

from aekit.io import atomic_write_text, read_json, read_jsonl
from aekit.report.figures import figure_row
from aekit.report.html import CSS, FIGURES, _box, _figure_html, _table
from aekit.train import checkpoint as ckpt
from aekit.train.trainer import STEPS

log = logging.getLogger("aekit")

BROWSER_ROWS = 1_000_000
"""The browser's top contexts come from the store's first this-many rows (one pass)."""
BROWSER = "features"
"""The feature browser's folder in the run (index.html and features.json)."""
CURVES = ("loss", "fvu", "l0", "auxk", "l1", "l0_penalty")


def step_curves(steps: list[dict[str, Any]], path: Path) -> Path | None:
    """The training terms against the step, one panel each (None: nothing recorded)."""
    panels = [key for key in CURVES if any(key in r for r in steps)]
    if not panels:
        return None
    with figure_row(path, len(panels), (3.6, 3.0)) as axes:
        for ax, key in zip(axes, panels, strict=True):
            points = [(r["step"], r[key]) for r in steps if key in r]
            ax.plot(*zip(*points, strict=True))
            ax.set(title=key, xlabel="step")
            if key in ("loss", "fvu"):
                ax.set_yscale("log")
    return path


def density_histogram(histogram: dict[str, Any], tokens: int, path: Path) -> Path:
    """The log10-density histogram that `sae_metrics` counted, dead latents in the title."""
    edges, counts = histogram["edges"], histogram["counts"]
    with figure_row(path, size=(5.0, 3.2)) as (ax,):
        ax.stairs(counts, edges, fill=True)
        ax.set(
            xlabel="log10 firing frequency",
            ylabel="latents",
            title=f"{histogram['dead']:,} latents never fired in {tokens:,} tokens",
        )
    return path


def build_sae_report(
    run: str | Path, *, model: Any = None, opened: Any = None, source_model: Any = None
) -> Path:
    """Write RUN/report.html (and RUN/features.html, the feature browser, when the
    activations are at hand)."""
    run = Path(run)
    config = ckpt.read_config(run)
    evaluation = read_json(run / ckpt.EVAL, "eval file") if (run / ckpt.EVAL).is_file() else None
    metrics = (evaluation or {}).get("metrics", {})
    steps = read_jsonl(run / STEPS) if (run / STEPS).is_file() else []
    history = read_jsonl(run / ckpt.METRICS) if (run / ckpt.METRICS).is_file() else []
    figures: list[str] = []
    (run / FIGURES).mkdir(exist_ok=True)
    if step_curves(steps, run / FIGURES / "sae_curves.png"):
        figures.append(_figure_html("sae_curves", "Training terms every few steps."))
    if "log10_density_histogram" in metrics:
        density_histogram(
            metrics["log10_density_histogram"], metrics.get("n", 0), run / FIGURES / "density.png"
        )
        figures.append(
            _figure_html(
                "density",
                "Feature density: the fraction of held-out tokens on which each latent fires "
                "(log scale); dead latents are counted in the title.",
            )
        )
    notes = []
    browser = _browser(run, model, opened, source_model, notes)
    title = f"{config['model']['recipe']} — {run.resolve().name}"
    splice = metrics.get("splice", {})
    scalar = [[k, v] for k, v in metrics.items() if isinstance(v, int | float | str)]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        *(_box("note", n) for n in notes),
        f'<p><a href="{BROWSER}/index.html">Feature browser</a></p>' if browser else "",
        "<h2>Model</h2>",
        _table([[k, v] for k, v in config["model"].items()]),
        "<h2>Activations</h2>",
        _table([[k, v] for k, v in config.get("activation_source", {}).items()]),
        "<h2>Training configuration</h2>",
        _table([[k, v] for k, v in config.get("train", {}).items()]),
        "<h2>Held-out metrics</h2>",
        _table(scalar, ["metric", "value"]) if scalar else _box("note", "no eval.json"),
        "<h3>Downstream: the SAE spliced into the model</h3>" if splice else "",
        _table([[k, v] for k, v in splice.items()]) if splice else "",
        "<h2>Training</h2>",
        _table(
            [
                [
                    r["epoch"],
                    r["train"].get("loss"),
                    r.get("val", {}).get("fvu"),
                    r.get("examples_per_second"),
                ]
                for r in history
            ],
            ["epoch", "train loss", "val fvu", "activations/s"],
        ),
        *figures,
        "</body></html>\n",
    ]
    path = run / ckpt.REPORT
    atomic_write_text(path, "\n".join(parts))
    return path


def _browser(run: Path, model: Any, opened: Any, source: Any, notes: list[str]) -> Path | None:
    from aekit.sae.browser import build_feature_browser
    from aekit.sae.evaluate import SourceModel

    if model is None or opened is None or opened.store is None:
        if (run / BROWSER / "index.html").is_file():
            return run / BROWSER / "index.html"
        notes.append("No feature browser: it is built from the activation store after training.")
        return None
    known = isinstance(source, SourceModel)
    if not known:
        notes.append(f"Tokens are shown as ids: {source}")
    return build_feature_browser(
        run / BROWSER,
        model,
        opened.store,
        opened.sites[0],
        tokenizer=source.tokenizer if known else None,
        unembedding=source.unembedding() if known and not model.config.transcoder else None,
        max_rows=BROWSER_ROWS,
    )
