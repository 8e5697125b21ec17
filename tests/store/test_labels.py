"""The label rule: labels are compared in Unicode NFC, wherever they enter (code points by
hand: U+00E9 is e-acute composed, U+0065 U+0301 is e + combining acute)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fewshot_metric import FewShotClassifier
from fewshot_metric.cli import main
from fewshot_metric.store import (
    ClassExistsError,
    LabelCollisionError,
    PrototypeStore,
    UnknownClassError,
    check_label,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from corpus import relabel_store  # noqa: E402

COMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"


def test_check_label_returns_the_nfc_form() -> None:
    assert check_label(DECOMPOSED, "label") == COMPOSED == "caf\xe9"
    assert check_label("\u1100\u1161", "label") == "\uac00"  # Hangul jamo -> one syllable
    assert check_label("\u212b", "label") == "\u00c5"  # ANGSTROM SIGN -> A with ring above
    assert check_label(" cat ", "label") == " cat "  # spaces are kept: only NFC changes
    with pytest.raises(ValueError, match=r"label = 'a\\udc80' holds the lone surrogate U\+DC80"):
        check_label("a\udc80", "label")  # what os.fsdecode makes of the byte 0x80


@pytest.mark.parametrize("mode", ["prototype", "instance"])
def test_both_forms_name_one_class_everywhere(mode: str) -> None:
    store = PrototypeStore(2, mode=mode)
    store.add(np.array([[1.0, 0.0]], np.float32), [COMPOSED])
    store.add(np.array([[0.0, 1.0]], np.float32), [DECOMPOSED])
    assert store.classes == [COMPOSED] and len(store) == 1
    assert store.count(DECOMPOSED) == store.count(COMPOSED) == 2
    assert DECOMPOSED in store and COMPOSED in store and 7 not in store
    answer = store.search(np.array([[0.5, 0.5]], np.float32), k=1)
    assert answer.labels == [[COMPOSED]]
    if mode == "prototype":  # the mean of (1, 0) and (0, 1): the query sits on it
        assert answer.distances[0, 0] == 0.0
    store.rename(DECOMPOSED, "the\u0301")  # found by either form, stored as NFC
    assert store.classes == ["th\u00e9"]
    with pytest.raises(ClassExistsError, match="already exists"):
        store.rename("th\u00e9", "the\u0301")
    store.remove("the\u0301")
    assert len(store) == 0
    with pytest.raises(UnknownClassError, match="no class 'cafe\u0301'"):
        store.remove(DECOMPOSED)


def test_one_add_with_both_forms_makes_one_class_of_their_mean() -> None:
    store = PrototypeStore(2)
    store.add(np.array([[2.0, 0.0], [0.0, 4.0]], np.float32), [COMPOSED, DECOMPOSED])
    assert store.counts == {COMPOSED: 2}
    assert store.search(np.array([[1.0, 2.0]], np.float32)).distances[0, 0] == 0.0


def test_the_classifier_and_the_cli_apply_the_rule(tiny_checkpoint: Path, glyph_images: Path,
                                                   tmp_path: Path, capsys) -> None:
    images = sorted((glyph_images / "glyph00800").glob("*.png"))
    classifier = FewShotClassifier.from_checkpoint(tiny_checkpoint)
    assert classifier.register_many({COMPOSED: images[:1], DECOMPOSED: images[1:3]}) == {
        COMPOSED: 3, DECOMPOSED: 3}
    assert classifier.classes == [COMPOSED] and DECOMPOSED in classifier
    store = tmp_path / "store"
    for label, image in ((COMPOSED, images[0]), (DECOMPOSED, images[1])):
        assert main(["register", "--store", str(store), "--checkpoint", str(tiny_checkpoint),
                     "--label", label, str(image), "--quiet"]) == 0
    assert PrototypeStore.load(store).counts == {COMPOSED: 2}
    assert main(["store", "remove", str(store), DECOMPOSED]) == 0
    assert len(PrototypeStore.load(store)) == 0


def _old_store(path: Path, mode: str, labels: list[str]) -> None:
    """A store saved with `labels` as fewshot_metric wrote them before the NFC rule: classes
    A (2 shots: (1, 0), (1, 0)), B (1 shot: (0, 1)) and C (1 shot: (-1, 0)), relabelled."""
    store = PrototypeStore(2, mode=mode)
    store.add(np.array([[1, 0], [1, 0], [0, 1], [-1, 0]], np.float32), ["A", "A", "B", "C"])
    store.save(path)
    relabel_store(path, labels)


def test_a_store_from_before_the_rule_with_colliding_labels_is_refused_unchanged(
        tmp_path: Path) -> None:
    _old_store(tmp_path / "old", "prototype", [COMPOSED, DECOMPOSED, "dog"])
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
    for mmap in (False, True):
        with pytest.raises(LabelCollisionError) as caught:
            PrototypeStore.load(tmp_path / "old", mmap=mmap)
        message = str(caught.value)
        assert "'caf\\xe9' (2 shots) and 'cafe\\u0301' (1 shots), all 'caf\u00e9'" in message
        assert f"store normalize {tmp_path / 'old'} --collisions merge" in message
        assert "--collisions rename" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before


@pytest.mark.parametrize("mode", ["prototype", "instance"])
def test_merging_pools_the_shots_of_colliding_classes(tmp_path: Path, mode: str) -> None:
    _old_store(tmp_path / "old", mode, [DECOMPOSED, COMPOSED, "dog"])
    store = PrototypeStore.load(tmp_path / "old", label_collisions="merge")
    assert store.counts == {COMPOSED: 3, "dog": 1}
    query = np.array([[2 / 3, 1 / 3], [0, 1], [-1, 0]], np.float32)
    answer = store.search(query, k=2)
    assert answer.labels == [[COMPOSED, "dog"], [COMPOSED, "dog"], ["dog", COMPOSED]]
    if mode == "prototype":  # weighted mean: (2 * (1, 0) + (0, 1)) / 3
        np.testing.assert_allclose(answer.distances[:, 0], [0, 8 / 9, 0], atol=1e-6)
    else:  # the nearest shot of the merged class
        np.testing.assert_allclose(answer.distances[:, 0], [2 / 9, 0, 0], atol=1e-6)
    store.save(tmp_path / "old")
    assert PrototypeStore.load(tmp_path / "old").counts == {COMPOSED: 3, "dog": 1}


def test_renaming_keeps_colliding_classes_apart(tmp_path: Path) -> None:
    _old_store(tmp_path / "old", "prototype", [COMPOSED, DECOMPOSED, "caf\u00e9 (2)"])
    store = PrototypeStore.load(tmp_path / "old", label_collisions="rename")
    assert store.counts == {COMPOSED: 2, "caf\u00e9 (3)": 1, "caf\u00e9 (2)": 1}


def test_a_lone_decomposed_label_loads_as_nfc(tmp_path: Path) -> None:
    _old_store(tmp_path / "old", "prototype", [DECOMPOSED, "dog", "cat"])
    store = PrototypeStore.load(tmp_path / "old", mmap=True)
    assert store.classes == [COMPOSED, "dog", "cat"] and store.count(DECOMPOSED) == 2


def test_store_normalize_merges_from_the_cli(tmp_path: Path, capsys) -> None:
    _old_store(tmp_path / "old", "instance", [COMPOSED, DECOMPOSED, "dog"])
    assert main(["store", "info", str(tmp_path / "old")]) == 2
    assert "differ only in Unicode normalisation" in capsys.readouterr().err
    assert main(["store", "normalize", str(tmp_path / "old"), "--collisions", "merge"]) == 0
    assert "2 classes" in capsys.readouterr().out
    labels = json.loads((tmp_path / "old" / "labels.json").read_text(encoding="utf-8"))
    assert labels == [COMPOSED, "dog"]
    assert main(["store", "info", str(tmp_path / "old")]) == 0


def test_merging_a_cosine_store_weights_the_unit_means(tmp_path: Path) -> None:
    store = PrototypeStore(2, metric="cosine")
    store.add(np.array([[3, 0], [5, 0], [0, 2]], np.float32), ["A", "A", "B"])  # unit shots
    store.save(tmp_path / "old")
    relabel_store(tmp_path / "old", [COMPOSED, DECOMPOSED])
    merged = PrototypeStore.load(tmp_path / "old", label_collisions="merge")
    # mean of the unit shots (1, 0), (1, 0), (0, 1) = (2/3, 1/3): the direction of (2, 1)
    answer = merged.search(np.array([[2, 1], [1, 2]], np.float32))
    np.testing.assert_allclose(answer.distances[:, 0], [0, 1 - 4 / 5], atol=1e-6)
