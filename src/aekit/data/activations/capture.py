"""Capturing activations into a store: one forward pass per batch of contexts records every
site (`SiteHooks`), and the rows, their tokens and the contexts go to an `ActivationStore`."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from aekit.data.activations.sites import parse_site, resolve_sites
from aekit.data.activations.store import ActivationStore, StoreWriter
from aekit.data.activations.stream import ModelStream
from aekit.data.activations.tokens import contexts_from_texts


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
        "site_kinds": {s: parse_site(s)[1] for s in sites},
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
