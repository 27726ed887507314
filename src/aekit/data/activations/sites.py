"""Sites: where in a network activations are read.

A *site* is a module name from `model.named_modules()` ("encoder.layer.3", "h.5.mlp"):
its output, or with the suffix ":input" its first positional input ("NAME:output" is the
same as "NAME"). `resolve_sites` expands glob patterns over the module names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from torch import nn

from aekit.errors import AekitError


def parse_site(site: str) -> tuple[str, str]:
    """(module name, kind): "name" and "name:output" -> (name, "output"); "name:input" ->
    (name, "input")."""
    name, sep, kind = site.rpartition(":")
    if not sep:
        return site, "output"
    if kind not in ("input", "output"):
        raise AekitError(f"site {site!r}: the part after ':' must be 'input' or 'output'")
    return name, kind


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """fnmatch-style glob over dotted names, except that `*` and `?` stay within one dotted
    part and `**` crosses parts (so "h.*" means the blocks, not every module inside them)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _summarise(names: Sequence[str], depth: int, limit: int = 24) -> str:
    """A readable digest of module names up to `depth` parts, numbered runs collapsed:
    "embeddings, encoder, encoder.layer, encoder.layer.{0..5}, pooler"."""
    groups: dict[str, list[str]] = {}
    for n in names:
        if n and n.count(".") < depth:
            groups.setdefault(re.sub(r"(?<=\.)\d+(?=\.|$)", "#", n), []).append(n)
    shown = []
    for template, members in groups.items():
        numbers = [int(m) for n in members for m in re.findall(r"(?<=\.)(\d+)(?=\.|$)", n)]
        if len(members) > 1 and template.count("#") == 1:
            lo, hi = min(numbers), max(numbers)
            run = (
                f"{{{lo}..{hi}}}"
                if hi - lo + 1 == len(members)
                else "{" + ",".join(map(str, sorted(numbers))) + "}"
            )
            shown.append(template.replace("#", run))
        elif len(members) > 1:
            shown.append(template.replace("#", "*"))
        else:
            shown.append(members[0])
    more = f", … ({len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def resolve_sites(model: nn.Module, patterns: str | Sequence[str]) -> list[str]:
    """Site names matched by glob patterns over `model.named_modules()`, in pattern order
    then module order, without repeats. "name:input" selects the module's input.

    A pattern that matches nothing raises AekitError listing (a digest of) the modules."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise AekitError("give at least one site (a module name or glob, e.g. encoder.layer.3)")
    names = [n for n, _ in model.named_modules() if n]
    sites: list[str] = []
    for pattern in patterns:
        glob, kind = parse_site(pattern)
        regex = _glob_regex(glob)
        found = [n for n in names if regex.match(n)]
        if not found:
            close = difflib.get_close_matches(glob, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            depth = min(max(glob.count(".") + 1, 2), 3)
            raise AekitError(
                f"no module of {type(model).__name__} matches site {pattern!r}{hint}; "
                f"its modules include: {_summarise(names, depth)} (sites are globs over "
                "model.named_modules() names: * within a dotted part, ** across parts; "
                "add :input for a module's input)"
            )
        for n in found:
            site = n if kind == "output" else f"{n}:input"
            if site not in sites:
                sites.append(site)
    return sites
