"""Documents for capturing activations: text files (.txt paragraphs, .jsonl records) and a
built-in offline English corpus, Python's own documentation.

Every Python install carries a few megabytes of technical English prose: the reference
manual topics behind `help("...")` (`pydoc_data.topics`) and the docstrings of the standard
library. That is enough to capture activations and train a small sparse autoencoder with no
network and no download; it is narrow (programming prose), so features learned on it say
more about code documentation than about English at large.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from aekit.errors import AekitError


def texts_from_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Documents from text files, in the order given (a directory: its *.txt and *.jsonl
    files, sorted by name).

    - `.txt`: documents separated by blank lines (one or more empty lines; a file without
      blank lines is one document). Paragraphs are the natural unit of most text files, and
      BERT-style models saw [SEP] between text spans in pre-training;
    - `.jsonl`: one document per line, from its "text" field (blank lines skipped).

    A missing file, an empty one, a line without a "text" string or another extension
    raises AekitError naming the file (and line)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in (".txt", ".jsonl"))
            if not found:
                raise AekitError(f"{p} holds no .txt or .jsonl files")
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise AekitError("no text files given")
    docs: list[str] = []
    for f in files:
        if not f.is_file():
            raise AekitError(f"text file not found: {f}")
        if f.suffix not in (".txt", ".jsonl"):
            raise AekitError(
                f"{f}: unsupported text file type {f.suffix!r}; use .txt (documents separated "
                'by blank lines) or .jsonl (one {"text": ...} object per line)'
            )
        try:
            content = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise AekitError(f"{f} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        before = len(docs)
        if f.suffix == ".txt":
            docs.extend(d.strip() for d in re.split(r"\n\s*\n", content) if d.strip())
        else:
            for i, line in enumerate(content.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise AekitError(f"{f} line {i}: not valid JSON") from None
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise AekitError(f'{f} line {i}: no "text" string field')
                if text.strip():
                    docs.append(text)
        if len(docs) == before:
            raise AekitError(f"{f} holds no text")
    return docs


# Folders of the standard library that are not documentation prose: test suites, the IDLE
# editor, generated codec tables (a hundred identical docstrings), installed third-party
# packages and build files.
_SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "turtledemo",
        "encodings",
        "site-packages",
        "dist-packages",
        "lib-dynload",
        "__pycache__",
        "__phello__",
        "_bundled",
    }
)
# Modules whose "docstrings" are not prose: a rot13 poem, generated data, greetings.
_SKIP_FILES = frozenset({"this.py", "__hello__.py", "antigravity.py"})
_MIN_CHARS = 20  # one-word docstrings ("Constructor.") add separators, not text


def python_docs() -> list[str]:
    """The documents of the built-in corpus, in a fixed order.

    First the 79-odd reference topics of `pydoc_data.topics` (sorted by topic name), then one
    document per pure-Python standard-library module (sorted by path below the stdlib
    folder): its module, class and function docstrings in source order, separated by blank
    lines. Test suites, idlelib, codec tables and site-packages are skipped. The same
    Python version gives the same list; another version gives a similar one.
    """
    return list(_python_docs())


@functools.lru_cache(maxsize=1)
def _python_docs() -> tuple[str, ...]:
    docs: list[str] = []
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data; the docstrings remain
        topics = {}
    docs.extend(text.strip() for _, text in sorted(topics.items()) if text.strip())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in _module_files(stdlib):
        text = _module_docstrings(path)
        if text:
            docs.append(text)
    if not docs:
        raise AekitError(
            f"no documentation found in this Python install ({stdlib}); "
            "give texts with --texts instead"
        )
    return tuple(docs)


def _module_files(stdlib: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(stdlib):
        # Pruning in place stops os.walk descending; sorting makes the walk deterministic.
        dirs[:] = sorted(
            d for d in dirs if d not in _SKIP_DIRS and not d.startswith(("config-", "."))
        )
        for name in sorted(names):
            if (
                name.endswith(".py")
                and name not in _SKIP_FILES
                and not name.startswith("_sysconfigdata")
            ):
                files.append(Path(root) / name)
    return sorted(files, key=lambda p: p.relative_to(stdlib).as_posix())


def _module_docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):  # lib2to3 fixtures, unreadable files
        return ""
    parts: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= _MIN_CHARS:
                parts.append(doc.strip())
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return "\n\n".join(parts)


PYTHON_DOCS = "python-docs"
"""The name that stands for `python_docs()` among text files (`--texts python-docs`)."""


def read_texts(specs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Documents from a list of text sources, in order: `python-docs` (the built-in corpus),
    or .txt / .jsonl files and directories of them (see `texts_from_files`)."""
    if isinstance(specs, str | os.PathLike):
        specs = [specs]
    if not specs:
        raise AekitError("no texts given: name .txt/.jsonl files, or python-docs")
    docs: list[str] = []
    for spec in specs:
        if str(spec) == PYTHON_DOCS and not Path(spec).exists():
            docs.extend(python_docs())
        else:
            docs.extend(texts_from_files([spec]))
    return docs
