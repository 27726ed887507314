"""What splicing a sparse autoencoder into a network costs the network.

The site's activation is replaced, during the forward pass, by the SAE's reconstruction of
it (a forward hook returning the replacement); the network's own objective is then compared
with the clean run and with two ablations of the same positions that bound it from below:
zero-ablation (the activation set to 0) and mean-ablation (set to its mean over the
evaluated positions of the same contexts). Reconstruction error that the network ignores
costs nothing here, and small errors along directions it reads can cost a lot, so this is
the figure that says whether an SAE's latents explain the model's computation (Bricken et
al. 2023; Gao et al. 2024).

Objectives, by the kind of network (`kind="auto"` picks it from the model's class):

- causal LM (an LM head, e.g. GPT2LMHeadModel): next-token cross-entropy in nats per
  predicted token, CE = −(1/T) Σ_t log p(w_{t+1} | w_≤t) over the T positions whose token and
  next token are both unmasked; the increase CE_spliced − CE_clean; the fraction of the loss
  recovered (CE_zero − CE_spliced) / (CE_zero − CE_clean), 1 when splicing is free and 0 when
  it is as bad as deleting the site (`loss_recovered_mean`: the same against mean-ablation, a
  kinder baseline where zero is far off the data, as in the residual stream); and
  KL(p_clean || p_run) per token for every run.
- masked LM (BertForMaskedLM, with `mask_token_id`): the same figures on a seeded
  `mask_fraction` of the unmasked, non-excluded positions, all replaced by the mask token.
- encoder (BertModel such as all-MiniLM-L6-v2): such a model is used for its sentence
  embedding, the attention-masked mean of the last hidden states, L2-normalised (the
  sentence-transformers pooling of all-MiniLM-L6-v2), so the objective is how close that
  embedding stays: the mean over contexts of cos(e_clean, e_spliced) and of the ablations,
  the fraction recovered (cos_spliced − cos_zero) / (1 − cos_zero) (`embedding_recovered_mean`
  against mean-ablation), and the mean over unmasked tokens of the cosine between clean and
  spliced last hidden states.

Transcoders read one site and replace another: `site=(input_site, output_site)` records the
input site's activation and replaces the output site's by the transcoder's prediction from it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aekit.data.activations.sites import parse_site, resolve_sites
from aekit.data.activations.tokens import special_token_ids
from aekit.errors import AekitError
from aekit.eval.sparse import model_device, model_dtype

KINDS = ("auto", "causal_lm", "masked_lm", "embedding")
ABLATIONS = ("zero", "mean")
MIN_GAP = 1e-6
"""A zero-ablation that moves the objective by less than this (nats, or cosine) leaves the
fraction recovered undefined (NaN): the site barely matters to these contexts."""

Replacement = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(rows read at the input site (m, d_in), rows of the replaced site (m, d_out)) -> the
replacements (m, d_out)."""


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the site's activation is recorded."""


def site_module(model: nn.Module, site: str) -> tuple[nn.Module, bool]:
    """The module of `site` (capture's naming: "name", "name:output" or "name:input") and
    whether the site is its input."""
    name, kind = parse_site(site)
    try:
        module = model.get_submodule(name)
    except AttributeError:
        resolve_sites(model, name)  # raises the capture's message, listing the modules
        raise
    return module, kind == "input"


def _first_tensor(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Callable[[Any], Any]]:
    """A module call's first input and a function that puts a replacement in its place."""
    if args:
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            return value, lambda new, key=key: (args, {**kwargs, key: new})
    raise AekitError("the site's module was called without a tensor input")


def _output_tensor(output: Any) -> tuple[torch.Tensor, Callable[[Any], Any]]:
    """A module's output (its element 0 if a tuple) and a function that replaces it."""
    if isinstance(output, torch.Tensor):
        return output, lambda new: new
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0], lambda new: (new, *output[1:])
    raise AekitError(
        f"the site's module returns {type(output).__name__}, not a tensor or a tuple whose "
        "first element is one: choose another site"
    )


