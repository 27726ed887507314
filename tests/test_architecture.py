"""The layering of src/aekit, read from the source: every import (function-level ones too)
resolved to the module it loads; no cycles, and the rules the layout stands for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "aekit"

LEAF = (
    "aekit.bottlenecks", "aekit.errors", "aekit.components", "aekit.priors", "aekit.sparse",
    "aekit.patches", "aekit.lower_bound", "aekit.distributed", "aekit.precision",
)  # fmt: skip
RULES = {
    "aekit.bottlenecks": (
        "bottlenecks are leaves: they build on the shared primitives only",
        lambda target: not target.startswith(LEAF),
    ),
    "aekit.nets": (
        "network bodies are generic: no family, data, training or evaluation code",
        lambda target: target.startswith(
            (
                "aekit.bottlenecks",
                "aekit.objectives",
                "aekit.models",
                "aekit.registry",
                "aekit.data",
                "aekit.train",
                "aekit.eval",
                "aekit.likelihoods",
                "aekit.priors",
                "aekit.corruption",
            )
        ),
    ),
    "aekit.models": (
        "models never import the trainer, evaluation, reports or the benchmark",
        lambda target: target.startswith(
            ("aekit.train", "aekit.eval", "aekit.report", "aekit.bench")
        ),
    ),
    "aekit.data": (
        "data knows no model",
        lambda target: target.startswith(
            (
                "aekit.models",
                "aekit.bottlenecks",
                "aekit.nets",
                "aekit.objectives",
                "aekit.registry",
                "aekit.train",
                "aekit.eval",
                "aekit.report",
                "aekit.compress",
                "aekit.likelihoods",
                "aekit.priors",
                "aekit.corruption",
            )
        ),
    ),
    "aekit.eval": (
        "evaluation reads a model through its public methods: no bodies, no trainer",
        lambda target: target.startswith(
            ("aekit.nets", "aekit.train", "aekit.report", "aekit.bench")
        ),
    ),
    "aekit": (
        "the library never imports its command line",
        lambda target: target == "aekit.cli",
    ),
}
"""package prefix -> (the rule, whether an import of `target` breaks it)."""
COMMAND_LINE = ("aekit.cli", "aekit.__main__")
"""The command line and its entry point (which answers `aekit models` before importing it)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The aekit module an import loads (a name inside a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # `from pkg import sub` loads the submodule (pkg is initialised either way);
            # `from mod import name` loads mod.
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for name in names:
            target = resolve(name) if name.startswith("aekit") else None
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def package_parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES]


def test_the_source_is_found():
    assert "aekit.models.autoencoder" in GRAPH and "aekit.bottlenecks.sparse" in GRAPH
    assert "aekit.bottlenecks.base" in GRAPH["aekit.bottlenecks.sparse"]


def test_no_import_cycles():
    """Module-level and function-level imports alike: a lazy import that closes a cycle only
    hides it until the day the order of first use changes."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # A package's __init__ importing its own submodules is how packages load.
            real = [m for m in component if not any(m in package_parents(o) for o in component)]
            if len(component) > 1 and real:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("prefix", list(RULES))
def test_layering_rules(prefix):
    rule, breaks = RULES[prefix]
    broken = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module == prefix or module.startswith(prefix + ".")
        for target in targets
        if breaks(target) and not (prefix == "aekit" and module in COMMAND_LINE)
    ]
    assert not broken, f"{rule}: {broken}"


def test_every_model_and_data_source_offers_the_written_down_interfaces(tmp_path):
    """The Trainer's `Trainable` and the data's `DataSource`: an autoencoder of any family, a
    group of them; in-memory tensors, a store's view."""
    import torch

    import aekit
    from aekit.data.activations import StoreWriter
    from aekit.data.protocol import DataSource, PairedSource
    from aekit.train.protocol import Trainable

    recipes = [("vae", {}), ("sae-topk", {"k": 2}), ("ksae", {"k": 2, "latent_dim": 8})]
    models = [aekit.build(name, (8,), **options) for name, options in recipes]
    group = aekit.ModelGroup({"a": models[1]}, [aekit.GroupMember("a", "s")])
    for model in [*models, group]:
        assert isinstance(model, Trainable), type(model).__name__
    assert isinstance(aekit.TensorData(torch.rand(4, 8)), DataSource)
    writer = StoreWriter(tmp_path / "store", {"s": 8, "t": 3}, dtype="float32")
    n = torch.zeros(16, dtype=torch.long)
    writer.add({"s": torch.randn(16, 8), "t": torch.randn(16, 3)}, n, n, n)
    store = writer.close()
    view = store.stream(("s", "t"))
    assert isinstance(view, PairedSource) and view.target_shape == (3,)
    batch = next(view.batches(5, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert batch.x.shape == (5, 8) and batch.y.shape == (5, 3) and set(batch.by_site) == {"s", "t"}
