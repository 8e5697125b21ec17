"""The serving side: a FAISS-backed store of named classes, built from a few embeddings each.

`PrototypeStore(dim, metric, mode, index, fingerprint)`: `add` / `remove` / `rename` classes,
`search` for the nearest ones, `save` / `PrototypeStore.load` a folder (`mmap=True`: served
from the files, read-only). Index kinds are in `index_factory`, the folder format in
`persistence`, the per-class columns in `row_table`, the label rule (NFC) in `labels`.
`StoreOwner.open(path)` (`journal`) owns a store for a server: its changes are durable on
return, written to the folder's journal and folded into the snapshot now and then.
"""

from fewshot_metric.store.index_factory import KIND_OPTIONS
from fewshot_metric.store.journal import JournalPendingError, StoreOwner
from fewshot_metric.store.labels import LabelCollisionError, check_label
from fewshot_metric.store.persistence import (
    StoreFormatError,
    StoreLockedError,
    StoreOwnedError,
    exclusive_lock,
)
from fewshot_metric.store.prototype_store import (
    MODES,
    UNKNOWN,
    ClassExistsError,
    IncompatibleEmbedderError,
    PrototypeStore,
    ReadOnlyStoreError,
    SearchResult,
    UnknownClassError,
)

__all__ = [
    "KIND_OPTIONS",
    "MODES",
    "UNKNOWN",
    "ClassExistsError",
    "IncompatibleEmbedderError",
    "JournalPendingError",
    "LabelCollisionError",
    "PrototypeStore",
    "ReadOnlyStoreError",
    "SearchResult",
    "StoreFormatError",
    "StoreLockedError",
    "StoreOwnedError",
    "StoreOwner",
    "UnknownClassError",
    "check_label",
    "exclusive_lock",
]
