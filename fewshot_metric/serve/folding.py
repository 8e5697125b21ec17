"""FoldLoop: folds the store's journal in the background while the server runs."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

log = logging.getLogger("fewshot_metric.serve")


class Owner(Protocol):
    """What the server needs of `fewshot_metric.store.journal.StoreOwner`."""

    pending: int
    last_fold: float | None

    def fold_if_due(self) -> None: ...

    def close(self) -> None: ...


class FoldLoop:
    """Calls `owner.fold_if_due()` every `interval` seconds in a daemon thread until `stop`.
    A failed fold is logged and tried again at the next tick: the journal keeps every change
    meanwhile."""

    def __init__(self, owner: Owner, interval: float = 1.0):
        self.owner = owner
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fold", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops the loop, waiting for a fold in progress to finish."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.owner.fold_if_due()
            except Exception:
                log.exception("folding the journal failed; trying again in %g s",
                              self.interval)
