"""A benchmark suite: a declared matrix of models x data sets x budgets x seeds.

A suite is a small TOML (or YAML) file; `aekit bench smoke|quick|full` use the suites shipped
in `aekit/bench/suites/`, and `aekit bench PATH` reads any other. Its sections:

    name = "quick"
    description = "what it is for"
    seeds = [0, 1, 2]

    [train]                # TrainConfig values of the image models (SAE recipes start
                           # from their own defaults); a model's `train` overrides both
    epochs = 30
    batch_size = 100

    [eval]
    nll_k = 1000           # importance samples per test example for -log p(x) (0: skip)

    [data.digits]          # DataConfig fields of an image source ...
    source = "digits"
    binarize = true

    [data.synthetic]       # ... or synthetic SAE activations with known features
    kind = "sae-synthetic"
    d = 32
    features = 128

    [models.iwae-k50]      # a recipe (`aekit models`) and its options
    recipe = "iwae"
    k = 50
    train = { lr = 1e-3 }  # optional TrainConfig overrides for this model
    data = ["digits"]      # optional: only these data sets

    [[budgets]]            # optional: train each cell under several budgets
    name = "e30"
    epochs = 30

    [[expect]]             # a paper's claim, checked on the means over seeds
    claim = "IWAE (k=50) has a better test NLL than the VAE (Burda et al. 2016)"
    metric = "marginal_nll"
    lower = "iwae-k50"     # or higher = ..., for metrics where more is better
    than = "vae"
    data = "digits"

Image models run on image data and SAE recipes on SAE data; other pairs are left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from aekit.data.config import DataConfig
from aekit.errors import AekitError
from aekit.registry import RECIPES
from aekit.train.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN = ("smoke", "quick", "full")
SAE_DATA = "sae-synthetic"
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "d": 32,
    "features": 128,
    "active": 4.0,
    "rows": 16384,
    "test_rows": 4096,
    "correlated": 0.0,
    "frequency": "zipf",
    "zipf_exponent": 0.5,
    "noise": 0.0,
    "seed": 0,
}
"""Synthetic SAE data (`aekit.data.activations.synthetic.make_sparse_data`); `seed` fixes the
data, so every training seed sees the same features and rows."""
TOP_LEVEL = {"name", "description", "seeds", "train", "eval", "data", "models", "budgets", "expect"}
EVAL_DEFAULTS = {"nll_k": 1000}


@dataclass(frozen=True)
class DataSpec:
    name: str
    kind: str  # "image" or SAE_DATA
    values: dict[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    recipe: str
    options: dict[str, Any]
    train: dict[str, Any]
    data: tuple[str, ...] | None

    @property
    def is_sae(self) -> bool:
        """Whether the recipe models a network's activations (it trains on SAE data)."""
        return RECIPES[self.recipe].activations


@dataclass(frozen=True)
class Expectation:
    claim: str
    metric: str
    better: str
    worse: str
    lower_is_better: bool
    data: str | None


@dataclass(frozen=True)
class Cell:
    """One training run of the matrix."""

    data: DataSpec
    model: ModelSpec
    budget: str
    train: dict[str, Any]
    seed: int
    nll_k: int

    @property
    def key(self) -> str:
        return f"{self.data.name}/{self.model.name}/{self.budget}/seed{self.seed}"

    def fingerprint(self) -> str:
        """A hash of everything that determines the cell's result, so a resumed suite can
        tell a finished cell from one whose definition has since changed."""
        spec = {
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "train": self.train,
            "seed": self.seed,
            "nll_k": self.nll_k,
        }
        text = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Suite:
    name: str
    description: str
    seeds: list[int]
    data: dict[str, DataSpec]
    models: dict[str, ModelSpec]
    budgets: dict[str, dict[str, Any]]
    train: dict[str, Any]
    eval: dict[str, Any]
    expectations: list[Expectation] = field(default_factory=list)
    source: str = ""

    def cells(self) -> list[Cell]:
        cells = []
        for data in self.data.values():
            for model in self.models.values():
                if model.data is not None and data.name not in model.data:
                    continue
                if model.is_sae != (data.kind == SAE_DATA):
                    continue
                for budget, budget_train in self.budgets.items():
                    base = {} if model.is_sae else self.train
                    train = {**base, **budget_train, **model.train}
                    for seed in self.seeds:
                        cells.append(
                            Cell(data, model, budget, train, seed, int(self.eval["nll_k"]))
                        )
        return cells


