"""FewShotClassifier: register, query, save/load, against hand-computed nearest prototypes."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot_metric import Embedder, FewShotClassifier
from fewshot_metric.classifier import default_mode, list_images
from fewshot_metric.distances import build_distance
from fewshot_metric.model import FewShotModel
from fewshot_metric.store import (
    IncompatibleEmbedderError,
    PrototypeStore,
    ReadOnlyStoreError,
    UnknownClassError,
)
from fewshot_metric.training.checkpoint import save_checkpoint


def shots(glyph_images: Path, name: str, which: slice) -> list[Path]:
    return sorted((glyph_images / name).glob("*.png"))[which]


@pytest.fixture
def classifier(tiny_checkpoint: Path) -> FewShotClassifier:
    return FewShotClassifier.from_checkpoint(tiny_checkpoint)


def test_query_is_the_nearest_mean_of_registered_shots(classifier: FewShotClassifier,
                                                       glyph_images: Path) -> None:
    names = sorted(p.name for p in glyph_images.iterdir())
    for name in names:
        assert classifier.register(name, shots(glyph_images, name, slice(0, 3))) == 3
    queries = [path for name in names for path in shots(glyph_images, name, slice(3, 6))]
    predictions = classifier.query(queries, k=2)

    means = np.stack([classifier.embedder.embed(shots(glyph_images, name, slice(0, 3))).mean(0)
                      for name in names])
    emb = classifier.embedder.embed(queries)
    distances = ((emb[:, None, :] - means[None, :, :]) ** 2).sum(-1)  # [Q, C] by hand
    order = np.argsort(distances, 1)
    assert [p.labels for p in predictions] == [(names[a], names[b]) for a, b in order[:, :2]]
    np.testing.assert_allclose([p.distances for p in predictions],
                               np.take_along_axis(distances, order[:, :2], 1), rtol=1e-4)
    assert [p.image for p in predictions] == [str(q) for q in queries]
    assert all(abs(sum(p.scores) - 1) < 1e-5 and p.scores[0] >= p.scores[1]
               for p in predictions)
    assert not any(p.rejected for p in predictions)
    assert len(classifier.query(queries[:1], k=10)[0].labels) == len(names)  # k > classes


def test_register_adds_shots_to_an_existing_class(classifier: FewShotClassifier,
                                                  glyph_images: Path) -> None:
    name = "glyph00800"
    classifier.register(name, shots(glyph_images, name, slice(0, 2)))
    assert classifier.register(name, shots(glyph_images, name, slice(2, 5))) == 5
    expected = classifier.embedder.embed(shots(glyph_images, name, slice(0, 5))).mean(0)
    query = classifier.query(shots(glyph_images, name, slice(5, 6)))[0]
    emb = classifier.embedder.embed(shots(glyph_images, name, slice(5, 6)))[0]
    assert query.distances[0] == pytest.approx(((emb - expected) ** 2).sum(), rel=1e-4)


def test_register_is_all_or_nothing(classifier: FewShotClassifier, glyph_images: Path,
                                    tmp_path: Path) -> None:
    classifier.register("glyph00800", shots(glyph_images, "glyph00800", slice(0, 2)))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    good = shots(glyph_images, "glyph00801", slice(0, 3))
    with pytest.raises(OSError, match=r"bad\.png"):
        classifier.register("glyph00801", [*good, bad])
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        classifier.register_many({"glyph00801": good, "glyph00802": [tmp_path / "gone.png"]})
    with pytest.raises(ValueError, match="empty or whitespace-only"):
        classifier.register("  ", good)
    with pytest.raises(ValueError, match="non-empty list of images"):
        classifier.register("glyph00801", [])
    assert classifier.classes == ["glyph00800"]
    assert classifier.store.counts == {"glyph00800": 2}


def test_register_folder(classifier: FewShotClassifier, glyph_images: Path,
                         tmp_path: Path) -> None:
    counts = classifier.register_folder(glyph_images)
    assert counts == {name: 6 for name in sorted(p.name for p in glyph_images.iterdir())}
    other = tmp_path / "classes"
    shutil.copytree(glyph_images / "glyph00800", other / "new class")
    (other / "empty class").mkdir()
    with pytest.raises(FileNotFoundError, match="empty class"):
        classifier.register_folder(other)
    assert "new class" not in classifier
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        classifier.register_folder(tmp_path / "nowhere")


def test_save_load_round_trip_remembers_checkpoint_and_rejection(
        classifier: FewShotClassifier, glyph_images: Path, tmp_path: Path) -> None:
    classifier.register_folder(glyph_images)
    queries = list_images([glyph_images])
    classifier.save(tmp_path / "store")
    loaded = FewShotClassifier.load(tmp_path / "store")
    assert loaded.store.info["checkpoint"] == str(Path(classifier.embedder.source).resolve())
    assert loaded.query(queries, k=3) == classifier.query(queries, k=3)
    mapped = FewShotClassifier.load(tmp_path / "store", mmap=True)
    assert mapped.query(queries, k=3) == classifier.query(queries, k=3)
    with pytest.raises(ReadOnlyStoreError, match="loaded with mmap=True"):
        mapped.register("new", queries[:1])
    assert "new" not in mapped

    loaded.reject_distance = 0.0  # every query is farther than 0: all unknown
    loaded.save(tmp_path / "store")
    again = FewShotClassifier.load(tmp_path / "store")
    answers = again.query(queries[:3])
    assert again.reject_distance == 0.0
    assert all(p.rejected and p.label == "unknown" for p in answers)
    assert [p.distances for p in answers] == [p.distances for p in classifier.query(queries[:3])]


def test_load_refuses_another_model_and_names_a_missing_checkpoint(
        classifier: FewShotClassifier, glyph_images: Path, tmp_path: Path) -> None:
    classifier.register("glyph00800", shots(glyph_images, "glyph00800", slice(0, 2)))
    checkpoint = tmp_path / "model.safetensors"
    shutil.copy(classifier.embedder.source, checkpoint)
    classifier = FewShotClassifier.from_checkpoint(checkpoint)
    classifier.register("glyph00800", shots(glyph_images, "glyph00800", slice(0, 2)))
    classifier.save(tmp_path / "store")

    other = Embedder.from_checkpoint(checkpoint)
    with torch.no_grad():
        next(other.model.parameters()).add_(0.5)
    with pytest.raises(IncompatibleEmbedderError, match="fingerprint"):
        FewShotClassifier(other, PrototypeStore.load(tmp_path / "store"))
    save_checkpoint(tmp_path / "other.safetensors", other.model, other.meta["recipe"], {})
    with pytest.raises(IncompatibleEmbedderError, match="not the one the store was built"):
        FewShotClassifier.load(tmp_path / "store", checkpoint=tmp_path / "other.safetensors")

    moved = tmp_path / "moved.safetensors"
    checkpoint.rename(moved)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors, which is missing"):
        FewShotClassifier.load(tmp_path / "store")
    assert FewShotClassifier.load(tmp_path / "store", checkpoint=moved).classes == ["glyph00800"]


def test_default_mode_follows_the_head(tiny_checkpoint: Path) -> None:
    embedder = Embedder.from_checkpoint(tiny_checkpoint)
    assert FewShotClassifier(embedder).store.mode == "prototype"
    for head in ("siamese", "matching"):
        model = FewShotModel(embedder.model.backbone, head, {}, build_distance("cosine"))
        store = FewShotClassifier(Embedder(model, {})).store
        assert (store.mode, store.metric) == ("instance", "cosine")
        assert default_mode(head) == "instance"
    assert FewShotClassifier(embedder, mode="instance").store.mode == "instance"


def test_query_errors(classifier: FewShotClassifier, glyph_images: Path) -> None:
    image = shots(glyph_images, "glyph00800", slice(0, 1))
    with pytest.raises(ValueError, match="no classes yet"):
        classifier.query(image)
    classifier.register("glyph00800", image)
    for k in (0, -1, 1.5):
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            classifier.query(image, k=k)
    with pytest.raises(UnknownClassError, match="nope"):
        classifier.remove("nope")


def test_calibrate_rejection_limits_false_accepts(classifier: FewShotClassifier,
                                                  glyph_images: Path) -> None:
    classifier.register("glyph00800", shots(glyph_images, "glyph00800", slice(0, 3)))
    classifier.register("glyph00801", shots(glyph_images, "glyph00801", slice(0, 3)))
    known = shots(glyph_images, "glyph00800", slice(3, 6))
    unknown = [*shots(glyph_images, "glyph00802", slice(0, 6)),
               *shots(glyph_images, "glyph00803", slice(0, 6))]
    threshold = classifier.calibrate_rejection(known, unknown, false_accept_rate=0.25)
    assert classifier.reject_distance == threshold
    assert sum(not p.rejected for p in classifier.query(unknown)) <= 3  # 25% of 12
    assert any(not p.rejected for p in classifier.query(known))


def test_threads_query_while_others_register_and_remove(classifier: FewShotClassifier,
                                                        glyph_images: Path) -> None:
    names = sorted(p.name for p in glyph_images.iterdir())
    classifier.register(names[0], shots(glyph_images, names[0], slice(0, 3)))
    queries = shots(glyph_images, names[1], slice(0, 4))
    errors: list[BaseException] = []
    done = threading.Event()

    def query_loop() -> None:
        while not done.is_set():
            try:
                for p in classifier.query(queries, k=4):
                    assert set(p.labels) <= set(names)
            except BaseException as error:  # noqa: BLE001 - collected and re-raised below
                errors.append(error)
                return

    def churn() -> None:
        try:
            for round_ in range(3):
                for name in names[1:]:
                    classifier.register(name, shots(glyph_images, name, slice(0, 2)))
                if round_ < 2:
                    for name in names[1:]:
                        classifier.remove(name)
        finally:
            done.set()

    readers = [threading.Thread(target=query_loop) for _ in range(2)]
    writer = threading.Thread(target=churn)
    for thread in (*readers, writer):
        thread.start()
    for thread in (*readers, writer):
        thread.join(timeout=120)
    assert not errors, errors
    assert classifier.store.counts == {names[0]: 3, **{name: 2 for name in names[1:]}}
