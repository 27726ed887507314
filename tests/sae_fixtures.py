"""Shared helpers and fixtures for the SAE tests: tiny random transformers with tiny
word-level tokenizers, saved once per session, and a synthetic activation store writer.

Use from a test module::

    from sae_fixtures import tiny_models, write_synthetic_store  # noqa: F401

(`tiny_models` is a session-scoped pytest fixture; importing it into the module makes it
available to that module's tests.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from aekit.data.activations.store import ActivationStore, StoreWriter

# fmt: off
WORDS = [
    "the", "a", "cat", "dog", "bird", "sat", "ran", "flew", "on", "under", "over", "mat",
    "tree", "roof", "fast", "slow", "big", "small", "red", "blue", "green", "and", "or",
    "but", "then", "it", "saw", "heard",
]
# fmt: on
"""The vocabulary of the tiny tokenizers (plus their special tokens)."""
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GPT2_SPECIALS = ("<|endoftext|>", "<unk>")
HIDDEN = 32
LAYERS = 2
MAX_POSITIONS = 64


def make_tokenizer(kind: str = "bert"):
    """A word-level fast tokenizer over WORDS: BERT-style ([CLS]/[SEP]/[PAD]/[MASK]/[UNK])
    or GPT-2-style (<|endoftext|> as BOS and EOS, <unk>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = BERT_SPECIALS if kind == "bert" else GPT2_SPECIALS
    vocab = {w: i for i, w in enumerate((*specials, *WORDS))}
    unk = "[UNK]" if kind == "bert" else "<unk>"
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            mask_token="[MASK]",
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )


def sample_texts(n_docs: int = 12, seed: int = 0) -> list[str]:
    """Deterministic random documents of 5-40 words from WORDS (a few unknown words too)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 40))]
        if rng.random() < 0.5:
            words[rng.randrange(len(words))] = "zebra"  # out of vocabulary: [UNK]
        docs.append(" ".join(words))
    return docs


@dataclass(frozen=True)
class TinyModels:
    """Directories holding a tiny random model and its tokenizer (save_pretrained)."""

    bert: Path
    """BertModel: hidden 32, 2 layers; sites encoder.layer.N."""
    gpt2: Path
    """GPT2LMHeadModel: n_embd 32, 2 layers; sites transformer.h.N."""


def build_tiny_models(root: Path) -> TinyModels:
    """Build, seed and save the two tiny models under `root` (the global RNG is left as it
    was)."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    root = Path(root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bert_tok = make_tokenizer("bert")
        bert = BertModel(
            BertConfig(
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=2,
                intermediate_size=64,
                vocab_size=len(bert_tok),
                max_position_embeddings=MAX_POSITIONS,
            )
        )
        gpt_tok = make_tokenizer("gpt2")
        eos = gpt_tok.eos_token_id
        gpt2 = GPT2LMHeadModel(
            GPT2Config(
                n_embd=HIDDEN,
                n_layer=LAYERS,
                n_head=2,
                vocab_size=len(gpt_tok),
                n_positions=MAX_POSITIONS,
                bos_token_id=eos,
                eos_token_id=eos,
            )
        )
    paths = TinyModels(bert=root / "tiny-bert", gpt2=root / "tiny-gpt2")
    for model, tok, path in ((bert, bert_tok, paths.bert), (gpt2, gpt_tok, paths.gpt2)):
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return paths


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    pytest.importorskip("transformers")
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def write_synthetic_store(
    path: Path,
    rows: int = 1000,
    sites: dict[str, int] | None = None,
    *,
    dtype: str = "float32",
    shard_rows: int = 128,
    context_length: int = 10,
    add_rows: int = 70,
    seed: int = 0,
    **writer_options,
) -> tuple[ActivationStore, dict[str, torch.Tensor]]:
    """Write a store of `rows` random rows (added `add_rows` at a time, so adds straddle
    shards) and return it with what it should hold: {site: float32 values as stored (rounded
    to `dtype`), "context", "position", "token"}. Row i comes from context i // L, position
    i % L, with token 7 * i % 101; contexts.safetensors holds matching token ids."""
    sites = sites or {"a": 8}
    g = torch.Generator().manual_seed(seed)
    data = {s: torch.randn(rows, w, generator=g) for s, w in sites.items()}
    index = torch.arange(rows)
    context, position, token = index // context_length, index % context_length, 7 * index % 101
    n_contexts = -(-rows // context_length)
    token_ids = 7 * torch.arange(n_contexts * context_length).reshape(-1, context_length) % 101
    with StoreWriter(path, sites, dtype=dtype, shard_rows=shard_rows, **writer_options) as w:
        for i in range(0, rows, add_rows):
            part = slice(i, i + add_rows)
            w.add({s: v[part] for s, v in data.items()}, context[part], position[part], token[part])
        w.add_contexts(token_ids)
    stored = {s: v.to(getattr(torch, dtype)).float() for s, v in data.items()}
    stored |= {"context": context, "position": position, "token": token}
    return ActivationStore(path), stored
