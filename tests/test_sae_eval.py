"""SAE evaluation and interpretation: metrics against closed forms and brute force, splicing
into tiny random transformers, and the feature browser."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch
from torch import nn

import aekit
from aekit.data.activations.store import ActivationStore, StoreWriter
from aekit.data.tensor_data import Batch, TensorData
from aekit.errors import AekitError
from aekit.eval.sparse import sae_metrics
from aekit.eval.splice import splice_effect
from aekit.report.features import build_feature_browser, collect_latent_stats
from aekit.sparse import SparseCode
from sae_fixtures import sample_texts, tiny_models  # noqa: F401

transformers = pytest.importorskip("transformers")


# --- stand-ins ------------------------------------------------------------------------------

SAE_RECIPES = {
    "topk": "sae-topk",
    "relu": "sae-relu",
    "jumprelu": "sae-jumprelu",
    "abstopk": "sae-abstopk",
}
K_SPARSE = ("topk", "abstopk")


def build_sae(activation, d, n, k):
    """A real SAE (an `aekit.Autoencoder`) of that activation's recipe; k for k-sparse ones."""
    options = {"k": k} if activation in K_SPARSE else {}
    return aekit.build(SAE_RECIPES[activation], (d,), latent_dim=n, **options)


def encoder_bias(sae):
    """b_enc: a stand-in's own, an aekit model's encoder's."""
    return sae.encoder.b_enc if isinstance(sae, aekit.Autoencoder) else sae.b_enc


class LinearSAE(nn.Module):
    """z = act(x W_encᵀ + b_enc), x̂ = z W_dec + b_dec: the sparse-model protocol of
    `aekit.Autoencoder` (latent_dim, paired, encode, decode, reconstruct, decoder_directions)
    with chosen weights."""

    def __init__(self, W_enc, W_dec, b_enc=None, b_dec=None, relu=True, transcoder=False):
        super().__init__()
        self.W_enc = nn.Parameter(W_enc.float())
        self.W_dec = nn.Parameter(W_dec.float())
        self.b_enc = nn.Parameter(torch.zeros(len(W_enc)) if b_enc is None else b_enc.float())
        self.b_dec = nn.Parameter(torch.zeros(W_dec.shape[1]) if b_dec is None else b_dec.float())
        self.relu = relu
        self.latent_dim, self.d_in = W_enc.shape
        self.d_out = W_dec.shape[1]
        self.paired = transcoder

    def encode(self, x):
        z = x @ self.W_enc.T + self.b_enc
        return z.relu() if self.relu else z

    def decode(self, z, source=None):
        return z @ self.W_dec + self.b_dec

    def decoder_directions(self):
        return self.W_dec.detach()

    def reconstruct(self, x):
        return self.decode(self.encode(x))


class TopKSAE(LinearSAE):
    """The k largest pre-activations (ReLU'd), with the sparse encode/decode pair."""

    def __init__(self, *args, k=2, **kwargs):
        super().__init__(*args, **kwargs)
        self.k = k

    def encode_sparse(self, x):
        top = (x @ self.W_enc.T + self.b_enc).topk(self.k, dim=1)
        return SparseCode(top.values.relu(), top.indices)

    def decode_sparse(self, values, indices, source=None):
        return (values.unsqueeze(-1) * self.W_dec[indices]).sum(1) + self.b_dec

    def encode(self, x):
        code = self.encode_sparse(x)
        z = torch.zeros(len(x), self.latent_dim)
        return z.scatter(1, code.indices, code.values)