@contextmanager
def _hook(module: nn.Module, is_input: bool, fn: Callable) -> Iterator[None]:
    """Call `fn(activation, put)` at a site during forward passes; `put(new)` returns what
    the hook returns to swap the activation for `new`. The hook is removed on exit, always."""
    if is_input:

        def pre(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
            act, put = _first_tensor(args, kwargs)
            return fn(act, put)

        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(_module: nn.Module, _args: tuple, output: Any) -> Any:
            act, put = _output_tensor(output)
            return fn(act, put)

        handle = module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


class _Splicer:
    """The hooks of one splice: `positions` (B, L) says which rows of the current batch are
    replaced, `replacement` what by (None: a clean run, the hooks do nothing)."""

    def __init__(self, model: nn.Module, site: str | tuple[str, str]) -> None:
        in_site, out_site = (site, site) if isinstance(site, str) else site
        self.source = site_module(model, in_site)
        self.target = site_module(model, out_site)
        self.positions: torch.Tensor | None = None
        self.replacement: Replacement | None = None
        self.read: torch.Tensor | None = None  # the input site's rows of this pass
        self.record: Callable[[torch.Tensor], None] | None = None

    def _read(self, act: torch.Tensor, put: Callable) -> None:
        self.read = act

    def _replace(self, act: torch.Tensor, put: Callable) -> Any:
        if act.dim() != 3 or act.shape[:2] != self.positions.shape:
            raise AekitError(
                f"the site gives shape {tuple(act.shape)}; splicing needs (batch, tokens, width) "
                f"= ({self.positions.shape[0]}, {self.positions.shape[1]}, d) activations, once "
                "per forward pass"
            )
        if self.record is not None:
            self.record(act[self.positions])
            raise _Stop
        if self.replacement is None:
            return None
        source = act
        if self.source != self.target:
            if self.read is None:
                raise AekitError(
                    "the transcoder's input site did not run before its output site in the "
                    "forward pass: give (input_site, output_site) in the model's order"
                )
            source, self.read = self.read, None
        new = act.clone()
        replaced = self.replacement(source[self.positions], act[self.positions])
        new[self.positions] = replaced.to(act.dtype)
        return put(new)

    @contextmanager
    def hooks(self) -> Iterator[None]:
        same = self.source == self.target
        try:
            if same:
                with _hook(*self.target, self._replace):
                    yield
            else:
                with _hook(*self.source, self._read), _hook(*self.target, self._replace):
                    yield
        finally:
            self.read = None


def model_kind(model: nn.Module, mask_token_id: int | None = None) -> str:
    """causal_lm, masked_lm (only when a mask token is given) or embedding, from the class."""
    from transformers.models.auto import modeling_auto

    name = type(model).__name__
    if name in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        return "causal_lm"
    masked_lm = name in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES.values()
    if masked_lm and mask_token_id is not None:
        return "masked_lm"
    return "embedding"


def _excluded(
    contexts: torch.Tensor,
    exclude: bool | Iterable[int] | torch.Tensor | None,
    tokenizer: Any,
    special_ids: Iterable[int] | None,
) -> torch.Tensor:
    """The (n, L) positions that keep their clean activation (see `splice_effect`)."""
    if exclude is None or exclude is False:
        return torch.zeros_like(contexts, dtype=torch.bool)
    if exclude is True:
        if special_ids is None and tokenizer is None:
            raise AekitError(
                "exclude_special needs the tokenizer (tokenizer=...) or special_ids=... (a "
                "store's manifest lists them) to know which tokens are special"
            )
        exclude = special_ids if special_ids is not None else special_token_ids(tokenizer)
    if isinstance(exclude, torch.Tensor) and exclude.dtype == torch.bool:
        if exclude.shape != contexts.shape:
            raise AekitError(
                f"exclude_special has shape {tuple(exclude.shape)}, the contexts "
                f"{tuple(contexts.shape)}: they must match"
            )
        return exclude.cpu()
    ids = torch.as_tensor([int(i) for i in exclude], dtype=contexts.dtype)
    return torch.isin(contexts, ids)


def _check(
    contexts: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The contexts (int64) and attention mask (bool, default all ones), on the CPU (batches
    move to the model's device one at a time)."""
    contexts = torch.as_tensor(contexts)
    if contexts.ndim != 2 or contexts.dtype.is_floating_point or len(contexts) == 0:
        raise AekitError(
            f"contexts must be token ids of shape (n, context_length), n > 0; got "
            f"{contexts.dtype} of shape {tuple(contexts.shape)}"
        )
    contexts = contexts.cpu().long()
    if attention_mask is None:
        return contexts, torch.ones_like(contexts, dtype=torch.bool)
    if attention_mask.shape != contexts.shape:
        raise AekitError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, the contexts "
            f"{tuple(contexts.shape)}: they must match"
        )
    return contexts, attention_mask.cpu().bool()


def _masked_inputs(
    contexts: torch.Tensor,
    replaceable: torch.Tensor,
    mask_token_id: int,
    fraction: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-LM inputs: a seeded `fraction` of the replaceable positions set to the mask
    token (all of them; BERT's 80/10/10 rule is a training device). Returns the inputs and
    the boolean (n, L) of masked positions, the ones scored."""
    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(contexts.shape, generator=generator) < fraction) & replaceable
    return contexts.masked_fill(chosen, mask_token_id), chosen


@torch.no_grad()
def splice_effect(
    hf_model: nn.Module,
    site: str | tuple[str, str],
    sae: nn.Module,
    contexts: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 16,
    ablations: Iterable[str] = ABLATIONS,
    exclude_special: bool | Iterable[int] | torch.Tensor | None = False,
    tokenizer: Any = None,
    special_ids: Iterable[int] | None = None,
    kind: str = "auto",
    mask_token_id: int | None = None,
    mask_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, Any]:
    """The effect on `hf_model`'s objective (see the module docstring) of replacing the
    activation at `site` by `sae.reconstruct` of it, beside the clean run and `ablations`.

    `site` is a module name ("transformer.h.3.mlp": its output, element 0 of a tuple), or
    "name:input" (its first input), or for a transcoder the pair (input_site, output_site).
    `contexts` are token ids (n, L), run `batch_size` at a time; `attention_mask` (n, L)
    marks the real tokens (default: all). Only unmasked positions are replaced, and none
    excluded by `exclude_special`, which mirrors capture: True excludes the structural
    special tokens, their ids from `special_ids` (a store manifest's "special_ids") or else
    `special_token_ids(tokenizer)`; it may also be a list of token ids, or a boolean
    (n, L) tensor of positions. Use it when the SAE was trained on activations captured
    without special tokens: it never saw those rows, so they keep their clean activation in
    every run, ablations included, and mean-ablation's mean is over the other positions.

    Returns a JSON-ready dict: kind, site, contexts, the figures of that kind (ce_* / cos_*
    per run, with the *_recovered fraction when "zero" is among the ablations) and `tokens`,
    the positions scored.
    """
    if kind not in KINDS:
        raise AekitError(f"unknown splice objective {kind!r}; choose one of {', '.join(KINDS)}")
    ablations = tuple(ablations)
    for a in ablations:
        if a not in ABLATIONS:
            raise AekitError(f"unknown ablation {a!r}; choose from {', '.join(ABLATIONS)}")
    if sae.paired and isinstance(site, str):
        raise AekitError(
            "the SAE is a transcoder: give site=(input_site, output_site), the site it reads "
            "and the one whose activation it predicts"
        )
    if kind == "auto":
        kind = model_kind(hf_model, mask_token_id)
    if kind == "masked_lm" and mask_token_id is None:
        raise AekitError("the masked-LM objective needs mask_token_id (tokenizer.mask_token_id)")
    contexts, mask = _check(contexts, attention_mask)
    replaceable = mask & ~_excluded(contexts, exclude_special, tokenizer, special_ids)
    inputs, scored = contexts, mask
    if kind == "masked_lm":
        inputs, scored = _masked_inputs(contexts, replaceable, mask_token_id, mask_fraction, seed)

    device = model_device(hf_model)
    sae_device, sae_dtype = model_device(sae), model_dtype(sae)
    splicer = _Splicer(hf_model, site)
    was_training = (hf_model.training, sae.training)

    def batches() -> Iterator[tuple[torch.Tensor, ...]]:
        """(input ids, attention mask, replaced positions, scored positions, clean ids)."""
        for start in range(0, len(contexts), batch_size):
            part = slice(start, start + batch_size)
            tensors = (inputs, mask, replaceable, scored, contexts)
            yield tuple(t[part].to(device) for t in tensors)

    # The embedding objective reads the base model's last hidden states (a model with a head,
    # e.g. BertForMaskedLM, runs without it); the hooks sit on modules it shares.
    network = getattr(hf_model, "base_model", hf_model) if kind == "embedding" else hf_model

    # No key/value cache: every pass is a single full forward.
    extra = (
        {"use_cache": False} if "use_cache" in inspect.signature(network.forward).parameters else {}
    )

    def run(ids: torch.Tensor, m: torch.Tensor) -> Any:
        splicer.read = None  # a transcoder's input is read afresh in every pass
        return network(input_ids=ids, attention_mask=m.long(), **extra)

    def spliced(rows: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return sae.reconstruct(rows.to(sae_device, sae_dtype)).to(act.device)

    runs: dict[str, Replacement] = {"spliced": spliced}
    hf_model.eval()
    sae.eval()
    try:
        with splicer.hooks():
            if "zero" in ablations:
                runs["zero"] = lambda rows, act: torch.zeros_like(act)
            if "mean" in ablations:
                site_mean = _site_mean(splicer, run, batches())
                runs["mean"] = lambda rows, act: site_mean.to(act).expand_as(act)
            score = _lm_scores if kind in ("causal_lm", "masked_lm") else _embedding_scores
            totals = score(splicer, run, batches(), runs, causal=kind == "causal_lm")
    finally:
        hf_model.train(was_training[0])
        sae.train(was_training[1])
    site_name = site if isinstance(site, str) else list(site)
    return {"kind": kind, "site": site_name, "contexts": len(contexts), **totals}


def _site_mean(splicer: _Splicer, run: Callable, batches: Iterable) -> torch.Tensor:
    """The mean activation (float64) of the replaced site over the replaceable positions,
    each forward pass stopped as soon as the site is reached."""
    total: list[Any] = [0.0, 0]

    def record(rows: torch.Tensor) -> None:
        total[0] = total[0] + rows.double().sum(0)
        total[1] += len(rows)

    splicer.record = record
    try:
        for ids, m, replaceable, *_ in batches:
            splicer.positions = replaceable
            with suppress(_Stop):
                run(ids, m)
    finally:
        splicer.record = None
    if total[1] == 0:
        raise AekitError("no position to replace: every token is masked or excluded")
    return (total[0] / total[1]).float()


def _lm_scores(
    splicer: _Splicer, run: Callable, batches: Iterable, runs: dict[str, Replacement], causal: bool
) -> dict[str, Any]:
    """Summed cross-entropy per run and KL(clean || run) over the scored positions."""
    ce = dict.fromkeys(["clean", *runs], 0.0)
    kl = dict.fromkeys(runs, 0.0)
    tokens = 0
    for ids, m, replaceable, scored, clean_ids in batches:
        splicer.positions = replaceable
        if causal:
            # Position t predicts token t+1: score pairs whose two tokens are both real.
            where = scored[:, :-1] & scored[:, 1:]
            targets = clean_ids[:, 1:][where]
        else:
            where = scored
            targets = clean_ids[where]
        splicer.replacement = None
        logp_clean = _log_probs(run(ids, m).logits, where, causal)
        tokens += len(targets)
        ce["clean"] += F.nll_loss(logp_clean, targets, reduction="sum").item()
        for name, fn in runs.items():
            splicer.replacement = fn
            logp = _log_probs(run(ids, m).logits, where, causal)
            ce[name] += F.nll_loss(logp, targets, reduction="sum").item()
            kl[name] += F.kl_div(logp, logp_clean, log_target=True, reduction="sum").item()
        splicer.replacement = None
    if tokens == 0:
        raise AekitError("no position to score: the contexts are too short or all masked")
    out: dict[str, Any] = {f"ce_{k}": v / tokens for k, v in ce.items()}
    out.update({f"kl_{k}": v / tokens for k, v in kl.items()})
    out["ce_increase"] = out["ce_spliced"] - out["ce_clean"]
    for ablation, key in (("zero", "loss_recovered"), ("mean", "loss_recovered_mean")):
        if f"ce_{ablation}" in out:
            worst = out[f"ce_{ablation}"]
            gap = worst - out["ce_clean"]
            out[key] = (worst - out["ce_spliced"]) / gap if abs(gap) > MIN_GAP else math.nan
    out["tokens"] = tokens
    return out


def _log_probs(logits: torch.Tensor, where: torch.Tensor, causal: bool) -> torch.Tensor:
    """Log-probabilities (float32) of the scored positions, (T, vocab)."""
    if causal:
        logits = logits[:, :-1]
    return F.log_softmax(logits[where].float(), dim=-1)


def _last_hidden(output: Any) -> torch.Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        raise AekitError(
            f"{type(output).__name__} has no last_hidden_state: the embedding objective needs "
            "an encoder (e.g. BertModel)"
        )
    return hidden


def _embedding_scores(
    splicer: _Splicer, run: Callable, batches: Iterable, runs: dict[str, Replacement], causal: bool
) -> dict[str, Any]:
    """Summed cosines between the clean and each run's pooled embedding and token states."""
    cos = dict.fromkeys(runs, 0.0)
    token_cos = dict.fromkeys(runs, 0.0)
    n = tokens = 0
    for ids, m, replaceable, *_ in batches:
        splicer.positions = replaceable
        splicer.replacement = None
        h_clean = _last_hidden(run(ids, m)).float()
        e_clean = mean_pool(h_clean, m)
        n += len(ids)
        tokens += int(m.sum())
        for name, fn in runs.items():
            splicer.replacement = fn
            h = _last_hidden(run(ids, m)).float()
            cos[name] += (mean_pool(h, m) * e_clean).sum().item()
            token_cos[name] += F.cosine_similarity(h, h_clean, dim=-1)[m].sum().item()
        splicer.replacement = None
    out: dict[str, Any] = {f"cos_{k}": v / n for k, v in cos.items()}
    out.update({f"token_cos_{k}": v / tokens for k, v in token_cos.items()})
    for ablation, key in (("zero", "embedding_recovered"), ("mean", "embedding_recovered_mean")):
        if f"cos_{ablation}" in out:
            worst = out[f"cos_{ablation}"]
            gap = 1.0 - worst
            out[key] = (out["cos_spliced"] - worst) / gap if gap > MIN_GAP else math.nan
    out["tokens"] = tokens
    return out


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings (B, d): the attention-masked mean of the token states (B, L, d),
    L2-normalised, as sentence-transformers pools all-MiniLM-L6-v2."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(mean, dim=-1)


SPLICE_CONTEXTS = 64
"""Held-out contexts a spliced model is run on after training."""


def splice_metrics(
    model: nn.Module,
    opened: Any,
    source: Any,
    *,
    site: str | tuple[str, str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """`splice_effect` of a model trained on an activation source (`OpenedSource`) on the
    source's last held-out contexts, or a note saying why it cannot be measured: `source`
    is the network (`SourceModel`) or the note of why it is not at hand. `site`: where the
    model reads (and writes), by default the source's site (a transcoder's pair)."""
    if isinstance(source, str):
        return {"note": source}
    if opened.contexts is None:
        return {"note": "no held-out contexts to run the model on"}
    if site is None:
        site = tuple(opened.sites) if getattr(model, "paired", False) else opened.sites[0]
    return splice_effect(
        source.model,
        site,
        model,
        opened.contexts[-SPLICE_CONTEXTS:],
        exclude_special=bool(opened.special_ids),
        special_ids=opened.special_ids,
        seed=seed,
    )
