"""From `results.jsonl` to a leaderboard: mean ± standard deviation over seeds per (data,
model, budget), the papers' claims checked on those means, figures, Markdown and HTML."""

from __future__ import annotations

import html
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.ticker import NullFormatter, ScalarFormatter

from aekit.bench.suite import Expectation, Suite
from aekit.io import atomic_write_text
from aekit.report import html as page
from aekit.report.figures import figure_row

LEADERBOARD = "leaderboard"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    lower_is_better: bool | None  # None: neither (a setting, such as L0)


COLUMNS = (
    Column("marginal_nll", "−log p(x) nats", True),
    Column("elbo", "ELBO nats", False),
    Column("mse", "MSE", True),
    Column("active_units", "active units", False),
    Column("codebook_usage", "codebook usage", False),
    Column("codebook_perplexity", "codebook perplexity", False),
    Column("index_prior_bits_per_pixel", "rate bits/pixel", True),
    Column("l0", "L0", None),
    Column("fvu", "FVU", True),
    Column("mmcs", "MMCS", False),
    Column("recovered", "features recovered", False),
    Column("dead_fraction", "dead latents", True),
)
"""Metrics shown when a data set's rows have them, in this order."""
TIMING = (
    Column("train_seconds", "train s", True),
    Column("examples_per_second", "examples/s", False),
)


@dataclass
class Entry:
    """The rows of one (data, model, budget) over its seeds."""

    data: str
    model: str
    recipe: str
    budget: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        found = []
        for row in self.rows:
            value = row.get("metrics", {}).get(key, row.get(key))
            if isinstance(value, int | float) and math.isfinite(value):
                found.append(float(value))
        return found

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Verdict:
    expectation: Expectation
    data: str
    budget: str
    better: float | None
    worse: float | None
    better_std: float | None
    worse_std: float | None
    seeds: int

    @property
    def holds(self) -> bool | None:
        if self.better is None or self.worse is None:
            return None
        if self.expectation.lower_is_better:
            return self.better < self.worse
        return self.better > self.worse

    @property
    def beyond_noise(self) -> bool:
        """Whether the gap is larger than the two standard deviations added."""
        if not self.holds or self.better_std is None or self.worse_std is None:
            return False
        return abs(self.better - self.worse) > self.better_std + self.worse_std  # type: ignore[operator]


def entries(rows: list[dict[str, Any]]) -> list[Entry]:
    groups: dict[tuple[str, str, str], Entry] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        key = (row["data"], row["model"], row["budget"])
        if key not in groups:
            groups[key] = Entry(row["data"], row["model"], row["recipe"], row["budget"])
        groups[key].rows.append(row)
    return list(groups.values())


def check(expectations: list[Expectation], table: list[Entry]) -> list[Verdict]:
    by_key = {(e.data, e.model, e.budget): e for e in table}
    verdicts = []
    for exp in expectations:
        for data, budget in sorted({(e.data, e.budget) for e in table}):
            if exp.data is not None and data != exp.data:
                continue
            better, worse = (
                by_key.get((data, exp.better, budget)),
                by_key.get((data, exp.worse, budget)),
            )
            if better is None or worse is None:
                continue
            verdicts.append(
                Verdict(
                    exp,
                    data,
                    budget,
                    better.mean(exp.metric),
                    worse.mean(exp.metric),
                    better.std(exp.metric),
                    worse.std(exp.metric),
                    min(len(better.values(exp.metric)), len(worse.values(exp.metric))),
                )
            )
    return verdicts


def fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    if std is None:
        return _number(mean)
    return f"{_number(mean)} ± {_number(std, 2)}"


def _number(value: float, digits: int = 4) -> str:
    return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def _sections(table: list[Entry]) -> dict[tuple[str, str], list[Entry]]:
    sections: dict[tuple[str, str], list[Entry]] = {}
    for entry in table:
        sections.setdefault((entry.data, entry.budget), []).append(entry)
    return sections


def _columns(group: list[Entry]) -> list[Column]:
    return [c for c in (*COLUMNS, *TIMING) if any(e.values(c.key) for e in group)]


def _header(column: Column, group: list[Entry]) -> str:
    label = column.label
    if column.key == "marginal_nll":
        ks = {r.get("nll_k") for e in group for r in e.rows if r.get("nll_k")}
        label += f" (IS, k={', '.join(str(k) for k in sorted(ks))})"
    arrow = {True: " ↓", False: " ↑", None: ""}[column.lower_is_better]
    return label + arrow


def _grid(group: list[Entry]) -> tuple[list[str], list[list[str]]]:
    columns = _columns(group)
    header = ["model", "recipe", "seeds", *(_header(c, group) for c in columns)]
    body = [
        [e.model, e.recipe, str(len(e.rows)), *(fmt(e.mean(c.key), e.std(c.key)) for c in columns)]
        for e in group
    ]
    return header, body


def _verdict_cells(v: Verdict) -> list[str]:
    mark = {True: "yes", False: "NO", None: "not measured"}[v.holds]
    if v.holds and v.seeds > 1:
        mark += " (beyond 1 std)" if v.beyond_noise else " (within noise)"
    relation = "<" if v.expectation.lower_is_better else ">"
    return [
        v.expectation.claim,
        v.data,
        v.budget,
        f"{v.expectation.better} {relation} {v.expectation.worse} on {v.expectation.metric}",
        f"{fmt(v.better, v.better_std)} vs {fmt(v.worse, v.worse_std)}",
        mark,
    ]


VERDICT_HEADER = ["claim", "data", "budget", "expected", "measured (mean ± std)", "holds"]


