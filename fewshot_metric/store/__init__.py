"""The serving side: a FAISS-backed store of named classes, built from a few embeddings each.

`PrototypeStore(dim, metric, mode, index, fingerprint)`: `add` / `remove` / `rename` classes,
`search` for the nearest ones, `save` / `PrototypeStore.load` a folder (`mmap=True`: served
from the files, read-only). Index kinds are in `index_factory`, the folder format in
`persistence`, the per-class columns in `row_table`.
"""

from fewshot_metric.store.index_factory import KIND_OPTIONS
from fewshot_metric.store.persistence import StoreFormatError, StoreLockedError, exclusive_lock
from fewshot_metric.store.prototype_store import (
    MODES,
    UNKNOWN,
    IncompatibleEmbedderError,
    PrototypeStore,
    ReadOnlyStoreError,
    SearchResult,
    UnknownClassError,
    check_label,
)

__all__ = [
    "KIND_OPTIONS",
    "MODES",
    "UNKNOWN",
    "IncompatibleEmbedderError",
    "PrototypeStore",
    "ReadOnlyStoreError",
    "SearchResult",
    "StoreFormatError",
    "StoreLockedError",
    "UnknownClassError",
    "check_label",
    "exclusive_lock",
]