class PairData:
    """Batches of (input, target) rows, as a two-site store view yields for a transcoder."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def batches(self, batch_size):
        for i in range(0, len(self.x), batch_size):
            yield Batch(self.x[i : i + batch_size], self.y[i : i + batch_size])


class Replace(nn.Module):
    """An 'SAE' whose reconstruct is any function (identity, zero, a constant, a module)."""

    def __init__(self, fn, transcoder=False):
        super().__init__()
        self.fn = fn
        self.paired = transcoder

    def reconstruct(self, x):
        return self.fn(x)


def _data(n=300, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Nonnegative with exact zeros, so an identity dictionary has a known L0; no row is all
    # zeros (its cosine with anything is 0 by convention).
    x = (torch.randn(n, d, generator=g) + 0.3).relu()
    x[:, 0] += 0.1
    return x


# --- metrics --------------------------------------------------------------------------------


def test_identity_dictionary_reconstructs_exactly_with_l0_the_nonzeros():
    x = _data()
    eye = torch.eye(6)
    m = sae_metrics(LinearSAE(eye, eye, relu=False), TensorData(x), batch_size=64)
    assert m["n"] == 300
    assert m["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert m["explained_variance"] == pytest.approx(1.0)
    assert m["mse"] == pytest.approx(0.0, abs=1e-12)
    assert m["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert m["relative_reconstruction_bias"] == pytest.approx(1.0)
    assert m["l0"] == pytest.approx((x != 0).sum().item() / len(x))
    assert m["density"] == pytest.approx((x != 0).double().mean(0).tolist())


def test_zero_decoder_fvu_closed_forms():
    x = _data()
    mu = x.double().mean(0)
    var = (x.double() - mu).square().sum()
    zero = torch.zeros(6, 6)
    # Predicting the mean explains nothing: fvu = 1.
    m = sae_metrics(LinearSAE(torch.eye(6), zero, b_dec=mu.float()), TensorData(x))
    assert m["fvu"] == pytest.approx(1.0, rel=1e-6)
    # Predicting 0: fvu = Σ||x||² / Σ||x − x̄||² = 1 + N||x̄||² / Σ||x − x̄||².
    m = sae_metrics(LinearSAE(torch.eye(6), zero), TensorData(x))
    assert m["fvu"] == pytest.approx((x.double().square().sum() / var).item(), rel=1e-9)
    assert m["cosine"] == 0.0
    assert math.isnan(m["relative_reconstruction_bias"])


def test_shrunk_reconstruction_bias_and_mse():
    x = _data()
    m = sae_metrics(LinearSAE(torch.eye(6), 0.5 * torch.eye(6), relu=False), TensorData(x))
    assert m["relative_reconstruction_bias"] == pytest.approx(0.5)
    assert m["mse"] == pytest.approx((0.25 * x.double().square().mean()).item(), rel=1e-9)
    assert m["cosine"] == pytest.approx(1.0, abs=1e-6)


def _random_sae(d=6, n=16, seed=1, cls=LinearSAE, **kwargs):
    g = torch.Generator().manual_seed(seed)
    return cls(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) / 4, **kwargs)


def test_densities_dead_and_dense_match_brute_force():
    x = _data(d=6)
    sae = _random_sae()
    with torch.no_grad():
        sae.W_enc[3] = -1.0  # never fires on nonnegative data: dead
        sae.b_enc[5] = 100.0  # always fires: dense
        z = sae.encode(x)
    m = sae_metrics(sae, TensorData(x), batch_size=37, dense_threshold=0.5)
    fired = (z != 0).double().mean(0)
    assert m["density"] == pytest.approx(fired.tolist())
    assert m["dead_latents"] == int((fired == 0).sum()) >= 1
    assert m["dead_fraction"] == m["dead_latents"] / 16
    assert m["dead_window_rows"] == 300
    assert m["dense_latents"] == int((fired > 0.5).sum()) >= 1
    assert m["l0"] == pytest.approx((z != 0).sum().item() / 300)
    hist = m["log10_density_histogram"]
    assert sum(hist["counts"]) + hist["dead"] == 16
    assert len(hist["edges"]) == len(hist["counts"]) + 1
    assert hist["edges"][0] <= math.log10(1 / 300) and hist["edges"][-1] == 0.0


def test_metrics_do_not_depend_on_the_batch_size_and_stop_at_max_rows():
    x = _data()
    sae = _random_sae()
    a = sae_metrics(sae, TensorData(x), batch_size=7)
    b = sae_metrics(sae, TensorData(x), batch_size=1000)
    for key in ("l0", "fvu", "mse", "cosine", "relative_reconstruction_bias"):
        assert a[key] == pytest.approx(b[key], rel=1e-9)
    assert a["density"] == b["density"]
    c = sae_metrics(sae, TensorData(x), batch_size=16, max_rows=50)
    d = sae_metrics(sae, TensorData(x[:50]), batch_size=50)
    assert c["n"] == 50
    assert c["fvu"] == pytest.approx(d["fvu"], rel=1e-9)
    assert c["density"] == d["density"]


def test_sparse_code_path_equals_the_dense_path():
    x = _data()
    sparse = _random_sae(cls=TopKSAE, k=3)
    dense = LinearSAE(sparse.W_enc.data, sparse.W_dec.data)
    dense.encode = sparse.encode  # the same latents, decoded densely
    a, b = sae_metrics(sparse, TensorData(x)), sae_metrics(dense, TensorData(x))
    for key in ("l0", "fvu", "cosine"):
        assert a[key] == pytest.approx(b[key], rel=1e-6)
    assert a["density"] == b["density"]
    assert a["l0"] <= 3


def test_transcoder_metrics_use_the_target_rows():
    x = _data()
    w = torch.randn(6, 4)
    y = x @ w
    # Identity encoder, decoder w: predicts y exactly.
    tc = LinearSAE(torch.eye(6), w, relu=False, transcoder=True)
    m = sae_metrics(tc, PairData(x, y), batch_size=50)
    assert m["fvu"] == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(AekitError, match="transcoder"):
        sae_metrics(tc, TensorData(x))


@pytest.mark.parametrize("activation", ["topk", "relu", "jumprelu", "abstopk"])
def test_metrics_of_a_real_sae_agree_with_its_training_terms(activation):
    x = torch.randn(200, 6) * 3 + 1
    sae = build_sae(activation, 6, 24, k=3)
    sae.initialise(x)
    with torch.no_grad():
        terms = sae(x).terms
    # The training fvu is in normalised space over the batch: the same ratio on one batch.
    m = sae_metrics(sae, TensorData(x), batch_size=64)
    assert m["fvu"] == pytest.approx(terms["fvu"].item(), rel=1e-5)
    assert m["l0"] == pytest.approx(terms["l0"].item(), rel=1e-6)
    z = sae.encode(x).detach()
    assert m["density"] == pytest.approx((z != 0).double().mean(0).tolist())


def test_metrics_of_a_skip_transcoder():
    x, y = torch.randn(120, 6), torch.randn(120, 4)
    tc = aekit.build(
        "transcoder", (6,), latent_dim=16, output_shape=(4,), bottleneck="topk", k=2, skip=True
    )
    tc.initialise(x, y)
    with torch.no_grad():
        tc.decoder.W_skip.normal_()  # a skip term that matters
        err = (y - tc.reconstruct(x)).double().square().sum()
    m = sae_metrics(tc, PairData(x, y), batch_size=50)
    var = (y.double() - y.double().mean(0)).square().sum()
    assert m["fvu"] == pytest.approx((err / var).item(), rel=1e-6)


# --- splicing -------------------------------------------------------------------------------

V = 40


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=V, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval()


def _bert_config():
    return transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=V,
        max_position_embeddings=32,
    )


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    return transformers.BertModel(_bert_config()).eval()


def _contexts(n=6, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[1, 8:] = 0  # one padded context
    ids[1, 8:] = 0
    return ids, mask


def _hooks(model):
    """Every hook on the model's modules (transformers installs some of its own)."""
    return [(*m._forward_hooks, *m._forward_pre_hooks) for m in model.modules()]


