"""`eval.json` of an SAE run: reconstruction and sparsity on the held-out activations, and the
downstream effect of splicing the SAE into the model the activations came from."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from aekit.errors import AekitError
from aekit.sae.train import OpenedSource

log = logging.getLogger("aekit")

SPLICE_CONTEXTS = 64
"""Held-out contexts the spliced model is run on."""


def held_out_metrics(
    model: Any,
    opened: OpenedSource,
    source_model: SourceModel | str | None = None,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Metrics on the held-out rows, and with `source_model` (the model, or a note why it is
    missing) the downstream effect of splicing, under "splice"."""
    from aekit.sae.metrics import sae_metrics

    metrics = sae_metrics(model, opened.val, batch_size=batch_size)
    if source_model is not None:
        metrics["splice"] = splice_metrics(model, opened, source_model)
    return metrics


@dataclass
class SourceModel:
    """The transformers model the activations came from, with its tokenizer."""

    model: Any
    tokenizer: Any

    def unembedding(self) -> torch.Tensor | None:
        """(vocab, d): the output embedding when the model has one; for an encoder without
        an LM head (BERT), the input word embeddings, which its masked-LM head shares."""
        out = self.model.get_output_embeddings()
        if out is None:
            out = self.model.get_input_embeddings()
        return None if out is None else out.weight.detach()


def load_source_model(name: str | None, device: Any = "cpu") -> SourceModel | str:
    """The model named in the activations' manifest, or a note saying why it is not here."""
    from aekit.sae.capture import load_model

    if name is None:
        return "the activations name no model"
    try:
        model, tokenizer, _ = load_model(name)
    except AekitError as e:
        log.warning("no downstream evaluation or token strings: %s", e)
        return str(e)
    return SourceModel(model.to(device), tokenizer)


def splice_metrics(model: Any, opened: OpenedSource, source: SourceModel | str) -> dict[str, Any]:
    """Splice the SAE into its model on held-out contexts (a note when it cannot be)."""
    from aekit.sae.splice import splice_effect

    if isinstance(source, str):
        return {"note": source}
    if opened.contexts is None:
        return {"note": "no held-out contexts to run the model on"}
    site = opened.sites if len(opened.sites) > 1 else opened.sites[0]
    return splice_effect(
        source.model,
        site,
        model,
        opened.contexts[-SPLICE_CONTEXTS:],
        exclude_special=bool(opened.special_ids),
        special_ids=opened.special_ids,
    )
