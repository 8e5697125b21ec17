"""The app over a StoreOwner: changes journalled as they are acknowledged, folds in the
background, and the owner folded and released when the app stops."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from serve_helpers import parts, shots
from starlette.testclient import TestClient

from fewshot_metric import FewShotClassifier, PrototypeStore
from fewshot_metric.serve import create_app
from fewshot_metric.serve.folding import FoldLoop
from fewshot_metric.store.journal import StoreOwner


def test_changes_are_journalled_then_folded_when_the_app_stops(
        tiny_checkpoint: Path, glyph_images: Path, names: list[str], tmp_path: Path) -> None:
    path = tmp_path / "store"
    FewShotClassifier.from_checkpoint(tiny_checkpoint).save(path)
    owner = StoreOwner.open(path, describe="a test app", fold_entries=1000, fold_seconds=60.0)
    classifier = FewShotClassifier.from_store(owner.store, path)
    with TestClient(create_app(classifier, owner=owner)) as client:
        for name in names[:3]:
            client.post("/register", data={"label": name},
                        files=parts(shots(glyph_images, name, slice(0, 3))))
        client.post("/rename", json={"label": names[2], "new_label": "renamed"})
        client.delete("/class", params={"label": names[1]})
        assert client.get("/info").json()["journal"] == {"pending": 5, "last_fold": None}
        assert "fewshot_journal_pending 5.0" in client.get("/metrics").text
        expected = {names[0]: 3, "renamed": 3}
        assert PrototypeStore.load(path).counts == expected  # readers see snapshot + journal
    assert owner.pending == 0 and owner.last_fold is not None  # the lifespan closed it
    assert PrototypeStore.load(path, mmap=True).counts == expected
    StoreOwner.open(path, describe="the next owner").close()  # released


class FakeOwner:
    """Counts the calls the server makes; its first fold fails."""

    def __init__(self):
        self.pending, self.last_fold = 7, 1234.5
        self.folds = self.closes = 0
        self.folded = threading.Event()

    def fold_if_due(self) -> None:
        self.folds += 1
        if self.folds == 1:
            raise OSError("the disk went away")
        self.folded.set()

    def close(self) -> None:
        self.closes += 1


def test_the_fold_loop_retries_after_a_failed_fold(caplog) -> None:
    owner = FakeOwner()
    loop = FoldLoop(owner, interval=0.01)
    with caplog.at_level(logging.ERROR, "fewshot_metric.serve"):
        loop.start()
        assert owner.folded.wait(timeout=10)  # the second call, after the failed first
        loop.stop()
    assert "folding the journal failed" in caplog.text and "the disk went away" in caplog.text
    calls = owner.folds
    time.sleep(0.05)
    assert owner.folds == calls  # stopped


def test_the_app_reports_and_closes_its_owner(classifier: FewShotClassifier) -> None:
    owner = FakeOwner()
    with TestClient(create_app(classifier, owner=owner)) as client:
        assert client.get("/info").json()["journal"] == {"pending": 7, "last_fold": 1234.5}
        assert owner.closes == 0
    assert owner.closes == 1