IDENTITY = Replace(lambda x: x)
ZERO = Replace(torch.zeros_like)


def test_identity_splice_costs_nothing_in_a_causal_lm(gpt2):
    ids, mask = _contexts()
    before = gpt2(input_ids=ids, attention_mask=mask).logits
    hooks = _hooks(gpt2)
    r = splice_effect(gpt2, "transformer.h.0", IDENTITY, ids, attention_mask=mask, batch_size=4)
    assert r["kind"] == "causal_lm"
    assert r["ce_increase"] == pytest.approx(0.0, abs=1e-5)
    assert r["loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert r["kl_spliced"] == pytest.approx(0.0, abs=1e-5)
    assert r["ce_zero"] != pytest.approx(r["ce_clean"])
    # 6 contexts of 12 tokens predict 11 each, but the padded one only 7.
    assert r["tokens"] == 5 * 11 + 7
    assert _hooks(gpt2) == hooks
    assert torch.equal(gpt2(input_ids=ids, attention_mask=mask).logits, before)


def test_zero_reconstruction_is_zero_ablation_and_a_mean_is_mean_ablation(gpt2):
    ids, mask = _contexts()
    site = "transformer.h.1.mlp"
    r = splice_effect(gpt2, site, ZERO, ids, attention_mask=mask)
    assert r["ce_spliced"] == pytest.approx(r["ce_zero"], abs=1e-6)
    assert r["loss_recovered"] == pytest.approx(0.0, abs=1e-5)
    # The site's mean over the real tokens, by brute force, spliced in as a constant.
    seen = []
    handle = gpt2.get_submodule(site).register_forward_hook(lambda m, a, out: seen.append(out))
    gpt2(input_ids=ids, attention_mask=mask)
    handle.remove()
    mean = seen[0][mask.bool()].mean(0)
    r = splice_effect(gpt2, site, Replace(lambda x: mean.expand_as(x)), ids, attention_mask=mask)
    assert r["ce_spliced"] == pytest.approx(r["ce_mean"], abs=1e-5)


def test_splicing_a_real_sae(gpt2):
    ids, mask = _contexts()
    seen = []
    site = gpt2.get_submodule("transformer.h.0")
    handle = site.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    gpt2(input_ids=ids, attention_mask=mask)
    handle.remove()
    sae = aekit.build("sae-topk", (32,), latent_dim=64, k=4)
    sae.initialise(seen[0][mask.bool()])
    r = splice_effect(gpt2, "transformer.h.0", sae, ids, attention_mask=mask, exclude_special=[7])
    assert all(math.isfinite(r[k]) for k in ("ce_clean", "ce_spliced", "ce_zero", "ce_mean"))
    assert r["kl_spliced"] >= 0 and r["kl_zero"] >= 0
    assert sae.training  # modes restored
    # The same as splicing its reconstruct by hand.
    by_hand = splice_effect(
        gpt2,
        "transformer.h.0",
        Replace(sae.reconstruct),
        ids,
        attention_mask=mask,
        exclude_special=[7],
    )
    assert by_hand["ce_spliced"] == pytest.approx(r["ce_spliced"], rel=1e-6)


def test_input_site_and_transcoder_splices(gpt2):
    ids, mask = _contexts()
    hooks = _hooks(gpt2)
    r = splice_effect(gpt2, "transformer.h.1:input", IDENTITY, ids, attention_mask=mask)
    assert r["ce_increase"] == pytest.approx(0.0, abs=1e-5)
    r = splice_effect(gpt2, "transformer.h.1:input", ZERO, ids, ablations=("zero",))
    assert r["ce_spliced"] == pytest.approx(r["ce_zero"], abs=1e-6)
    # A "transcoder" that is a copy of the MLP predicts the MLP's output exactly (the MLP
    # itself would re-enter the hooks).
    mlp = copy.deepcopy(gpt2.get_submodule("transformer.h.0.mlp"))
    tc = Replace(mlp, transcoder=True)
    pair = ("transformer.h.0.mlp:input", "transformer.h.0.mlp")
    r = splice_effect(gpt2, pair, tc, ids, attention_mask=mask)
    assert r["site"] == list(pair)
    assert r["ce_increase"] == pytest.approx(0.0, abs=1e-5)
    assert r["loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert _hooks(gpt2) == hooks
    assert r["loss_recovered_mean"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(AekitError, match="transcoder"):
        splice_effect(gpt2, "transformer.h.0.mlp", tc, ids)
    with pytest.raises(AekitError, match="did not run before"):
        splice_effect(gpt2, ("transformer.h.1.mlp:input", "transformer.h.0.mlp"), tc, ids)
    with pytest.raises(AekitError, match=r"transformer.h.9"):
        splice_effect(gpt2, "transformer.h.9", IDENTITY, ids)


def test_identity_splice_keeps_the_sentence_embedding(bert):
    ids, mask = _contexts()
    before = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    hooks = _hooks(bert)
    r = splice_effect(bert, "encoder.layer.0.output", IDENTITY, ids, attention_mask=mask)
    assert r["kind"] == "embedding"
    assert r["cos_spliced"] == pytest.approx(1.0, abs=1e-5)
    assert r["token_cos_spliced"] == pytest.approx(1.0, abs=1e-5)
    assert r["embedding_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert r["cos_zero"] < 1 - 1e-3
    assert r["tokens"] == int(mask.sum())
    assert _hooks(bert) == hooks
    assert torch.equal(bert(input_ids=ids, attention_mask=mask).last_hidden_state, before)
    r = splice_effect(bert, "encoder.layer.0.output", ZERO, ids, attention_mask=mask)
    assert r["cos_spliced"] == pytest.approx(r["cos_zero"], abs=1e-6)
    assert r["embedding_recovered"] == pytest.approx(0.0, abs=1e-5)


def test_excluded_positions_keep_their_clean_activation(bert):
    ids, mask = _contexts()
    ids[:, 0] = 2  # a [CLS]-like token at the start of every context
    site = "encoder.layer.1.output"
    everything = mask.bool()
    r = splice_effect(
        bert, site, ZERO, ids, attention_mask=mask, ablations=("zero",), exclude_special=everything
    )
    assert r["cos_spliced"] == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(r["embedding_recovered"])  # nothing replaced: 0 / 0
    with pytest.raises(AekitError, match="no position to replace"):
        splice_effect(bert, site, ZERO, ids, attention_mask=mask, exclude_special=everything)
    with_cls = splice_effect(bert, site, ZERO, ids, attention_mask=mask, ablations=("zero",))
    without = splice_effect(
        bert, site, ZERO, ids, attention_mask=mask, ablations=("zero",), exclude_special=[2]
    )
    assert without["cos_spliced"] != pytest.approx(with_cls["cos_spliced"], abs=1e-6)
    assert without["cos_spliced"] == pytest.approx(without["cos_zero"], abs=1e-6)
    with pytest.raises(AekitError, match="special_ids"):
        splice_effect(bert, site, ZERO, ids, exclude_special=True)
    by_flag = splice_effect(
        bert, site, ZERO, ids, attention_mask=mask, exclude_special=True, special_ids=[2]
    )
    assert by_flag["cos_spliced"] == pytest.approx(without["cos_spliced"], abs=1e-7)


def test_masked_lm_objective():
    torch.manual_seed(0)
    mlm = transformers.BertForMaskedLM(_bert_config()).eval()
    ids, mask = _contexts()
    r = splice_effect(
        mlm, "bert.encoder.layer.0.output", IDENTITY, ids, attention_mask=mask, mask_token_id=4
    )
    assert r["kind"] == "masked_lm"
    assert r["tokens"] > 0
    assert r["ce_increase"] == pytest.approx(0.0, abs=1e-5)
    assert r["loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    # Without a mask token the encoder objective is used, on the last hidden states.
    r = splice_effect(mlm, "bert.encoder.layer.0.output", IDENTITY, ids, attention_mask=mask)
    assert r["kind"] == "embedding"
    assert r["cos_spliced"] == pytest.approx(1.0, abs=1e-5)


# --- feature browser ------------------------------------------------------------------------

NAMES = ["[PAD]", "<script>", "a&b", '"q"', "</script><!--", *[f"w{i}" for i in range(5, V)]]


class Tokenizer:
    """The two things the browser asks of a tokenizer, with hostile token strings."""

    pad_token_id = 0

    def convert_ids_to_tokens(self, ids):
        return [NAMES[i] for i in ids]


def _store(tmp_path, n_contexts=5, length=10, d=6, seed=0):
    """A store of every position of random contexts (the last one padded), float32."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (n_contexts, length), generator=g)
    ids[-1, 7:] = 0
    context = torch.arange(n_contexts).repeat_interleave(length)
    position = torch.arange(length).repeat(n_contexts)
    with StoreWriter(tmp_path / "store", {"h": d}, dtype="float32", shard_rows=7) as w:
        w.add({"h": _data(len(context), d, seed)}, context, position, ids.flatten())
        w.add_contexts(ids)
    return ActivationStore(tmp_path / "store")


def _brute_top(z, k):
    """Each latent's k largest nonzero activations and their rows (ties: earliest row)."""
    order = torch.argsort(z, dim=0, descending=True, stable=True)[:k]
    values = z.gather(0, order)
    return values.T, torch.where(values.T != 0, order.T, -1)


def _real_sae(activation):
    sae = build_sae(activation, 6, 12, k=2)
    sae.initialise(_data(50, 6))
    return sae


@pytest.mark.parametrize(
    "make, shift",
    [
        (lambda: _random_sae(n=12), 1.0),
        (lambda: _random_sae(n=12, cls=TopKSAE), 1.0),
        (lambda: _real_sae("topk"), 0.3),
        (lambda: _real_sae("relu"), 0.05),
    ],
    ids=["dense", "sparse", "topk", "relu"],
)
def test_latent_stats_match_brute_force(tmp_path, make, shift):
    store = _store(tmp_path)
    sae = make()
    with torch.no_grad():
        # Sparser, so that some latents fire on fewer rows than top_k (and some do fire).
        encoder_bias(sae).sub_(shift)
    x = store.read("h", 0, len(store))
    z = sae.encode(x).detach()
    stats = collect_latent_stats(sae, store, "h", top_k=4, batch_size=6)
    values, rows = _brute_top(z, 4)
    assert stats.rows == len(store) == 50
    assert torch.equal(stats.count, (z != 0).sum(0))
    assert torch.allclose(stats.total, z.double().sum(0))
    assert torch.equal(stats.top_rows, rows)
    fired = rows >= 0
    assert torch.equal(stats.top_values[fired], values[fired])
    assert bool((stats.top_values[~fired] == -math.inf).all())
    assert bool((~fired).any()) and bool(fired.any())  # padding and real top rows both
    part = collect_latent_stats(sae, store, "h", latents=[7, 2], top_k=4, max_rows=20)
    values, rows = _brute_top(z[:20], 4)
    assert torch.equal(part.top_rows, rows[[7, 2]])
    assert torch.equal(part.count, (z[:20] != 0).sum(0)[[7, 2]])


class PageParser(HTMLParser):
    """The page's tags and the text of its script elements."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def _page(tmp_path, **kwargs):
    store = _store(tmp_path)
    sae = _random_sae(n=12)
    page = build_feature_browser(
        tmp_path / "browser", sae, store, "h", tokenizer=Tokenizer(), top_k=3, window=2, **kwargs
    )
    parser = PageParser()
    parser.feed(page.read_text())
    parser.close()
    return store, sae, page, parser


def test_feature_browser_data_match_brute_force(tmp_path):
    W_U = torch.randn(V, 6)
    store, sae, page, parser = _page(tmp_path, unembedding=W_U, page_size=5)
    data = json.loads((tmp_path / "browser" / "features.json").read_text())
    # The page embeds the same data, and nothing from a token became a tag.
    assert [tag for tag, _ in parser.tags].count("script") == 2
    assert json.loads(parser.scripts[0]) == data
    text = page.read_text()
    assert text.count("<script") == 2 and text.count("</script>") == 2
    assert "</script><!--" not in text and "\\u003c/script\\u003e\\u003c!--" in text
    assert sorted(r["latent"] for r in data["latents"]) == list(range(12))
    densities = [r["density"] for r in data["latents"]]
    assert densities == sorted(densities, reverse=True)
    z = sae.encode(store.read("h", 0, len(store))).detach()
    tokens = store.context_tokens(torch.arange(5)).flatten()
    for record in data["latents"]:
        i = record["latent"]
        assert record["density"] == pytest.approx((z[:, i] != 0).float().mean().item())
        assert record["count"] == int((z[:, i] != 0).sum())
        fired = z[:, i][z[:, i] != 0]
        if len(fired):
            assert record["mean_activation"] == pytest.approx(fired.mean().item(), rel=1e-4)
        top = record["contexts"]
        assert [c["row"] for c in top] == _brute_top(z, 3)[1][i][: len(top)].tolist()
        for c in top:
            # The highlighted token is the row's token, with its neighbours (no padding).
            assert c["tokens"][c["at"]] == tokens[c["row"]]
            assert all(t != 0 for j, t in enumerate(c["tokens"]) if j != c["at"])
            assert len(c["tokens"]) <= 5
            assert all(data["tokens"][str(t)] == NAMES[t] for t in c["tokens"])
        logits = W_U @ sae.W_dec[i].detach()
        assert [t for t, _ in record["promoted"]] == logits.topk(10).indices.tolist()
        assert [t for t, _ in record["suppressed"]] == (-logits).topk(10).indices.tolist()


NODE_DOM = """
// The few DOM calls the page makes, enough to run its script under node.
class El {
  constructor(tag) { Object.assign(this, {tag, children: [], style: {}, textContent: '',
    className: '', title: '', id: '', listeners: {}}); }
  appendChild(c) { this.children.push(c); return c; }
  append(...cs) { cs.forEach((c) => this.appendChild(c)); }
  replaceChildren(...cs) { this.children = cs; }
  addEventListener(type, f) { this.listeners[type] = f; }
}
const fs = require('fs');
const [json, script] = process.argv.slice(2).map((f) => fs.readFileSync(f, 'utf8'));
const byId = {features: {textContent: json}};
global.document = {
  getElementById: (id) => byId[id] || (byId[id] = new El('div')),
  createElement: (tag) => new El(tag),
  createTextNode: (text) => ({tag: '#text', textContent: text, children: []}),
};
const walk = (e, tag, out = []) => {
  if (e.tag === tag) out.push(e.textContent);
  e.children.forEach((c) => walk(c, tag, out));
  return out;
};
const state = () => ({ids: byId.rows.children.map((r) => r.id), marks: walk(byId.rows, 'mark'),
  label: byId.page.textContent});
eval(script);
const first = state();
byId.next.listeners.click();
const second = state();
byId.sort.listeners.change({target: {value: 'latent:asc'}});
console.log(JSON.stringify({first, second, sorted: state()}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_feature_browser_script_renders_pages(tmp_path):
    *_, parser = _page(tmp_path, page_size=5)
    data = json.loads(parser.scripts[0])
    files = {"dom.js": NODE_DOM, "data.json": parser.scripts[0], "page.js": parser.scripts[1]}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    run = subprocess.run(
        ["node", *(str(tmp_path / name) for name in files)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    out = json.loads(run.stdout)
    order = [f"latent-{r['latent']}" for r in data["latents"]]
    assert out["first"]["ids"] == order[:5] and out["first"]["label"] == "page 1 of 3"
    assert out["second"]["ids"] == order[5:10]
    assert out["sorted"]["ids"] == [f"latent-{i}" for i in range(5)]
    # Highlighted tokens arrive as text (hostile names included), one per shown context.
    marks = [
        data["tokens"][str(c["tokens"][c["at"]])]
        for r in data["latents"][:5]
        for c in r["contexts"]
    ]
    assert out["first"]["marks"] == marks and marks


def test_feature_browser_reads_a_real_sae_through_its_decoder_directions(tmp_path):
    store = _store(tmp_path)
    sae = _real_sae("topk")
    W_U = torch.randn(V, 6, generator=torch.Generator().manual_seed(3))
    build_feature_browser(tmp_path / "b", sae, store, "h", unembedding=W_U, top_k=2)
    data = json.loads((tmp_path / "b" / "features.json").read_text())
    assert data["n_latents"] == sae.latent_dim == 12
    z = sae.encode(store.read("h", 0, len(store))).detach()
    assert sum(r["count"] for r in data["latents"]) == int((z != 0).sum()) > 0
    # The decoder's rows in the raw output space: the normalised rows over the target scale.
    raw = sae.decoder.W_dec.detach() / sae.decoder.target_scale
    for record in data["latents"]:
        assert record["count"] == int((z[:, record["latent"]] != 0).sum())
        logits = W_U @ raw[record["latent"]]
        top = logits.topk(10)
        assert [t for t, _ in record["promoted"]] == top.indices.tolist()
        assert [v for _, v in record["promoted"]] == pytest.approx(top.values.tolist(), rel=1e-4)


def test_feature_browser_without_tokenizer_and_errors(tmp_path):
    store = _store(tmp_path)
    sae = _random_sae(n=12)
    build_feature_browser(tmp_path / "b", sae, store, "h", latents=[3, 5], top_k=2)
    data = json.loads((tmp_path / "b" / "features.json").read_text())
    assert sorted(r["latent"] for r in data["latents"]) == [3, 5]
    assert all(name.isdigit() for name in data["tokens"].values())
    with pytest.raises(AekitError, match="no site"):
        build_feature_browser(tmp_path / "b", sae, store, "nope")
    with pytest.raises(AekitError, match="latent indices"):
        build_feature_browser(tmp_path / "b", sae, store, "h", latents=[12])
    with pytest.raises(AekitError, match="unembedding"):
        build_feature_browser(tmp_path / "b", sae, store, "h", unembedding=torch.zeros(V, 5))


def test_metrics_over_a_store_view_equal_those_over_its_rows(tmp_path):
    store = _store(tmp_path)
    sae = _random_sae()
    a = sae_metrics(sae, store.stream("h"), batch_size=7)
    b = sae_metrics(sae, TensorData(store.read("h", 0, len(store))), batch_size=64)
    for key in ("n", "l0", "fvu", "cosine", "dead_latents"):
        assert a[key] == pytest.approx(b[key], rel=1e-9)


def test_end_to_end_on_a_captured_store(tmp_path, tiny_models):  # noqa: F811
    from aekit.data.activations.capture import capture
    from aekit.data.activations.models import load_model
    from aekit.data.activations.tokens import contexts_from_texts, special_token_ids

    model, tokenizer, _ = load_model(str(tiny_models.bert))
    contexts = contexts_from_texts(tokenizer, sample_texts(), 12)
    site = "encoder.layer.0"
    store = capture(model, tokenizer, site, contexts, tmp_path / "store", progress=False)
    sae = aekit.build("sae-topk", (32,), latent_dim=64, k=4)
    sae.initialise(store.sample(site, 100))
    m = sae_metrics(sae, store.stream(site), batch_size=50)
    assert m["n"] == len(store) and m["l0"] == pytest.approx(4.0)
    build_feature_browser(tmp_path / "browser", sae, store, site, tokenizer=tokenizer, top_k=3)
    data = json.loads((tmp_path / "browser" / "features.json").read_text())
    special = set(tokenizer.convert_ids_to_tokens(special_token_ids(tokenizer)))
    highlighted = [
        data["tokens"][str(c["tokens"][c["at"]])] for r in data["latents"] for c in r["contexts"]
    ]
    assert highlighted and not special & set(highlighted)  # capture dropped those rows
    assert "[CLS]" in {name for name in data["tokens"].values()}  # ... but they are context
    # Special tokens keep their clean activation: with them all excluded, a zero "SAE" on
    # the other rows changes the embedding exactly as the zero-ablation does.
    r = splice_effect(
        model, site, ZERO, contexts, exclude_special=True, special_ids=store.manifest["special_ids"]
    )
    assert r["cos_spliced"] == pytest.approx(r["cos_zero"], abs=1e-6)
    r = splice_effect(model, site, sae, contexts, exclude_special=True, tokenizer=tokenizer)
    assert -1 <= r["cos_spliced"] <= 1 + 1e-6