def provenance_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Distinct values of the provenance fields over the rows, one line each."""
    lines = []
    for key in ("aekit", "git_commit", "torch", "device_name", "threads", "python"):
        values = sorted({str(r.get(key)) for r in rows if key in r})
        if values:
            lines.append(f"{key}: {', '.join(values)}")
    return lines


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in body)]


def write_leaderboard(suite: Suite, rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """Write OUT/leaderboard.md, OUT/leaderboard.html and the figures; return their paths."""
    table = entries(rows)
    verdicts = check(suite.expectations, table)
    failed = [r for r in rows if r.get("status") != "ok"]
    figures = draw_figures(table, out)
    ok = [r for r in rows if r.get("status") == "ok"]

    md = [f"# aekit bench: {suite.name}", ""]
    if suite.description:
        md += [suite.description, ""]
    md += [
        f"{len(ok)} cells finished, {len(failed)} failed; mean ± standard deviation over seeds. "
        f"Suite: {suite.source}.",
        "",
        *(f"- {line}" for line in provenance_lines(rows)),
        "",
    ]
    for (data, budget), group in _sections(table).items():
        md += [f"## {data} ({budget})", "", *_markdown_table(*_grid(group)), ""]
    if verdicts:
        md += [
            "## The papers' claims",
            "",
            *_markdown_table(VERDICT_HEADER, [_verdict_cells(v) for v in verdicts]),
            "",
        ]
    if failed:
        md += ["## Failed cells", "", *(f"- {r['key']}: {r.get('error')}" for r in failed), ""]
    md += [f"![{name}]({path.name})" for name, path in figures.items()]
    paths = {"markdown": out / f"{LEADERBOARD}.md", "html": out / f"{LEADERBOARD}.html"}
    atomic_write_text(paths["markdown"], "\n".join(md) + "\n")

    title = html.escape(f"aekit bench: {suite.name}")
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{page.CSS}</style></head><body><h1>{title}</h1>",
        f"<p>{html.escape(suite.description)}</p>" if suite.description else "",
        f"<p>{len(ok)} cells finished, {len(failed)} failed; mean ± standard deviation over "
        f"seeds. Suite: {html.escape(suite.source)}.</p>",
        "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in provenance_lines(rows)) + "</ul>",
    ]
    for (data, budget), group in _sections(table).items():
        header, body = _grid(group)
        parts += [f"<h2>{html.escape(data)} ({html.escape(budget)})</h2>", page.table(body, header)]
    if verdicts:
        parts += [
            "<h2>The papers' claims</h2>",
            page.table([_verdict_cells(v) for v in verdicts], VERDICT_HEADER),
        ]
    if failed:
        parts += [
            "<h2>Failed cells</h2>",
            *(page.box("warning", f"{r['key']}: {r.get('error')}") for r in failed),
        ]
    parts += [
        f'<figure><img src="{p.name}" alt="{html.escape(n)}"></figure>' for n, p in figures.items()
    ]
    parts.append("</body></html>")
    atomic_write_text(paths["html"], "\n".join(parts) + "\n")
    return {**paths, **figures}


# ---------------------------------------------------------------------------- figures
def _points(group: list[Entry], x: str, y: str) -> list[tuple[Entry, float, float, float, float]]:
    points = []
    for e in group:
        mx, my = e.mean(x), e.mean(y)
        if mx is not None and my is not None:
            points.append((e, mx, my, e.std(x) or 0.0, e.std(y) or 0.0))
    return points


def _scatter(ax: Any, points: list, xlabel: str, ylabel: str, title: str) -> None:
    for entry, mx, my, sx, sy in points:
        ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt="o", capsize=3)
        ax.annotate(entry.model, (mx, my), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def draw_figures(table: list[Entry], out: Path) -> dict[str, Path]:
    """Quality against training time per data set; rate–distortion of the quantizers;
    sparsity–fidelity of the SAEs. A figure is drawn only where its points exist."""
    figures: dict[str, Path] = {}
    panels = []
    for (data, budget), group in _sections(table).items():
        for metric, label in (("marginal_nll", "test −log p(x), nats"), ("mse", "test MSE")):
            points = _points(group, "train_seconds", metric)
            if len(points) > 1:
                panels.append((points, label, f"{data} ({budget})"))
    if panels:
        path = figures["quality vs training time"] = out / "quality_vs_time.png"
        with figure_row(path, len(panels)) as axes:
            for ax, (points, label, title) in zip(axes, panels, strict=True):
                _scatter(ax, points, "training seconds", label, title)
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())

    rate = [
        (k, _points(g, "index_prior_bits_per_pixel", "mse")) for k, g in _sections(table).items()
    ]
    rate = [(k, p) for k, p in rate if p]
    if rate:
        path = figures["rate–distortion"] = out / "rate_distortion.png"
        with figure_row(path, len(rate)) as axes:
            for ax, ((data, budget), points) in zip(axes, rate, strict=True):
                _scatter(
                    ax, points, "rate, bits/pixel (index prior)", "test MSE", f"{data} ({budget})"
                )

    sparse = [(k, _points(g, "l0", "fvu")) for k, g in _sections(table).items()]
    sparse = [(k, p) for k, p in sparse if p]
    if sparse:
        path = figures["sparsity–fidelity"] = out / "sparsity_fidelity.png"
        with figure_row(path, len(sparse)) as axes:
            for ax, ((data, budget), points) in zip(axes, sparse, strict=True):
                by_recipe: dict[str, list] = {}
                for point in points:
                    by_recipe.setdefault(point[0].recipe, []).append(point)
                for recipe, line in by_recipe.items():
                    line.sort(key=lambda p: p[1])
                    ax.plot(
                        [p[1] for p in line], [p[2] for p in line], "-", alpha=0.5, label=recipe
                    )
                _scatter(
                    ax, points, "L0 (active latents per row)", "held-out FVU", f"{data} ({budget})"
                )
                ax.legend(fontsize=8)
    return figures
