"""The small machinery every pluggable part shares: a named registry and typed options.

A component (bottleneck, likelihood, corruption, objective) is a class with an `Options`
dataclass holding its hyper-parameters. Configs store `{"kind": name, **options}`, the
command line turns every option field into a flag, and a new method is one new class
plus its `@REGISTRY.register("name")` line.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from typing import Any, Generic, TypeVar

from aekit.errors import AekitError

T = TypeVar("T")


@dataclass
class NoOptions:
    """A component without hyper-parameters."""


@dataclass
class AuxiliaryStep:
    """A part of a model that an optimiser of its own trains inside the one training loop,
    stepped after each step of the model (FactorVAE's discriminator, and any adversarial part
    to come). Its parameters are left out of the model's optimiser; its optimiser's state is
    checkpointed with the model's, so a resumed run continues it exactly."""

    name: str
    parameters: list[Any]
    """The part's parameters (torch Parameters)."""
    make_optimizer: Callable[[list[Any]], Any]
    """Builds its optimiser over `parameters`."""
    loss: Callable[[Any], Any]
    """The model's output of the step -> an output with `loss` (minimised) and `terms`
    (named, detached batch means, averaged into the epoch record beside the model's)."""


@dataclass(frozen=True)
class Dims:
    """What a component needs to know about the model it sits in."""

    input_shape: tuple[int, ...]
    latent_dim: int
    output_shape: tuple[int, ...] | None = None
    """The shape of the target when the model predicts a paired target (a transcoder reads
    one site and predicts another); None: the model reconstructs its input."""
    latent_grid: tuple[int, int] | None = None
    """(h, w) when the body lays the latent out as a grid of vectors, one per position of its
    last feature map, flattened position-major (the grid body); None: a flat latent."""

    @property
    def target_shape(self) -> tuple[int, ...]:
        """The shape of what the decoder produces."""
        return self.input_shape if self.output_shape is None else self.output_shape

    @property
    def paired(self) -> bool:
        return self.output_shape is not None


class Registry(Generic[T]):
    """Name -> class, with a clear error for unknown names."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            cls.kind = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return add

    def unregister(self, name: str) -> None:
        self._classes.pop(name, None)

    def __getitem__(self, name: str) -> type[T]:
        if name not in self._classes:
            raise AekitError(f"unknown {self.what} {name!r}; choose from {', '.join(self.names())}")
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return list(self._classes)


def options_class(cls: type) -> type:
    return getattr(cls, "Options", NoOptions)


def make_options(options_cls: type, values: dict[str, Any], what: str) -> Any:
    """Build an options dataclass from a dict, naming unknown or badly typed fields."""
    if not isinstance(values, dict):
        raise AekitError(f"{what}: expected a mapping of options (got {type(values).__name__})")
    known = {f.name for f in fields(options_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        valid = ", ".join(sorted(known)) or "none"
        raise AekitError(f"{what} has no option {', '.join(unknown)} (valid: {valid})")
    hints = typing.get_type_hints(options_cls)
    resolved_later = getattr(options_cls, "AUTO", ())
    for name, value in values.items():
        if name in resolved_later and value == "auto":
            continue
        if not fits(value, hints[name]):
            raise AekitError(f"{what}: {name} must be {type_name(hints[name])} (got {value!r})")
    try:
        return options_cls(**values)
    except (TypeError, ValueError, OverflowError) as e:
        raise AekitError(f"{what}: {e}") from None


def fits(value: Any, hint: Any) -> bool:
    """Whether a value read from a file (JSON, TOML) is of a field's declared type: a
    hand-edited config with a string where an int belongs is refused when it is read, not
    deep inside training. Ints pass for floats, lists for tuples; bools are not numbers."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, tuple | list):
            return False
        item = args[0] if args else Any
        return all(fits(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args) + " or null"
    if typing.get_origin(hint) in (tuple, list):
        return f"a list of {type_name(args[0]) if args else 'values'}"
    return getattr(hint, "__name__", str(hint))


class SavedConfig:
    """JSON round trip of a config dataclass, naming any field it does not know."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        return make_options(cls, values, cls.__name__)


def options_to_dict(options: Any) -> dict[str, Any]:
    out = asdict(options)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under dataclass fields (PEP 257 attribute docstrings).

    They are the single source of the help text of config fields and command-line flags.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, following in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(following.value.value.split())
    return docs


def field_default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING
