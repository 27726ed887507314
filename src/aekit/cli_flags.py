"""Command-line flags generated from config dataclasses: one flag per field, help text from
the field's docstring, and only the flags a user actually gave end up in the config."""

from __future__ import annotations

import argparse
import math
import sys
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

from aekit.components import field_default, field_docs

RENAMED = {("data", "source"): "data"}
"""Fields whose flag is not simply --field-name (`DataConfig.source` is `--data`)."""


class Parser(argparse.ArgumentParser):
    """argparse with the two defaults a command line of many flags needs: no abbreviations
    (`--k 5` must not silently mean `--kl-warmup-steps 5`), and a usage error that is one line
    (`--help` shows the usage)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        hint = f" (see {self.prog} --help)" if self.add_help else ""
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def finite_float(text: str) -> float:
    """A float flag: NaN and infinities are refused (`--grad-clip nan` would turn clipping
    off, `--lr inf` would train to NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


finite_float.__name__ = "float"


def bounded_int(low: int, high: int = sys.maxsize) -> Any:
    """An int flag in [low, high]; argparse names the flag in the one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            upper = "" if high == sys.maxsize else f" and at most {high:,}"
            raise argparse.ArgumentTypeError(f"must be at least {low}{upper} (got {value})")
        return value

    parse.__name__ = "int"
    return parse


positive_int = bounded_int(1)
non_negative_int = bounded_int(0)
SEED_LIMIT = 2**63 - 1
"""Seeds go to torch.Generator.manual_seed, which takes a signed 64-bit integer."""
seed_int = bounded_int(0, SEED_LIMIT)


def parse_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")
    return values


def parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        if text.lower() in ("none", "off"):
            return None
        return parse_tuple(text) if kind is tuple else scalar_type(kind)(text)

    parse.__name__ = kind.__name__
    return parse


def flag_name(section: str, name: str) -> str:
    return "--" + RENAMED.get((section, name), name).replace("_", "-")


def add_flags(
    parser: argparse._ActionsContainer,
    section: str,
    cls: type,
    defaults: dict[str, Any] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Add a flag for every field of dataclass `cls`; parsed values land in `section.field`."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = defaults or {}
    for f in fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        base = typing.get_origin(base) or base
        default = defaults.get(f.name, field_default(f))
        shown = "" if default is MISSING else f" (default: {format_default(default)})"
        kwargs: dict[str, Any] = {
            "dest": f"{section}.{f.name}",
            "default": argparse.SUPPRESS,
            "help": (docs.get(f.name, "") + shown).replace("%", "%%"),
        }
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = (
                parse_optional(base)
                if optional
                else (parse_tuple if base is tuple else scalar_type(base))
            )
            kwargs["metavar"] = f.name.upper()
        parser.add_argument(flag_name(section, f.name), **kwargs)


def scalar_type(kind: type) -> Any:
    return finite_float if kind is float else kind


def format_default(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def section_values(namespace: argparse.Namespace, section: str) -> dict[str, Any]:
    """The fields of one section that the user gave on the command line."""
    prefix = section + "."
    return {k[len(prefix) :]: v for k, v in vars(namespace).items() if k.startswith(prefix)}
