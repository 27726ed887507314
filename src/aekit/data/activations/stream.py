"""Activations streamed straight from a model, without a store: `ModelStream` runs the model
over batches of contexts with `SiteHooks` and hands out what they record, as `Chunk`s or as
training batches (the `StoreView` protocol)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aekit.data.activations.hooks import SiteHooks
from aekit.data.activations.sites import resolve_sites
from aekit.data.activations.store import (
    DEFAULT_BUFFER_ROWS,
    mixed_batches,
    ordered_batches,
    to_batch,
)
from aekit.data.activations.tokens import special_token_ids
from aekit.errors import AekitError


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_context_length(model: nn.Module, length: int) -> None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        limit = getattr(config, attr, None)
        if isinstance(limit, int) and length > limit:
            raise AekitError(
                f"contexts of {length} tokens are longer than {type(model).__name__} takes "
                f"({attr} = {limit}); choose a context length of at most {limit}"
            )


@dataclass
class Chunk:
    """The rows captured from one batch of contexts."""

    activations: dict[str, torch.Tensor]
    """site -> (n, width), in the model's dtype, on the model's device."""
    context: torch.Tensor
    """(n,) int64: which context (row of `contexts`) each row comes from."""
    position: torch.Tensor
    """(n,) int64: the token position within its context."""
    token: torch.Tensor
    """(n,) int64: the token id."""


class ModelStream:
    """Activations straight from a model, no store: `chunks()` yields what the hooks
    record per batch of contexts, and `batches()` offers the `StoreView` protocol (x from
    sites[0], y from sites[1] when there are two) so an SAE can train from the model.

    With `exclude_special`, rows at structural special tokens ([CLS], [SEP], BOS, EOS,
    [PAD]; see `special_token_ids`) are dropped; their ids come from `tokenizer` or
    `special_ids`. `len()` is the exact number of rows a pass yields.
    """

    spec = None

    def __init__(
        self,
        model: nn.Module,
        sites: str | Sequence[str],
        contexts: torch.Tensor,
        batch_contexts: int = 32,
        exclude_special: bool = True,
        *,
        tokenizer: Any = None,
        special_ids: Sequence[int] | None = None,
        max_rows: int | None = None,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        name: str = "model activations",
    ) -> None:
        self.model = model
        self.sites = resolve_sites(model, sites)
        contexts = torch.as_tensor(contexts)
        if contexts.dim() != 2 or contexts.dtype.is_floating_point or contexts.shape[0] == 0:
            raise AekitError(
                f"contexts must be a non-empty (n, context_length) integer tensor "
                f"(got {tuple(contexts.shape)} {contexts.dtype})"
            )
        _check_context_length(model, contexts.shape[1])
        if not isinstance(batch_contexts, int) or batch_contexts < 1:
            raise AekitError(f"batch_contexts must be a positive integer (got {batch_contexts})")
        if max_rows is not None and max_rows < 1:
            raise AekitError(f"max_rows must be positive (got {max_rows})")
        self.contexts = contexts.long().cpu()
        self.batch_contexts = batch_contexts
        self.exclude_special = exclude_special
        if exclude_special:
            if special_ids is None and tokenizer is None:
                raise AekitError(
                    "exclude_special needs the tokenizer (tokenizer=...) or special_ids=... "
                    "to know which tokens are special"
                )
            ids = special_ids if special_ids is not None else special_token_ids(tokenizer)
            self.special_ids = sorted({int(i) for i in ids})
        else:
            self.special_ids = []
        self.max_rows = max_rows
        self.buffer_rows = buffer_rows
        self.name = name
        self._device = torch.device("cpu")
        self._widths: dict[str, int] | None = None
        self._dtype: torch.dtype | None = None
        self.last_stats: dict[str, int] = {}

    def keep_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the token positions whose rows are kept."""
        if not self.special_ids:
            return torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        specials = torch.tensor(self.special_ids, dtype=ids.dtype, device=ids.device)
        return ~torch.isin(ids, specials)

    def __len__(self) -> int:
        n = int(self.keep_mask(self.contexts).sum())
        return n if self.max_rows is None else min(n, self.max_rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.widths[self.sites[0]],)

    @property
    def target_shape(self) -> tuple[int, ...]:
        """The shape of one paired target (y): the second site's, when there are two."""
        return (self.widths[self.sites[1]],) if len(self.sites) == 2 else ()

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> ModelStream:
        """The same stream with batches landing on `device` (the model stays where it is)."""
        moved = ModelStream.__new__(ModelStream)
        moved.__dict__.update(self.__dict__)
        moved._device = torch.device(device)
        return moved

    @property
    def widths(self) -> dict[str, int]:
        """Width of every site (one context through the model, the first time)."""
        if self._widths is None:
            ids = self.contexts[:1].to(_device_of(self.model))
            mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
            with SiteHooks(self.model, self.sites) as hooks, torch.no_grad():
                values = hooks.run(self.model, ids, mask)
            self._widths = {s: int(v.shape[-1]) for s, v in values.items()}
            self._dtype = next(iter(values.values())).dtype
        return self._widths

    def chunks(self, order: torch.Tensor | None = None) -> Iterator[Chunk]:
        """One `Chunk` per batch of contexts, in `order` (default: as given), until max_rows."""
        order = torch.arange(len(self.contexts)) if order is None else order
        device = _device_of(self.model)
        left = self.max_rows
        positions = torch.arange(self.contexts.shape[1])
        # Hooks and no_grad are entered per forward pass, never held across a yield: the
        # consumer (an SAE training step, another model call) runs between yields, with
        # gradients on and the model free of our hooks.
        for i in range(0, len(order), self.batch_contexts):
            index = order[i : i + self.batch_contexts]
            ids = self.contexts[index]
            mask = self.keep_mask(ids)
            with SiteHooks(self.model, self.sites) as hooks, torch.no_grad():
                values = hooks.run(self.model, ids.to(device), mask.to(device))
            context = index[:, None].expand_as(ids)[mask]
            position = positions[None, :].expand_as(ids)[mask]
            token = ids[mask]
            if left is not None and len(token) > left:
                values = {s: v[:left] for s, v in values.items()}
                context, position, token = context[:left], position[:left], token[:left]
            yield Chunk(dict(values), context, position, token)
            if left is not None:
                left -= len(token)
                if left <= 0:
                    return

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator:
        """Batches like `StoreView.batches`. Shuffled, the contexts run in an order drawn from
        `generator` and rows mix through a buffer of `buffer_rows` rows."""
        if not shuffle:
            blocks = ([c.activations[s] for s in self.sites] for c in self.chunks())
            for cols in ordered_batches(blocks, batch_size, drop_last):
                yield to_batch(cols, self._device, self.sites)
            return
        widths = self.widths
        order = torch.randperm(len(self.contexts), generator=generator)

        def blocks_of() -> Iterator:
            for chunk in self.chunks(order):
                cols = [chunk.activations[s].cpu() for s in self.sites]

                def fill(dest: list[torch.Tensor], cols=cols) -> None:
                    for d, c in zip(dest, cols, strict=True):
                        d.copy_(c)

                yield len(chunk.token), fill

        stats: dict[str, int] = {}
        self.last_stats = stats
        columns = [(widths[s], self._dtype) for s in self.sites]
        for cols in mixed_batches(
            blocks_of(),
            columns,
            batch_size=batch_size,
            buffer_rows=self.buffer_rows,
            max_block_rows=self.batch_contexts * self.contexts.shape[1],
            generator=generator,
            drop_last=drop_last,
            total_rows=len(self),
            stats=stats,
        ):
            yield to_batch(cols, self._device, self.sites)
