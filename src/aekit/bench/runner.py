"""Run a suite's cells and append one row per cell to `results.jsonl`.

Every cell trains in its own run directory (`OUT/runs/DATA/MODEL/BUDGET/seedN`, a normal
aekit run: `aekit report` and `aekit eval` work on it) through the shared Trainer, so an
interrupted suite resumes at two levels: finished cells are skipped by their row, and a cell
cut short continues from its last checkpoint. A row is appended (and fsynced) only once the
cell is done, so `results.jsonl` never holds a half-finished cell.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aekit.bench.provenance import environment
from aekit.bench.suite import SAE_DATA, Cell, Suite
from aekit.data import DataConfig, Splits, TensorData, load_data
from aekit.errors import AekitError
from aekit.io import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl
from aekit.registry import build, get_recipe
from aekit.train import checkpoint as ckpt
from aekit.train.config import TrainConfig
from aekit.train.finish import evaluate_trained, fit_sampling_density
from aekit.train.rundir import writer_lock
from aekit.train.trainer import FitResult, Trainer, resolve_device

log = logging.getLogger("aekit")

RESULTS = "results.jsonl"
SUITE = "suite.json"


@dataclass
class Trained:
    """What a cell's training and evaluation produced."""

    fit: FitResult
    metrics: dict[str, Any]
    eval_seconds: float
    parameters: int
    resumed: bool


