"""Run-level work shared by `aekit train`, `aekit eval` and `aekit bench`: run directories,
models for an activation source (one per site, or a group of them), the member run
directories of a group."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch

from aekit.data.activations.source import ActivationSource, OpenedSource, open_source
from aekit.errors import AekitError
from aekit.io import atomic_write_json
from aekit.models.autoencoder import Autoencoder
from aekit.models.group import MEMBERS, GroupMember, ModelGroup
from aekit.registry import build, get_recipe
from aekit.train import checkpoint as ckpt
from aekit.train.config import TrainConfig
from aekit.train.trainer import FitResult, Trainer


def fresh_run_dir(recipe: str) -> Path:
    """runs/RECIPE-DATE-TIME, created here and numbered when it exists already, so two runs
    started in one second get a folder each."""
    base = Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    run, i = base, 1
    while True:
        try:
            run.mkdir()
            return run
        except FileExistsError:
            i += 1
            run = base.with_name(f"{base.name}-{i}")


def write_eval(path: Path, metrics: dict[str, Any], split: str, source: str) -> None:
    """An evaluation's JSON: which split of which data, and the metrics."""
    atomic_write_json(path, {"split": split, "data": source, "metrics": metrics})


def write_member_evals(
    run: Path, group: ModelGroup, metrics: dict[str, Any], split: str, source: str
) -> None:
    """Each member's share of a group's evaluation (NAME/METRIC) as RUN/members/NAME/eval.json."""
    for m in group.members:
        prefix = f"{m.name}/"
        own = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
        write_eval(run / MEMBERS / m.name / ckpt.EVAL, own, split, source)


def member_name(site: str) -> str:
    """A group member's name for a site (module names hold dots, which names may not)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", site)


def model_for_source(
    recipe: str, opened: OpenedSource, options: dict[str, Any], *, seed: int = 0
) -> Autoencoder:
    """Recipe `recipe` for the source's site (and a paired target site: a transcoder),
    initialised from the source's sample rows (normalisation, b_dec)."""
    torch.manual_seed(seed)
    paired = len(opened.sites) == 2
    output_shape = (opened.d_out,) if paired else None
    model = build(recipe, (opened.d_in,), output_shape=output_shape, **options)
    model.initialise(opened.sample, opened.sample_target)
    return model


def group_for_source(
    recipe: str, opened: OpenedSource, options: dict[str, Any], *, seed: int = 0
) -> ModelGroup:
    """One model of recipe `recipe` per site of the source, trained side by side on one pass;
    each initialised from its site's sample rows."""
    torch.manual_seed(seed)
    members, models = [], {}
    for site in opened.sites:
        member = GroupMember(member_name(site), site)
        if member.name in models:
            raise AekitError(f"the sites {opened.sites} give the member name {member.name!r} twice")
        model = build(recipe, (opened.widths[site],), **options)
        model.initialise(opened.samples[site])
        members.append(member)
        models[member.name] = model
    return ModelGroup(models, members)


def write_member_runs(
    run: Path, group: ModelGroup, activations: dict[str, Any], train: TrainConfig
) -> None:
    """RUN/members/NAME: config.json (the member's site as its activation source) and its
    weights, so each member loads, evaluates and reports as a run of its own."""
    for m in group.members:
        member_dir = run / MEMBERS / m.name
        member_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_config(
            member_dir,
            {
                "kind": "autoencoder",
                "model": group[m.name].config.to_dict(),
                "train": train.to_dict(),
                "data": None,
                "activations": {**activations, "site": m.site, "target_site": m.target_site},
                "group": str(run),
            },
        )
        ckpt.save_weights(member_dir / ckpt.WEIGHTS, group[m.name])


def recipe_train_config(model: Autoencoder | ModelGroup, **values: Any) -> TrainConfig:
    """TrainConfig with the defaults of the model's recipe for its size (an SAE's one pass in
    batches of 4,096 and learning rate by latent count) under `values`."""
    models = list(model.models.values()) if isinstance(model, ModelGroup) else [model]
    recipe = get_recipe(models[0].config.recipe)
    largest = max(m.latent_dim for m in models)
    return TrainConfig(**{**recipe.train_defaults(largest), **values})


def train_on_source(
    model: Autoencoder | ModelGroup,
    source: ActivationSource,
    train: TrainConfig | dict[str, Any] | None = None,
    *,
    opened: OpenedSource | None = None,
    resume: bool = False,
) -> tuple[FitResult, OpenedSource]:
    """Train a model, or a group of models, on a network's activations: the source's held-out
    rows validate, the run directory (`train.out`) records the source, and a group's members
    get run directories of their own. `train` as a dict: TrainConfig fields over the recipe's
    defaults. With `resume`, `model` is the untrained model of the run's config."""
    group = isinstance(model, ModelGroup)
    if opened is None:
        seed = train.seed if isinstance(train, TrainConfig) else (train or {}).get("seed", 0)
        opened = open_source(source, seed=seed, group=group)
    config = (
        train if isinstance(train, TrainConfig) else recipe_train_config(model, **(train or {}))
    )
    trainer = Trainer(
        model, opened.train, opened.val, config, extra_config={"activations": source.to_dict()}
    )
    result = trainer.fit(resume=resume)
    if group and result.run_dir is not None:
        write_member_runs(Path(result.run_dir), model, source.to_dict(), config)
    return result, opened
