"""Thumbnails: a 64x64 PNG per class, the first shot registered through the server.

Kept in SQLite beside the store folder (`NAME.thumbnails.sqlite`, see `thumbnails_path`), keyed
by the class label as a value (its UTF-8 bytes), never as a path. Cosmetic: the store does not
know of them, a missing one is fine (the page shows a placeholder).
"""

from __future__ import annotations

import io
import sqlite3
import threading
from pathlib import Path

from PIL import Image, ImageOps

SIZE = 64


def thumbnails_path(store: str | Path) -> Path:
    """Where the thumbnails of the store folder `store` live: beside it."""
    store = Path(store)
    return store.parent / f"{store.name}.thumbnails.sqlite"


def _key(label: str) -> bytes:
    return label.encode("utf-8", "surrogatepass")  # any str, lone surrogates included


class Thumbnails:
    """label -> PNG bytes in the SQLite file `path` (":memory:": kept in memory only).
    Safe to share between threads."""

    def __init__(self, path: str | Path = ":memory:"):
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        # cosmetic: a write-ahead log and no fsync per change (the store's own journal is
        # the durable one); a crash of the process loses nothing, a power cut may lose the last
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock, self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS thumbnails "
                             "(label BLOB PRIMARY KEY, png BLOB NOT NULL)")

    def put(self, label: str, image: Image.Image, replace: bool) -> None:
        """Keeps a thumbnail of `image` for `label`; an existing one stays unless `replace`."""
        png = io.BytesIO()
        ImageOps.pad(image.convert("RGB"), (SIZE, SIZE), color="white").save(png, "PNG")
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock, self._db:
            self._db.execute(f"{verb} INTO thumbnails VALUES (?, ?)",
                             (_key(label), png.getvalue()))

    def get(self, label: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT png FROM thumbnails WHERE label = ?",
                                   (_key(label),)).fetchone()
        return None if row is None else row[0]

    def rename(self, old: str, new: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM thumbnails WHERE label = ?", (_key(new),))
            self._db.execute("UPDATE thumbnails SET label = ? WHERE label = ?",
                             (_key(new), _key(old)))

    def remove(self, label: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM thumbnails WHERE label = ?", (_key(label),))

    def close(self) -> None:
        with self._lock:
            self._db.close()
