"""Every bad input of the corpus, through the API and the CLI: a clear error that names the
input and says what to do, and nothing changed (see corpus.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from corpus import (
    CASES,
    Case,
    Outcome,
    Workbench,
    run_bad_input_cases,
    run_case,
    write_bad_images,
)
from PIL import Image

from fewshot_metric.data.base import open_image

# What each message must say, by the longest key that starts the case name (beyond naming
# the input, which run_case checks). The Conv-4 quickstart model embeds into dim 64.
EXPECTED: dict[str, tuple[str, ...]] = {
    "image/zero_byte": ("cannot decode image", "the file is empty (0 bytes)",
                        "replace or remove the file"),
    "image/truncated_png": ("cannot decode image", "image file is truncated",
                            "replace or remove the file"),
    "image/truncated_jpeg": ("cannot decode image", "image file is truncated",
                             "replace or remove the file"),
    "image/text_as_png": ("cannot decode image", "not in an image format PIL reads",
                          "replace or remove the file"),
    "image/directory": ("is a folder, not an image file", "pass the image files in it"),
    "image/directory/cli": ("holds no image files (looked for .png, .jpg",),
    "image/missing": ("image not found", "check the path"),
    "image/missing/cli": ("no such image file or folder",),
    "image/bomb": ("too large to decode safely", "(10000000000 pixels)",
                   "decompression bomb", "use a smaller image"),
    "image/oversized": ("too large to decode safely", "10000x10000 pixels, more than "
                        f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}",
                        "use a smaller image"),
    "image/several_bad/api_register": ("4 of 5 images are unusable, so nothing was "
                                       "registered:",),
    "image/several_bad/api_query": ("4 of 5 images are unusable, so no image was queried:",),
    "image/several_bad/api_register_folder": ("4 of 7 images are unusable, so nothing was "
                                              "registered:",),
    "image/several_bad/cli_register_folder": ("4 of 7 images are unusable, so nothing was "
                                              "registered:",),
    "image/several_missing": ("no such image file or folder: ",),
    "label/empty": ("'' is empty or whitespace-only", "give every class a visible name"),
    "label/whitespace": (r"' \t\n ' is empty or whitespace-only",
                         "give every class a visible name"),
    "label/not_a_string": ("must be a str class name, got int 7",),
    "label/lone_surrogate": ("holds the lone surrogate U+DC80", "decode it as UTF-8"),
    "embedding/nan": ("is not finite (NaN or inf", "fix or drop that row"),
    "embedding/inf": ("is not finite (NaN or inf", "fix or drop that row"),
    "embedding/too_large": ("too large for float32", "fix or drop that row"),
    "embedding/wrong_dim": ("embeddings have dim 65 but this store holds dim 64",
                            "embed with the model the store was built with"),
    "embedding/one_dimensional": ("must be a non-empty [N, D] array, got shape (64,)",),
    "embedding/no_rows": ("must be a non-empty [N, D] array, got shape (0, 64)",),
    "embedding/strings": ("must hold real numbers, got dtype <U1",),
    "embedding/ragged": ("must be an [N, D] array of numbers", "inhomogeneous"),
    "embedding/label_count": ("got 2 embeddings but 3 labels; give one label per row",),
    "embedding/query_nan": ("row 1 of query_emb is not finite",),
    "embedding/query_wrong_dim": ("query_emb have dim 63 but this store holds dim 64",),
    "k/": ("k must be an int >= 1",),
    "empty_store/classifier": ("the store has no classes yet: register some first",),
    "empty_store/store": ("the store has no classes: register classes first",),
    "empty_store/folder": ("has no classes yet: add some with `fewshot-metric register "
                           "--store",),
    "recipe/unknown_key": ("unknown key 'train.stepz'", "valid keys here:", "steps"),
    "recipe/wrong_type": ("'train.steps' must be int, got str 'many'",),
    "recipe/section_not_mapping": ("'train' must be a mapping of keys",),
    "recipe/missing_data_path": ("no_such_data/train does not exist",
                                 "give a folder with one subfolder per class"),
    "recipe/python_tag": ("not valid YAML", "python/object/apply:builtins.open",
                          "tags such as !!python/... are refused"),
    "recipe/not_yaml": ("not valid YAML", "line 1", "Fix the place shown"),
    "recipe/not_a_mapping": ("a recipe must be a mapping of sections",),
    "recipe/not_utf8": ("not valid YAML", "can't decode byte 0xe9", "UTF-8 text"),
    "recipe/missing": ("recipe file not found", "see recipes/ for examples"),
    "checkpoint/truncated": ("is not a readable checkpoint", "it may be truncated"),
    "checkpoint/text": ("is not a readable checkpoint", "use a .safetensors file written by "
                        "`fewshot-metric train`"),
    "checkpoint/foreign_safetensors": ("is a safetensors file but not a fewshot_metric "
                                       "checkpoint",),
    "checkpoint/torch_pickle": ("is not a readable checkpoint", "use a .safetensors file"),
    "checkpoint/wrong_weights": ("weights do not match the model spec", "Missing key(s)",
                                 "train again"),
    "checkpoint/damaged_metadata": ("checkpoint metadata is damaged (JSONDecodeError",
                                    "train again"),
    "checkpoint/not_a_model_spec": ("the model spec in its metadata does not describe a model "
                                    "(KeyError('backbone'))", "train again"),
    "checkpoint/missing": ("checkpoint not found", "pass a .safetensors file"),
    "checkpoint/directory": ("checkpoint is a folder", "pass a .safetensors file"),
    "store/missing_meta": ("store.json is missing", "restore the folder from a backup"),
    "store/missing_meta/cli_register": ("is not a store (it has no store.json)",
                                        "choose a new or empty folder"),
    "store/meta_not_json": ("store.json: not valid JSON", "restore the folder from a backup"),
    "store/meta_class_removed": ("store.json: its content does not match its meta_sha256",
                                 "restore the folder from a backup"),
    "store/label_blank": ("labels.json does not match store.json (its sha256 differs)",),
    "store/index_missing": ("index.faiss is missing", "restore the folder from a backup"),
    "store/means_edited": ("means.npy does not match store.json (its sha256 differs)",
                          "restore the folder from a backup"),
    "store/labels_collide_in_nfc": ("labels that differ only in Unicode normalisation",
                                    "'caf\\xe9' (1 shots) and 'cafe\\u0301' (1 shots), all "
                                    "'caf\u00e9'", "Nothing was changed",
                                    "--collisions merge", "--collisions rename"),
    "store/not_a_store": ("store.json is missing",),
    "store_file/api": ("no store at", "it is a file, and a store is a folder",
                       "pass the store's folder"),
    "store_file/cli_query": ("it is a file, and a store is a folder",),
    "store_file/cli_info": ("it is a file, and a store is a folder",),
    "store_file/cli_remove": ("it is a file, and a store is a folder",),
    "store_file/cli_register": ("is a file, not a store folder",),
    "images_argument/": ("needs a non-empty list of images",),
    "store/not_a_store/cli_register": ("is not a store (it has no store.json)",
                                       "choose a new or empty folder"),
}


def expected(name: str) -> tuple[str, ...]:
    return EXPECTED[max((key for key in EXPECTED if name.startswith(key)), key=len)]


@pytest.fixture(scope="module")
def rows(tiny_checkpoint: Path, tmp_path_factory) -> list[tuple[str, bool, str]]:
    """run_bad_input_cases once for the module: every case below reads its row."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused anyway
        return run_bad_input_cases(tiny_checkpoint, tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_a_clean_error(rows: list[tuple[str, bool, str]], name: str) -> None:
    clean, message = {row[0]: row[1:] for row in rows}[name]
    assert clean, message
    for fragment in expected(name):
        assert fragment in message


def test_run_bad_input_cases_reports_every_case_clean(rows: list[tuple[str, bool, str]]
                                                      ) -> None:
    assert [name for name, _, _ in rows] == list(CASES)
    assert [(name, message) for name, clean, message in rows if not clean] == []
    # images 8 x 4 + 5, labels 18, embeddings 11, k 10, empty store 3, recipes 9 x 2,
    # checkpoints 9 x 5, stores 8 x 6, a file as the store 6, one image instead of a list 3
    assert len(rows) == 32 + 5 + 18 + 11 + 10 + 3 + 18 + 45 + 48 + 6 + 3


def test_the_judge_notices_a_missing_error_a_change_and_an_unnamed_input(
        tiny_checkpoint: Path, tmp_path: Path) -> None:
    bench = Workbench(tiny_checkpoint, tmp_path)
    works = Case("register works", lambda b: b.classifier.register("new", [b.good["h1"]]),
                 ValueError, lambda b: [])
    outcome = run_case(works, bench)
    assert (outcome.error, outcome.expected_error, outcome.unchanged) == ("no error", False,
                                                                          False)
    vague = Case("vague", lambda b: b.classifier.query([b.good["h1"]], k=0), ValueError,
                 lambda b: ["some other file"])
    outcome = run_case(vague, bench)
    assert outcome.expected_error and outcome.unchanged and not outcome.names_input
    saves = Case("cli register works", lambda b: [
        "register", "--store", b.store, "--label", "new", b.good["h1"], "--quiet"], None,
                 lambda b: [])
    outcome = run_case(saves, bench)
    assert (outcome.error, outcome.expected_error, outcome.unchanged) == ("exit 0", False,
                                                                          False)
    for leaky in ("cannot identify image file <_io.BytesIO object at 0x7f3a2c1d0>",
                  "got <fewshot_metric.store.PrototypeStore object>"):
        outcome = Outcome("OSError", leaky, True, True, True)
        assert outcome.leaks_repr and not outcome.clean
        assert outcome.report().startswith("shows a Python repr: ")
    assert not Outcome("ValueError", "got dtype <U1 for 'a' <b>", True, True, True).leaks_repr


def test_an_oversized_image_is_refused_also_where_warnings_are_errors(tmp_path: Path) -> None:
    path = write_bad_images(tmp_path)["oversized"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL raises it
        with pytest.raises(OSError, match=r"oversized\.png is too large to decode safely "
                                          r"\(Image size \(100000000 pixels\) exceeds limit"):
            open_image(path, str(path))
