"""Command-line flags generated from config dataclasses: one flag per field, help text from
the field's docstring, and only the flags a user actually gave end up in the config."""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

from aekit.components import field_default, field_docs

RENAMED = {("data", "source"): "data"}
"""Fields whose flag is not simply --field-name (`DataConfig.source` is `--data`)."""


def parse_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        if text.lower() in ("none", "off"):
            return None
        return parse_tuple(text) if kind is tuple else kind(text)

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
                parse_optional(base) if optional else (parse_tuple if base is tuple else base)
            )
            kwargs["metavar"] = f.name.upper()
        parser.add_argument(flag_name(section, f.name), **kwargs)


def format_default(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def section_values(namespace: argparse.Namespace, section: str) -> dict[str, Any]:
    """The fields of one section that the user gave on the command line."""
    prefix = section + "."
    return {k[len(prefix) :]: v for k, v in vars(namespace).items() if k.startswith(prefix)}
