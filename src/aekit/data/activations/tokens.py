"""Token ids for a model: documents cut into contexts of a fixed length, shaped like the
model's training inputs, and the special tokens whose activations captures leave out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from aekit.errors import AekitError


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
