from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest

from fewshot_metric.data import OmniglotDataset
from fewshot_metric.data.omniglot import SPLITS_FILE

ALPHABETS = ["Balinese", "Early_Aramaic", "Greek", "Japanese_(katakana)", "Korean", "Latin",
             "Sanskrit", "Tagalog"]


@pytest.fixture(scope="module")
def omniglot(omniglot_dir):
    return OmniglotDataset(omniglot_dir, split="all")


@pytest.fixture(scope="module")
def rotated(omniglot_dir):
    return OmniglotDataset(omniglot_dir, split="all", rotations=True)


def test_real_data_counts(omniglot):
    assert omniglot.alphabets == ALPHABETS
    assert len(omniglot.class_names) == 242 and len(omniglot) == 4840
    assert np.bincount(omniglot.labels).tolist() == [20] * 242
    assert omniglot.class_names[0] == "Balinese/character01"
    assert omniglot.class_groups[0] == "Balinese"
    image = omniglot.load_image(0)
    assert image.mode == "1" and image.size == (105, 105)
    assert omniglot[0][0].shape == (1, 105, 105)


def test_greek_and_latin_counted_once_from_the_first_zip(omniglot):
    greek = [i for i, name in enumerate(omniglot.class_names) if name.startswith("Greek/")]
    assert len(greek) == 24
    first = int(np.flatnonzero(omniglot.labels == greek[0])[0])
    assert "images_background_small1.zip:images_background_small1/Greek/character01/" in (
        omniglot.source(first))


def test_rotations_add_three_classes_per_character(rotated):
    assert len(rotated.class_names) == 968 and len(rotated) == 4 * 4840
    assert rotated.class_names[:4] == ["Balinese/character01", "Balinese/character01/rot90",
                                       "Balinese/character01/rot180",
                                       "Balinese/character01/rot270"]
    assert rotated.class_groups[:4] == ["Balinese"] * 4
    assert sorted(set(rotated.class_groups)) == ALPHABETS


def test_rotated_image_equals_rotated_original(rotated):
    base = rotated.class_names.index("Korean/character07")
    original = np.array(rotated.load_image(int(np.flatnonzero(rotated.labels == base)[3])))
    for k, suffix in enumerate(["/rot90", "/rot180", "/rot270"], start=1):
        label = rotated.class_names.index(f"Korean/character07{suffix}")
        i = int(np.flatnonzero(rotated.labels == label)[3])
        assert np.array_equal(np.array(rotated.load_image(i)), np.rot90(original, k))
        assert rotated.source(i).endswith(f"rotated {90 * k} degrees")
    assert not np.array_equal(np.rot90(original, 1), original)


def test_splits_are_alphabet_disjoint_and_cover_all(omniglot_dir):
    splits = {s: OmniglotDataset(omniglot_dir, split=s) for s in ("train", "val", "test")}
    alphabets = {s: set(ds.alphabets) for s, ds in splits.items()}
    assert alphabets["train"] == {"Balinese", "Early_Aramaic", "Japanese_(katakana)",
                                  "Sanskrit", "Tagalog"}
    assert alphabets["val"] == {"Latin"} and alphabets["test"] == {"Greek", "Korean"}
    assert not (alphabets["train"] & alphabets["val"] or alphabets["train"] & alphabets["test"]
                or alphabets["val"] & alphabets["test"])
    assert sum(len(ds.class_names) for ds in splits.values()) == 242
    test = splits["test"]
    for alphabet in alphabets["test"]:
        assert test.class_groups.count(alphabet) >= 20


def test_split_file_matches_the_data_layout():
    splits = json.loads(SPLITS_FILE.read_text())["splits"]
    assert sorted(a for names in splits.values() for a in names) == ALPHABETS


def test_explicit_alphabets_and_errors(omniglot_dir):
    latin = OmniglotDataset(omniglot_dir, alphabets=["Latin"])
    assert len(latin.class_names) == 26 and latin.alphabets == ["Latin"]
    with pytest.raises(ValueError, match=r"\['Klingon'\] not found .*8 available: Balinese"):
        OmniglotDataset(omniglot_dir, alphabets=["Latin", "Klingon"])
    with pytest.raises(ValueError, match="either split='val' or alphabets"):
        OmniglotDataset(omniglot_dir, split="val", alphabets=["Latin"])
    with pytest.raises(ValueError, match="unknown Omniglot split 'dev'.*train, val, test, all"):
        OmniglotDataset(omniglot_dir, split="dev")


def test_missing_root_and_empty_root_point_to_readme(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist.*data/README.md"):
        OmniglotDataset(tmp_path / "nowhere")
    expected = f"no Omniglot images in {re.escape(str(tmp_path))}:.*README"
    with pytest.raises(FileNotFoundError, match=expected):
        OmniglotDataset(tmp_path)


def test_zip_and_extracted_folders_in_a_tiny_root(tmp_path, write_image):
    """A zip, an extracted subfolder and root-level folders; duplicates come from the zip."""
    root = tmp_path / "omni"
    staged = tmp_path / "staged"
    for drawer in (1, 2):
        write_image(staged / "top" / "Alpha" / "character01" / f"01_{drawer}.png", 0)
    write_image(root / "images_evaluation" / "Alpha" / "character01" / "01_9.png", 255)
    write_image(root / "images_evaluation" / "Beta" / "character02" / "02_1.png", 255)
    write_image(root / "Gamma" / "character01" / "03_1.png", 255)
    root.mkdir(exist_ok=True)
    with zipfile.ZipFile(root / "images_background.zip", "w") as archive:
        for path in sorted(staged.rglob("*.png")):
            archive.write(path, path.relative_to(staged).as_posix())
    ds = OmniglotDataset(root, rotations=True)
    assert ds.class_names == ["Alpha/character01", "Alpha/character01/rot90",
                              "Alpha/character01/rot180", "Alpha/character01/rot270",
                              "Beta/character02", "Beta/character02/rot90",
                              "Beta/character02/rot180", "Beta/character02/rot270",
                              "Gamma/character01", "Gamma/character01/rot90",
                              "Gamma/character01/rot180", "Gamma/character01/rot270"]
    assert np.bincount(ds.labels).tolist() == [2] * 4 + [1] * 8
    assert ds.source(0) == f"{root / 'images_background.zip'}:top/Alpha/character01/01_1.png"
    assert ds.source(len(ds) - 1).endswith("03_1.png rotated 270 degrees")
    assert np.array(ds.load_image(len(ds) - 1)).min() == 255