def resolve(name_or_path: str) -> tuple[str, str]:
    """The text of a suite and where it came from: a built-in name or a file path."""
    if name_or_path in BUILTIN:
        path = resources.files("aekit.bench") / "suites" / f"{name_or_path}.toml"
        return path.read_text(encoding="utf-8"), f"built-in suite {name_or_path}"
    path = Path(name_or_path)
    if not path.is_file():
        raise AekitError(
            f"unknown suite {name_or_path!r}: name a built-in suite ({', '.join(BUILTIN)}) "
            "or a .toml/.yaml suite file"
        )
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except UnicodeDecodeError as e:
        raise AekitError(
            f"{path}: a suite file is UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except OSError as e:
        raise AekitError(f"{path}: cannot read the suite ({e.strerror})") from None


def parse_text(text: str, where: str) -> dict[str, Any]:
    if where.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise AekitError(
                f"{where}: reading a YAML suite needs PyYAML (pip install pyyaml), or write "
                "the suite in TOML"
            ) from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise AekitError(f"{where}: not valid YAML: {str(e).splitlines()[0]}") from None
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise AekitError(f"{where}: not valid TOML: {e}") from None
    if not isinstance(raw, dict):
        raise AekitError(f"{where}: a suite is a table of sections, got {type(raw).__name__}")
    return raw


def load_suite(name_or_path: str) -> Suite:
    text, where = resolve(name_or_path)
    return suite_from_dict(parse_text(text, where), where)


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise AekitError(f"{where}: [{key}] must be a table")
    return dict(value)


def _check_fields(values: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise AekitError(f"{what}: unknown field(s) {', '.join(unknown)}")


def _train_fields(values: dict[str, Any], what: str) -> dict[str, Any]:
    fields_ = {f.name for f in dataclasses.fields(TrainConfig)} - {"out", "device", "seed"}
    _check_fields(values, fields_, what)
    try:
        TrainConfig.from_dict(values)  # types and ranges, before anything runs
    except AekitError as e:
        raise AekitError(f"{what}: {e}") from None
    return values


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
"""Suite, data, model and budget names become folder names under the results directory, so
they are plain names: no separators, no `..`."""


def _plain(name: Any, what: str) -> str:
    name = str(name)
    if not PLAIN_NAME.fullmatch(name) or ".." in name:
        raise AekitError(
            f"{what}: name {name!r} must be letters, digits, '.', '_', '+' or '-' (it names a "
            "folder of the results)"
        )
    return name


def _list_of_tables(raw: dict[str, Any], key: str, default: list, where: str) -> list[dict]:
    value = raw.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise AekitError(f"{where}: {key} must be a list of tables ([[{key}]])")
    return value


def suite_from_dict(raw: dict[str, Any], where: str = "suite") -> Suite:
    _check_fields(raw, TOP_LEVEL, where)
    name = _plain(raw.get("name") or Path(where).stem, f"{where}: the suite")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise AekitError(f"{where}: seeds must be a non-empty list of integers")
    train = _train_fields(_table(raw, "train", where), f"{where}: [train]")
    evaluation = {**EVAL_DEFAULTS, **_table(raw, "eval", where)}
    _check_fields(evaluation, set(EVAL_DEFAULTS), f"{where}: [eval]")

    data: dict[str, DataSpec] = {}
    for data_name, values in _table(raw, "data", where).items():
        if not isinstance(values, dict):
            raise AekitError(f"{where}: [data.{data_name}] must be a table")
        values = dict(values)
        kind = values.pop("kind", "image")
        if kind == SAE_DATA:
            _check_fields(values, set(SYNTHETIC_DEFAULTS), f"{where}: [data.{data_name}]")
            values = {**SYNTHETIC_DEFAULTS, **values}
        elif kind == "image":
            allowed = {f.name for f in dataclasses.fields(DataConfig)} - {"offset", "divisor"}
            _check_fields(values, allowed, f"{where}: [data.{data_name}]")
            DataConfig.from_dict(values)  # bad values are reported here, before anything runs
        else:
            raise AekitError(
                f"{where}: [data.{data_name}] kind must be image or {SAE_DATA} (got {kind!r})"
            )
        data[data_name] = DataSpec(_plain(data_name, f"{where}: [data]"), kind, values)
    if not data:
        raise AekitError(f"{where}: no [data.NAME] sections")

    models: dict[str, ModelSpec] = {}
    for model_name, values in _table(raw, "models", where).items():
        if not isinstance(values, dict) or "recipe" not in values:
            raise AekitError(f"{where}: [models.{model_name}] needs a recipe (see `aekit models`)")
        values = dict(values)
        recipe = values.pop("recipe")
        if recipe not in RECIPES:
            raise AekitError(
                f"{where}: [models.{model_name}] unknown recipe {recipe!r} (see `aekit models`)"
            )
        model_train = values.pop("train", {})
        if not isinstance(model_train, dict):
            raise AekitError(f"{where}: [models.{model_name}.train] must be a table")
        model_train = _train_fields(dict(model_train), f"{where}: [models.{model_name}.train]")
        only = values.pop("data", None)
        if only is not None:
            only = (only,) if isinstance(only, str) else only
            if not isinstance(only, list | tuple) or not all(isinstance(d, str) for d in only):
                raise AekitError(f"{where}: [models.{model_name}] data is a name or a list")
            only = tuple(only)
            missing = [d for d in only if d not in data]
            if missing:
                raise AekitError(
                    f"{where}: [models.{model_name}] names unknown data {', '.join(missing)}"
                )
        model_name = _plain(model_name, f"{where}: [models]")
        models[model_name] = ModelSpec(model_name, recipe, values, model_train, only)
    if not models:
        raise AekitError(f"{where}: no [models.NAME] sections")

    budgets: dict[str, dict[str, Any]] = {}
    for i, budget in enumerate(_list_of_tables(raw, "budgets", [{"name": "default"}], where)):
        budget = dict(budget)
        budget_name = _plain(budget.pop("name", f"budget{i}"), f"{where}: budget")
        budgets[budget_name] = _train_fields(budget, f"{where}: budget {budget_name}")

    expectations = [
        _expectation(e, where, models, data) for e in _list_of_tables(raw, "expect", [], where)
    ]
    suite = Suite(
        name, str(raw.get("description", "")), seeds, data, models, budgets, train, evaluation,
        expectations, where,
    )  # fmt: skip
    if not suite.cells():
        raise AekitError(f"{where}: no model fits any data set (image models need image data, "
                         f"SAE recipes need {SAE_DATA} data)")  # fmt: skip
    return suite


def _expectation(
    e: dict[str, Any], where: str, models: dict[str, ModelSpec], data: dict[str, DataSpec]
) -> Expectation:
    what = f"{where}: expectation {e.get('claim', e)!r}"
    _check_fields(e, {"claim", "metric", "lower", "higher", "than", "data"}, what)
    if ("lower" in e) == ("higher" in e) or "than" not in e or "metric" not in e:
        raise AekitError(f"{what}: give metric, exactly one of lower/higher, and than")
    better = e.get("lower", e.get("higher"))
    for model in (better, e["than"]):
        if model not in models:
            raise AekitError(f"{what}: unknown model {model!r}")
    if e.get("data") is not None and e["data"] not in data:
        raise AekitError(f"{what}: unknown data {e['data']!r}")
    return Expectation(
        claim=str(e.get("claim", "")),
        metric=e["metric"],
        better=better,
        worse=e["than"],
        lower_is_better="lower" in e,
        data=e.get("data"),
    )
