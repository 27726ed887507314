"""Activations of a network as data: load a transformers model (`models`), name its sites
(`sites`), cut texts (`texts`) into contexts (`tokens`), record the sites with forward hooks
(`hooks`), then stream the rows (`stream`) or write them to an on-disk store (`capture`,
`store`); `source` opens either for training, and `synthetic` draws rows with a known sparse
dictionary. Nothing here imports transformers until a model is loaded.
"""

from aekit.data.activations.capture import capture
from aekit.data.activations.hooks import SiteHooks
from aekit.data.activations.models import load_model
from aekit.data.activations.sites import parse_site, resolve_sites
from aekit.data.activations.source import ActivationSource, OpenedSource, open_source
from aekit.data.activations.store import ActivationStore, StoreView, StoreWriter
from aekit.data.activations.stream import Chunk, ModelStream
from aekit.data.activations.synthetic import make_sparse_data
from aekit.data.activations.texts import python_docs, read_texts, texts_from_files
from aekit.data.activations.tokens import contexts_from_texts, special_token_ids

__all__ = [
    "ActivationSource",
    "ActivationStore",
    "Chunk",
    "ModelStream",
    "OpenedSource",
    "SiteHooks",
    "StoreView",
    "StoreWriter",
    "capture",
    "contexts_from_texts",
    "load_model",
    "make_sparse_data",
    "open_source",
    "parse_site",
    "python_docs",
    "read_texts",
    "resolve_sites",
    "special_token_ids",
    "texts_from_files",
]
