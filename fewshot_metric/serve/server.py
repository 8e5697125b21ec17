"""serve_store: what `fewshot-metric serve` does. Opens the store folder (creating it first
when a checkpoint is given and the folder is new or empty), owns it (`StoreOwner`: one writer,
every change journalled before it is acknowledged), serves it with uvicorn until SIGTERM or
SIGINT, then folds the journal and releases the store (the app's lifespan does)."""

from __future__ import annotations

import gc
import ipaddress
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from fewshot_metric.classifier import FewShotClassifier
from fewshot_metric.serve.app import create_app
from fewshot_metric.serve.options import ServeOptions
from fewshot_metric.serve.thumbnails import Thumbnails, thumbnails_path
from fewshot_metric.store import exclusive_lock
from fewshot_metric.store.persistence import check_new_store_folder, store_exists


def read_token_file(path: str | Path) -> str:
    """The token on the first line of `path`, stripped; an empty one is refused."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"the token file {path} has no token on its first line: write a "
                         f"secret there (e.g. `python -c 'import secrets; "
                         f"print(secrets.token_urlsafe())' > {path}`)")
    return token


def create_store(store: str | Path, checkpoint: str | Path, device: str | None) -> None:
    """Saves an empty store for `checkpoint` at `store` unless one is there by then; the
    folder must be new or empty."""
    folder = Path(store)
    folder.parent.mkdir(parents=True, exist_ok=True)  # for the lock file
    with exclusive_lock(folder):
        if store_exists(folder):
            return
        check_new_store_folder(folder)
        FewShotClassifier.from_checkpoint(checkpoint, device).save(folder)


def serve_store(store: str | Path, checkpoint: str | Path | None = None,
                device: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                options: ServeOptions | None = None, fold_entries: int = 1000,
                fold_seconds: float = 60.0, log_level: str = "info") -> None:
    """Serves the store folder `store` on http://host:port until SIGTERM or SIGINT."""
    from fewshot_metric.store.journal import StoreOwner

    options = options if options is not None else ServeOptions()
    if not store_exists(store):
        if checkpoint is None:
            raise ValueError(f"there is no store at {store} yet: pass --checkpoint CKPT to "
                             f"create one for that model")
        create_store(store, checkpoint, device)
    if options.token is None and not _is_loopback(host):
        print(f"fewshot-metric serve: warning: serving on {host} without --token-file: "
              f"anyone who can reach it can change the store", file=sys.stderr)
    owner = StoreOwner.open(store, describe=f"fewshot-metric serve http://{host}:{port}",
                            fold_entries=fold_entries, fold_seconds=fold_seconds)
    try:
        classifier = FewShotClassifier.from_store(owner.store, store, checkpoint, device)
        app = create_app(classifier, options, owner=owner,
                         thumbnails=Thumbnails(thumbnails_path(store)))
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, lifespan="on",
                                               log_level=log_level))
        # The model, torch and the store are hundreds of thousands of long-lived objects: a
        # full garbage collection walked them all, a 100-250 ms pause every few hundred
        # requests (p99). Frozen, collections walk only what requests make.
        gc.collect()
        gc.freeze()
        with _stop_quietly():
            server.run()
    finally:
        owner.close()  # idempotent: done by the app's lifespan unless it never started


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@contextmanager
def _stop_quietly() -> Iterator[None]:
    """uvicorn handles SIGTERM / SIGINT with a graceful shutdown, then raises the signal
    again into the handlers it found: these make that a plain return (exit status 0, no
    KeyboardInterrupt traceback)."""
    stops = (signal.SIGTERM, signal.SIGINT)
    before = {sig: signal.signal(sig, lambda number, frame: None) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