def run_suite(
    suite: Suite,
    out: Path,
    device: str = "cpu",
    *,
    on_row: Callable[[dict[str, Any], int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell of `suite` without a row in `out/results.jsonl`; return the rows of
    the suite's cells (rows of other cells, e.g. seeds left out with --seeds, stay in the
    file but not in the leaderboard). One `aekit bench` at a time writes into `out`."""
    with writer_lock(out, "bench results folder"):
        return _run_suite(suite, out, device, on_row)


def _run_suite(
    suite: Suite,
    out: Path,
    device: str,
    on_row: Callable[[dict[str, Any], int, int], None] | None,
) -> list[dict[str, Any]]:
    resolved = resolve_device(device)
    done: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(out / RESULTS):  # a line torn by a crash is left out
        # A cell's first row is its result: a second (two writers before the lock existed)
        # would count as another seed and shrink the spread that decides a claim.
        if isinstance(row, dict) and row.get("status") == "ok":
            done.setdefault(row.get("key"), row)
    cells = suite.cells()
    for cell in cells:
        row = done.get(cell.key)
        if row is not None and row.get("fingerprint") != cell.fingerprint():
            raise AekitError(
                f"{out} holds a result for {cell.key} from a different definition of that cell; "
                "the suite changed since: use another --out (or delete that directory)"
            )
    atomic_write_json(out / SUITE, {"name": suite.name, "source": suite.source})
    # Failed cells are retried: their old rows go, so the file keeps one row per cell; the
    # rewrite also drops a torn last line, so the next append starts on a clean line.
    rows = list(done.values())
    atomic_write_jsonl(out / RESULTS, rows)
    todo = [cell for cell in cells if cell.key not in done]
    data_cache: dict[str, Any] = {}
    for i, cell in enumerate(todo, start=1):
        row = run_cell(cell, suite, out, resolved, data_cache)
        append_jsonl(out / RESULTS, row)
        rows.append(row)
        if on_row is not None:
            on_row(row, i, len(todo))
    keys = {cell.key for cell in cells}
    return [row for row in rows if row["key"] in keys]


def run_cell(
    cell: Cell, suite: Suite, out: Path, device: torch.device, data_cache: dict[str, Any]
) -> dict[str, Any]:
    run_dir = out / "runs" / cell.data.name / cell.model.name / cell.budget / f"seed{cell.seed}"
    row: dict[str, Any] = {
        "key": cell.key,
        "fingerprint": cell.fingerprint(),
        "suite": suite.name,
        "data": cell.data.name,
        "data_kind": cell.data.kind,
        "model": cell.model.name,
        "recipe": cell.model.recipe,
        "options": cell.model.options,
        "budget": cell.budget,
        "seed": cell.seed,
        "train": cell.train,
        "run_dir": str(run_dir),
    }
    start = time.perf_counter()
    try:
        train = _train_sae if cell.data.kind == SAE_DATA else _train_image_model
        trained = train(cell, run_dir, device, data_cache)
    except (AekitError, RuntimeError, ValueError) as e:
        # One broken cell (a diverged run, an option a recipe rejects) must not cost the
        # others: it is recorded as failed, retried on the next resume, and reported.
        log.warning("%s failed: %s", cell.key, e)
        error = f"{type(e).__name__}: {e}"
        return {**row, "status": "failed", "error": error, **environment(device)}
    wall = time.perf_counter() - start
    history = trained.fit.history
    train_seconds = sum(r["train_seconds"] for r in history)
    examples = sum(r["examples_per_second"] * r["train_seconds"] for r in history)
    row.update(
        status="ok",
        metrics=_scalars(trained.metrics),
        estimator=trained.metrics.get("marginal_nll_estimator"),
        nll_k=trained.metrics.get("marginal_nll_k"),
        epochs=trained.fit.epochs,
        steps=trained.fit.steps,
        best_epoch=trained.fit.best_epoch,
        parameters=trained.parameters,
        train_seconds=train_seconds,
        examples_per_second=examples / train_seconds if train_seconds > 0 else None,
        eval_seconds=trained.eval_seconds,
        wall_seconds=wall,
        resumed=trained.resumed,
        **environment(device),
    )
    return row


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics a leaderboard can average: finite numbers (lists and NaN left out)."""
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _fit(trainer: Trainer, run_dir: Path) -> tuple[FitResult, bool]:
    resumed = (run_dir / ckpt.LAST).is_file()
    if resumed:
        log.info("resuming %s", run_dir)
    return trainer.fit(resume=resumed), resumed


def _image_splits(cell: Cell, data_cache: dict[str, Any]) -> Splits:
    recipe = get_recipe(cell.model.recipe)
    spec = DataConfig(**{**recipe.data, **cell.data.values})
    key = repr(spec.to_dict())
    if key not in data_cache:
        data_cache[key] = load_data(spec)
    return data_cache[key]


def _train_image_model(
    cell: Cell, run_dir: Path, device: torch.device, data_cache: dict[str, Any]
) -> Trained:
    splits = _image_splits(cell, data_cache)
    if splits.test is None:
        raise AekitError(f"data {cell.data.name} has no test split to evaluate on")
    recipe = get_recipe(cell.model.recipe)
    options = dict(cell.model.options)
    latent_dim = options.pop("latent_dim", None)
    if recipe.conditional:
        options["condition_classes"] = splits.label_classes()
    torch.manual_seed(cell.seed)
    model = build(recipe.name, splits.train.shape, latent_dim, **options)
    config = TrainConfig(
        **{**cell.train, "seed": cell.seed, "device": str(device), "out": str(run_dir)},
        progress=False,
        nll_k=0,
    )
    trainer = Trainer(model, splits.train, splits.val, config)
    fit, resumed = _fit(trainer, run_dir)
    fit_sampling_density(model, splits, trainer.device, run_dir)
    start = time.perf_counter()
    metrics = evaluate_trained(
        model,
        splits.test.to(trainer.device),
        batch_size=config.eval_batch_size,
        nll_k=cell.nll_k if model.bottleneck.has_density else 0,
        seed=cell.seed,
    )
    eval_seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    return Trained(fit, metrics, eval_seconds, parameters, resumed)


def _synthetic(
    cell: Cell, data_cache: dict[str, Any]
) -> tuple[TensorData, TensorData, TensorData, Any]:
    """Training rows, validation rows and held-out test rows (`test_rows` each) of one draw
    of the synthetic data, and its true features."""
    from aekit.data.activations.synthetic import make_sparse_data

    v = cell.data.values
    key = repr(sorted(v.items()))
    if key not in data_cache:
        x, features, _ = make_sparse_data(
            v["rows"] + 2 * v["test_rows"],
            v["d"],
            v["features"],
            active=v["active"],
            correlated=v["correlated"],
            frequency=v["frequency"],
            zipf_exponent=v["zipf_exponent"],
            noise=v["noise"],
            seed=v["seed"],
        )
        rows, held = v["rows"], v["test_rows"]
        train = TensorData(x[:rows], name=f"{cell.data.name} (train)")
        val = TensorData(x[rows : rows + held], name=f"{cell.data.name} (validation)")
        test = TensorData(x[rows + held :], name=f"{cell.data.name} (test)")
        data_cache[key] = (train, val, test, features)
    return data_cache[key]


def _train_sae(
    cell: Cell, run_dir: Path, device: torch.device, data_cache: dict[str, Any]
) -> Trained:
    from aekit.eval.recovery import feature_recovery
    from aekit.eval.sparse import sae_metrics

    train, val, test, features = _synthetic(cell, data_cache)
    recipe = get_recipe(cell.model.recipe)
    options = dict(cell.model.options)
    latent_dim = options.pop("latent_dim", None)
    torch.manual_seed(cell.seed)
    model = build(recipe.name, train.shape, latent_dim, **options)
    config = TrainConfig(
        **{
            **recipe.train_defaults(model.latent_dim),
            **cell.train,
            "seed": cell.seed,
            "device": str(device),
            "out": str(run_dir),
            "progress": False,
        }
    )
    trainer = Trainer(model, train, val, config)
    fit, resumed = _fit(trainer, run_dir)
    start = time.perf_counter()
    metrics = sae_metrics(model, test.to(trainer.device))
    recovery = feature_recovery(model.decoder_directions().cpu(), features)
    metrics.update(mmcs=recovery["mmcs"], recovered=recovery["recovered_fraction"])
    eval_seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    return Trained(fit, metrics, eval_seconds, parameters, resumed)
