"""Service: what the HTTP routes do, over one FewShotClassifier.

Store changes run one at a time (under one lock, in worker threads, never on the event loop),
with the thumbnails and the shot tally kept in step; reads that list the store take the same
lock, so they see a change completely or not at all. Every image of a register is decoded
before the store is touched, so a failed request changes nothing. Queries go through the
QueryBatcher. With an owner (`fewshot_metric.store.journal.StoreOwner`), each change is
journalled before it returns, the journal is folded in the background, and `running()` folds
and releases the store when the app stops.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool

from fewshot_metric import __version__
from fewshot_metric.classifier import FewShotClassifier, Prediction
from fewshot_metric.serve.batcher import QueryBatcher
from fewshot_metric.serve.errors import StorageFullError
from fewshot_metric.serve.folding import FoldLoop, Owner
from fewshot_metric.serve.options import ServeOptions
from fewshot_metric.serve.thumbnails import Thumbnails
from fewshot_metric.serve.uploads import Upload, decode_image
from fewshot_metric.store import check_label

log = logging.getLogger("fewshot_metric.serve")


class Service:
    """`classifier` served with `options`; `owner` (optional) owns its store on disk;
    `thumbnails` default to memory only; `on_batch(n_images)` is told of each query batch."""

    def __init__(self, classifier: FewShotClassifier, options: ServeOptions,
                 owner: Owner | None = None, thumbnails: Thumbnails | None = None,
                 on_batch: Callable[[int], None] = lambda n: None):
        self.classifier = classifier
        self.options = options
        self.owner = owner
        self.thumbnails = thumbnails if thumbnails is not None else Thumbnails()
        self.decode = partial(decode_image, max_pixels=options.max_image_pixels)
        self.batcher = QueryBatcher(classifier, options.max_batch, options.max_wait_ms / 1000,
                                    self.decode, on_batch)
        self.shots = classifier.store.shots
        self._lock = threading.Lock()  # changes one at a time; listings see whole changes

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The app's lifespan: the batcher and the fold loop run inside it; on exit the owner
        folds and releases the store."""
        self.batcher.start()
        folds = FoldLoop(self.owner) if self.owner is not None else None
        if folds is not None:
            folds.start()
        try:
            yield
        finally:
            await self.batcher.stop()
            if folds is not None:
                await run_in_threadpool(folds.stop)
            if self.owner is not None:
                await run_in_threadpool(self.owner.close)
            self.thumbnails.close()

    # ----------------------------------------------------------------- changes
    def register(self, shots: dict[str, list[Upload]]) -> list[dict[str, Any]]:
        """Adds the uploads to their classes, all or none -> per label given: {"label" (as
        stored), "count", "added", "created"}."""
        stored = {given: check_label(given, "label") for given in shots}
        images = {given: [self.decode(upload) for upload in uploads]
                  for given, uploads in shots.items()}
        with self._lock:
            created = {given: given not in self.classifier for given in shots}
            with _durable():
                counts = self.classifier.register_many(images)
            self.shots += sum(map(len, images.values()))
            for given, class_images in images.items():
                self._cosmetic(self.thumbnails.put, stored[given], class_images[0],
                               created[given])
        return [{"label": stored[given], "count": counts[given], "added": len(images[given]),
                 "created": created[given]} for given in shots]

    def remove(self, label: str) -> dict[str, Any]:
        stored = check_label(label, "label")
        with self._lock:
            count = self.classifier.store.count(label)
            with _durable():
                self.classifier.remove(label)
            self.shots -= count
            self._cosmetic(self.thumbnails.remove, stored)
            return {"removed": stored, "classes": len(self.classifier)}

    def rename(self, old: str, new: str) -> dict[str, Any]:
        stored_old, stored_new = check_label(old, "label"), check_label(new, "new_label")
        with self._lock:
            with _durable():
                self.classifier.rename(old, new)
            self._cosmetic(self.thumbnails.rename, stored_old, stored_new)
        return {"label": stored_new}

    @staticmethod
    def _cosmetic(change: Callable[..., None], *args: Any) -> None:
        """A thumbnail change: one that fails is logged, never fails the request (the store
        change it follows is done)."""
        try:
            change(*args)
        except (sqlite3.Error, OSError, ValueError):
            log.exception("could not update the thumbnail of %r", args[0])

    # ----------------------------------------------------------------- reads
    def page(self, offset: int, limit: int) -> dict[str, Any]:
        with self._lock:
            total, counts = len(self.classifier), self.classifier.store.counts_page(offset, limit)
        classes = [{"label": label, "count": count} for label, count in counts.items()]
        return {"total": total, "offset": offset, "limit": limit, "classes": classes}

    def count(self, label: str) -> dict[str, Any]:
        stored = check_label(label, "label")
        with self._lock:
            return {"label": stored, "count": self.classifier.store.count(label)}

    def info(self) -> dict[str, Any]:
        classifier, store = self.classifier, self.classifier.store
        with self._lock:
            classes, shots = len(store), self.shots
        journal = None if self.owner is None else {"pending": self.owner.pending,
                                                   "last_fold": self.owner.last_fold}
        return {"classes": classes, "shots": shots, "dim": store.dim, "metric": store.metric,
                "mode": store.mode,
                "index": {"kind": store.index_kind, "options": store.index_options},
                "fingerprint": store.fingerprint, "checkpoint": classifier.embedder.source,
                "reject_distance": classifier.reject_distance,
                "temperature": classifier.temperature, "journal": journal,
                "version": __version__}

    def thumbnail(self, label: str) -> bytes | None:
        return self.thumbnails.get(check_label(label, "label"))

    # ----------------------------------------------------------------- queries
    async def query(self, uploads: list[Upload], k: int) -> list[Prediction]:
        self.classifier.check_query(k)  # refuse a bad k before queueing
        return await self.batcher.query(uploads, k)

    def predict(self, embeddings: list[list[float]], k: int) -> list[Prediction]:
        return self.classifier.predict(embeddings, k)


@contextmanager
def _durable() -> Iterator[None]:
    """A store change whose journal write fails for want of disk space -> StorageFullError
    (507); the store has undone the change."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(f"the store's disk is full, so the change was not made "
                                   f"({error}); free some space and send it again") from error
        raise
