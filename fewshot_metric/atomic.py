"""Atomic file writes: write to a temp file in the same folder, fsync, rename over the target."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def temp_prefix(path: Path) -> str:
    """Temp files and folders for `path` are named `.NAME.partial-XXXXXXXX.tmp` beside it."""
    return f".{path.name}.partial-"


def remove_leftover_temps(path: str | Path) -> list[Path]:
    """Deletes the temps that killed writes of `path` left beside it (exact name pattern, so no
    other file's temps); call it only where no other write of `path` can be running.
    Returns what it deleted."""
    path = Path(path)
    pattern = re.compile(re.escape(temp_prefix(path)) + r"[a-z0-9_]{8}\.tmp")
    found = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)] \
        if path.parent.is_dir() else []
    for leftover in found:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return found


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Calls `write(tmp_path)` and renames the result to `path`; `path` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | Path) -> None:
    """Makes the renames inside folder `path` durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replaces `path` with `text` (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
