"""The report's sections for sparse codes and for models of a network's activations: the
training terms per step, the feature-density histogram, the effect of splicing the model into
its network, and the feature browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aekit.report.figures import figure_row

STEP_CURVES = ("loss", "fvu", "l0", "auxk", "l1", "l0_penalty")
"""The terms drawn against the step (those recorded in steps.jsonl)."""
BROWSER_ROWS = 1_000_000
"""The browser's top contexts come from the store's first this-many rows (one pass)."""
BROWSER = "features"
"""The feature browser's folder in the run (index.html and features.json)."""


def step_curves(steps: list[dict[str, Any]], path: Path) -> Path | None:
    """The training terms against the step, one panel each, one line per member of a group
    (terms NAME/TERM); None when nothing was recorded."""

    def series(key: str) -> dict[str, list[tuple[int, float]]]:
        lines: dict[str, list[tuple[int, float]]] = {}
        for record in steps:
            for name, value in record.items():
                member, _, term = name.rpartition("/")
                if term == key and (member or name == key):
                    lines.setdefault(member, []).append((record["step"], value))
        return lines

    panels = [(key, series(key)) for key in STEP_CURVES]
    panels = [(key, lines) for key, lines in panels if lines]
    if not panels:
        return None
    with figure_row(path, len(panels), (3.6, 3.0)) as axes:
        for ax, (key, lines) in zip(axes, panels, strict=True):
            for member, points in lines.items():
                ax.plot(*zip(*points, strict=True), label=member or None)
            ax.set(title=key, xlabel="step")
            if key in ("loss", "fvu"):
                ax.set_yscale("log")
            if len(lines) > 1:
                ax.legend()
    return path


def density_histogram(histogram: dict[str, Any], rows: int, path: Path) -> Path:
    """The log10-density histogram that `sae_metrics` counted, dead latents in the title."""
    edges, counts = histogram["edges"], histogram["counts"]
    with figure_row(path, size=(5.0, 3.2)) as (ax,):
        ax.stairs(counts, edges, fill=True)
        ax.set(
            xlabel="log10 firing frequency",
            ylabel="latents",
            title=f"{histogram['dead']:,} latents never fired in {rows:,} rows",
        )
    return path


def feature_browser(
    run: Path, model: Any, opened: Any, source_model: Any, notes: list[str]
) -> Path | None:
    """RUN/features/index.html from the activation store after training (kept from an
    earlier build otherwise), or None with a note saying why there is none."""
    from aekit.data.activations.models import SourceModel
    from aekit.report.features import build_feature_browser

    if model is not None and not model.bottleneck.is_sparse:
        return None  # top contexts per latent are for sparse codes
    if model is None or opened is None or opened.store is None:
        if (run / BROWSER / "index.html").is_file():
            return run / BROWSER / "index.html"
        notes.append("No feature browser: it is built from the activation store after training.")
        return None
    known = isinstance(source_model, SourceModel)
    linear = hasattr(model.decoder, "output_directions")  # the logit lens reads W_dec
    if not known:
        notes.append(f"Tokens are shown as ids: {source_model or 'no network was loaded'}")
    return build_feature_browser(
        run / BROWSER,
        model,
        opened.store,
        opened.sites[0],
        tokenizer=source_model.tokenizer if known else None,
        unembedding=source_model.unembedding() if known and linear and not model.paired else None,
        max_rows=BROWSER_ROWS,
    )
