"""PrototypeStore errors: each names what is wrong, and a failed call changes nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fewshot_metric.store import (
    IncompatibleEmbedderError,
    PrototypeStore,
    StoreFormatError,
    UnknownClassError,
    persistence,
)
from fewshot_metric.store.index_factory import StoreIndex

TWO = np.array([[0.0, 0.0], [4.0, 0.0]])


def two_class_store(**kwargs) -> PrototypeStore:
    store = PrototypeStore(2, **kwargs)
    store.add(TWO, ["a", "b"])
    return store


def snapshot(store: PrototypeStore):
    result = store.search(np.array([[1.0, 1.0], [3.0, -1.0], [9.0, 9.0]]), k=5)
    return (store.classes, store.counts, result.labels, result.ids.tolist(),
            result.distances.tolist())


@pytest.mark.parametrize(("labels", "message"), [
    (["a", ""], r"labels\[1\] = '' is empty or whitespace-only"),
    (["a", " \t\n"], r"labels\[1\] = ' \\t\\n' is empty or whitespace-only"),
    (["a", 7], r"labels\[1\] must be a str class name, got int 7"),
    ("ab", "not a single string 'ab'"),
    (["a"], "got 2 embeddings but 1 labels"),
])
def test_bad_labels_are_named(labels, message):
    with pytest.raises(ValueError, match=message):
        PrototypeStore(2).add(TWO, labels)


@pytest.mark.parametrize(("rows", "message"), [
    ([[0.0, 0.0], [np.nan, 1.0]], r"row 1 \(label 'b'\) of embeddings is not finite"),
    ([[0.0, 0.0], [1.0, np.inf]], r"row 1 \(label 'b'\) of embeddings is not finite"),
    ([[0.0, 0.0], [1e39, 1.0]], r"row 1 \(label 'b'\) .*too large for float32"),
    ([0.0, 1.0], r"embeddings must be a non-empty \[N, D\] array, got shape \(2,\)"),
    ([["x", "y"], ["z", "w"]], "embeddings must hold real numbers"),
])
def test_bad_embeddings_are_named(rows, message):
    with pytest.raises(ValueError, match=message):
        PrototypeStore(2).add(np.array(rows), ["a", "b"])


def test_cosine_refuses_zero_rows_and_cancelling_shots():
    store = PrototypeStore(2, metric="cosine")
    with pytest.raises(ValueError, match=r"row 0 \(label 'z'\) .* all zeros"):
        store.add(np.zeros((1, 2)), ["z"])
    with pytest.raises(ValueError, match="shots of class 'pair' cancel out"):
        store.add(np.array([[1.0, 0.0], [-2.0, 0.0]]), ["pair", "pair"])
    assert len(store) == 0


def test_wrong_dim_names_both_dims():
    store = two_class_store()
    with pytest.raises(IncompatibleEmbedderError, match="embeddings have dim 3 .* dim 2"):
        store.add(np.zeros((1, 3)), ["c"])
    with pytest.raises(IncompatibleEmbedderError, match="query_emb have dim 5 .* dim 2"):
        store.search(np.zeros((1, 5)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 0}, r"k must be an int >= 1 .*got 0"),
    ({"k": 1.5}, r"k must be an int >= 1 .*got 1\.5"),
    ({"temperature": 0.0}, "temperature must be a number > 0, got 0.0"),
    ({"reject_distance": -1.0}, "reject_distance must be a number >= 0 or None, got -1.0"),
])
def test_bad_search_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        two_class_store().search(np.zeros((1, 2)), **kwargs)


def test_search_needs_classes_and_finite_queries():
    with pytest.raises(ValueError, match="register classes first"):
        PrototypeStore(2).search(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"row 1 of query_emb is not finite"):
        two_class_store().search(np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match=r"row 2 of query_emb is not finite"):  # inf - inf
        two_class_store().search(np.array([[0.0, 3e38], [3e38, 0.0], [-np.inf, 0.0]]))
    # finite values whose sum overflows float32 are fine (a query far from both classes)
    huge = two_class_store().search(np.array([[3e38, 3e38], [3e38, 3e38]]))
    assert huge.ids.shape == (2, 1)
    with pytest.raises(ValueError, match=r"false_accept_rate must be in \[0, 1\], got 1.5"):
        two_class_store().pick_rejection_threshold(TWO, TWO, 1.5)


def test_rename_and_remove_errors_name_the_labels():
    store = two_class_store()
    with pytest.raises(ValueError, match="cannot rename 'a' to 'b': a class 'b' already exists"):
        store.rename("a", "b")
    with pytest.raises(ValueError, match="the new label = '  ' is empty"):
        store.rename("a", "  ")
    with pytest.raises(UnknownClassError, match="no class 'zebra' in the store .*'a', 'b'"):
        store.remove("zebra")
    with pytest.raises(UnknownClassError, match="no class 'zebra'"):
        store.rename("zebra", "z")
    assert store.classes == ["a", "b"]


def test_check_compatible_names_each_mismatch():
    store = PrototypeStore(2, metric="cosine", fingerprint="aaa")
    store.check_compatible(2, "cosine", "aaa")
    store.check_compatible(2, "cosine")  # an unknown fingerprint is not compared
    with pytest.raises(IncompatibleEmbedderError, match=r"dim 3 != the store's 2"):
        store.check_compatible(3, "cosine", "aaa")
    with pytest.raises(IncompatibleEmbedderError, match="metric 'sqeuclidean' != the store's"):
        store.check_compatible(2, "sqeuclidean", "aaa")
    with pytest.raises(IncompatibleEmbedderError, match="fingerprint bbb != the store's aaa"):
        store.check_compatible(2, "cosine", "bbb")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "centroid"}, "unknown mode 'centroid'"),
    ({"metric": "manhattan"}, "unknown metric 'manhattan'"),
    ({"index": "lsh"}, "unknown index kind 'lsh'"),
    ({"index": "hnsw", "nlist": 4}, r"'hnsw' got unknown options \['nlist'\]"),
    ({"index": "ivf_pq", "pq_m": 3}, "pq_m=3 must divide the embedding dim 2"),
    ({"index": "ivf_flat", "nprobe": 0}, "'nprobe' must be a positive int, got 0"),
])
def test_bad_construction_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrototypeStore(2, **kwargs)


@pytest.mark.parametrize("mode", ["prototype", "instance"])
def test_a_failed_add_leaves_the_store_unchanged(mode):
    store = two_class_store(mode=mode)
    before = snapshot(store)
    bad = np.array([[1.0, 1.0], [5.0, 5.0], [np.nan, 0.0]])  # existing, new, then a bad row
    with pytest.raises(ValueError, match=r"row 2 \(label 'c'\)"):
        store.add(bad, ["a", "c", "c"])
    assert snapshot(store) == before
    store.add(bad[:2], ["a", "c"])
    # no id was used up: prototype ids a 0, b 1 -> c 2; instance ids a 0 (shot 1), b 2 (shot
    # 3), then a's new shot 4 -> c 5
    expected = {"prototype": 2, "instance": 5}[mode]
    assert store.search(np.array([[5.0, 5.0]])).ids.tolist() == [[expected]]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_failed_index_update_is_rolled_back(monkeypatch, kind):
    store = two_class_store(index=kind)
    before = snapshot(store)

    def half_done(self, remove_ids, add_vectors, add_ids, n_after, all_vectors):
        self.faiss_index.add_with_ids(add_vectors, add_ids)  # half of the work, then a crash
        raise MemoryError("out of memory")

    monkeypatch.setattr(StoreIndex, "update", half_done)
    with pytest.raises(MemoryError):
        store.add(np.array([[1.0, 1.0], [7.0, 7.0]]), ["a", "c"])
    with pytest.raises(MemoryError):
        store.remove("a")
    assert snapshot(store) == before


def test_save_refuses_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(FileExistsError, match="photos: the folder is not empty and is not a store"):
        two_class_store().save(tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"meow"


@pytest.fixture
def saved(tmp_path):
    store = two_class_store()
    store.save(tmp_path / "s")
    return tmp_path / "s"


def test_load_of_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no store at .*nowhere"):
        PrototypeStore.load(tmp_path / "nowhere")


def test_load_with_store_json_missing(saved):
    (saved / "store.json").unlink()
    with pytest.raises(StoreFormatError, match=r"s/store\.json is missing"):
        PrototypeStore.load(saved)


def test_load_with_store_json_garbage(saved):
    (saved / "store.json").write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(StoreFormatError, match=r"store\.json: not valid JSON"):
        PrototypeStore.load(saved)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(dim="two"), r"key 'dim' must be int, got 'two'"),
    (lambda m: m.pop("classes"), r"key 'classes' is missing"),
    (lambda m: m.update(version=99), "version 99; this fewshot_metric reads"),
    (lambda m: m.update(version=1), "holds a store of format version 1, written by an older "
                                    "fewshot_metric; this one reads version 2: build the store "
                                    "again"),
    (lambda m: m.update(classes=3), r"labels\.json must hold a JSON array of 3 strings"),
    (lambda m: m["index"].update(kind="hnsw"), r"index\.faiss does not match store\.json"),
    (lambda m: m.update(dim=3), r"means\.npy holds float32 \(2, 2\); store\.json needs"),
])
def test_load_with_edited_store_json(saved, edit, message):
    meta = json.loads((saved / "store.json").read_text(encoding="utf-8"))
    edit(meta)
    (saved / "store.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(StoreFormatError, match=f"does not match its meta_sha256|{message}"):
        PrototypeStore.load(saved)  # (a version this code cannot read is said first)
    # an edit that also updates the digest still meets the checks of every key
    meta["meta_sha256"] = persistence._meta_digest(meta)
    (saved / "store.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(StoreFormatError, match=message):
        PrototypeStore.load(saved)


def resign(folder, name):
    """Records the current sha256 of file `name` in store.json, as a careful hand edit would."""
    meta = json.loads((folder / "store.json").read_text(encoding="utf-8"))
    meta["files"][name] = persistence._sha256(folder / name)
    meta["meta_sha256"] = persistence._meta_digest(meta)
    (folder / "store.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize(("labels", "message"), [
    ('[" ", "b"]', r"labels\.json: labels\[0\] = ' ' is empty"),
    ('["a", "a"]', r"labels\.json: two classes share one label"),
    ('["a", 7]', r"labels\.json must hold a JSON array of 2 strings"),
    ('{"a": 1}', r"labels\.json must hold a JSON array of 2 strings"),
    ('["a", "b"', r"labels\.json: not valid JSON"),
])
def test_load_with_edited_labels(saved, labels, message):
    (saved / "labels.json").write_text(labels, encoding="utf-8")
    with pytest.raises(StoreFormatError, match=r"labels\.json does not match store\.json"):
        PrototypeStore.load(saved)
    resign(saved, "labels.json")  # an edit that also updates the checksums meets the checks
    with pytest.raises(StoreFormatError, match=message):
        PrototypeStore.load(saved)


@pytest.mark.parametrize(("name", "array", "message"), [
    ("class_counts.npy", np.array([2, 1]), "does not match store.json"),
    ("class_counts.npy", np.array([0, 1]), "class_counts.npy holds a count below 1"),
    ("class_ids.npy", np.array([1, 0]), r"class_ids\.npy needs increasing ids in \[0, next_id=2\)"),
    ("class_ids.npy", np.array([0, 5]), r"class_ids\.npy needs increasing ids"),
    ("class_ids.npy", np.array([0.0, 1.0]), r"class_ids\.npy holds float64 \(2,\); store\.json "
                                            r"needs int64 \(2,\)"),
])
def test_load_with_edited_class_columns(saved, name, array, message):
    """A count changed by hand would silently change the class's mean: refused, as are ids
    out of order or range."""
    np.save(saved / name, array, allow_pickle=False)
    with pytest.raises(StoreFormatError, match=rf"{name} does not match store\.json"):
        PrototypeStore.load(saved)
    if message != "does not match store.json":
        resign(saved, name)
        with pytest.raises(StoreFormatError, match=message):
            PrototypeStore.load(saved)


def test_load_with_index_missing_or_mismatched(saved, tmp_path):
    other = PrototypeStore(2)
    other.add(np.ones((1, 2)), ["x"])
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "index.faiss", saved / "index.faiss")
    with pytest.raises(StoreFormatError, match=r"index\.faiss does not match store\.json "
                                               r"\(its sha256 differs\)"):
        PrototypeStore.load(saved)
    (saved / "index.faiss").unlink()
    with pytest.raises(StoreFormatError, match=r"index\.faiss is missing"):
        PrototypeStore.load(saved)
