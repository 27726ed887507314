"""Range coding of integer symbols under a bank of probability tables (`TableBank`), with
constriction's `queue.RangeEncoder` (32-bit words, 24-bit probabilities, perfect=False).

A stage's symbols are coded grouped by table, each group in one call under its table's
categorical (ascending table index, and in row-major order within a group); then, for the
symbols that fell outside their table, the escape classes under `escape_pmf` and the bits of
their distances, one bit at a time. The decoder knows every symbol's table before it decodes
the stage, so it reads the same groups in the same order.
"""

from __future__ import annotations

import numpy as np
import torch

from aekit.bottlenecks.entropy import TableBank, escape_class, escape_pmf
from aekit.errors import AekitError

CODER = "constriction-range-u32-categorical-fast"


def _categorical(probabilities: torch.Tensor):
    import constriction

    return constriction.stream.model.Categorical(probabilities.numpy(), perfect=False)


def _groups(tables: torch.Tensor, count: int):
    """(table, positions of its symbols in the flat order) of each table in use."""
    flat = tables.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=count)
    start = 0
    for t in torch.nonzero(counts).flatten().tolist():
        n = int(counts[t])
        yield t, order[start : start + n]
        start += n


def encode_stage(encoder, symbols: torch.Tensor, tables: torch.Tensor, bank: TableBank) -> None:
    entries, distances = bank.entries(symbols.reshape(-1), tables.reshape(-1))
    for t, where in _groups(tables, bank.tables):
        encoder.encode(entries[where].numpy().astype(np.int32), _categorical(bank.row(t)))
    escaped = distances[_escaped(entries, tables.reshape(-1), bank)]
    if len(escaped):
        classes = escape_class(escaped)
        encoder.encode(classes.numpy().astype(np.int32), _categorical(escape_pmf()))
        for b in range(int(classes.max())):
            bits = ((escaped + 1)[classes > b] >> b) & 1
            encoder.encode(bits.numpy().astype(np.int32), _categorical(torch.ones(2)))


def decode_stage(decoder, tables: torch.Tensor, bank: TableBank) -> torch.Tensor:
    """The symbols (shaped like `tables`) of a stage coded by `encode_stage`."""
    flat = tables.reshape(-1)
    entries = torch.empty(len(flat), dtype=torch.int64)
    for t, where in _groups(tables, bank.tables):
        entries[where] = torch.from_numpy(
            decoder.decode(_categorical(bank.row(t)), len(where)).astype(np.int64)
        )
    escaped = _escaped(entries, flat, bank)
    distances = torch.zeros(len(flat), dtype=torch.int64)
    n = int(escaped.sum())
    if n:
        classes = torch.from_numpy(decoder.decode(_categorical(escape_pmf()), n).astype(np.int64))
        value = torch.ones(n, dtype=torch.int64) << classes  # the leading one of e + 1
        for b in range(int(classes.max())):
            more = classes > b
            bits = decoder.decode(_categorical(torch.ones(2)), int(more.sum())).astype(np.int64)
            value[more] |= torch.from_numpy(bits) << b
        distances[escaped] = value - 1
    return bank.symbols(entries, distances, flat).reshape(tables.shape)


def _escaped(entries: torch.Tensor, tables: torch.Tensor, bank: TableBank) -> torch.Tensor:
    return (entries == 0) | (entries == bank.sizes[tables] + 1)


def new_encoder():
    import constriction

    return constriction.stream.queue.RangeEncoder()


def finish(encoder) -> bytes:
    return encoder.get_compressed().astype("<u4").tobytes()


def new_decoder(payload: bytes):
    import constriction

    if len(payload) % 4:
        raise AekitError("the payload is not a whole number of 32-bit words (corrupted)")
    return constriction.stream.queue.RangeDecoder(
        np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    )
