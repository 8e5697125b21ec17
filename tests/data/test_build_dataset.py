from __future__ import annotations

import pytest

from fewshot_metric.data import (
    GlyphsDataset,
    ImageFolderDataset,
    OmniglotDataset,
    SplitCSVDataset,
    build_dataset,
)


def test_glyphs_by_split_name_with_options():
    ds = build_dataset("glyphs", "val", n_classes=250, images_per_class=3, cache=False)
    assert isinstance(ds, GlyphsDataset)
    assert len(ds.class_names) == 25 and len(ds) == 75 and ds.class_names[0] == "glyph00175"


def test_folder_split_by_name_under_root_or_by_path(tmp_path, write_image):
    write_image(tmp_path / "test" / "cat" / "a.png")
    write_image(tmp_path / "test" / "dog" / "b.png")
    by_name = build_dataset("folder", "test", root=tmp_path)
    by_path = build_dataset("folder", str(tmp_path / "test"))
    assert isinstance(by_name, ImageFolderDataset)
    assert by_name.class_names == by_path.class_names == ["cat", "dog"]


def test_csv_split_by_name_under_root_or_by_path(tmp_path, write_image):
    write_image(tmp_path / "images" / "a.png")
    (tmp_path / "test.csv").write_text("filename,label\na.png,n01\n")
    by_name = build_dataset("csv", "test", root=tmp_path, cache=False)
    by_path = build_dataset("csv", str(tmp_path / "test.csv"))
    assert isinstance(by_name, SplitCSVDataset)
    assert by_name.paths == by_path.paths == [tmp_path / "images" / "a.png"]


def test_omniglot_from_the_shared_folder(omniglot_dir):
    ds = build_dataset("omniglot", "val", root=omniglot_dir, rotations=True)
    assert isinstance(ds, OmniglotDataset)
    assert len(ds.class_names) == 26 * 4 and set(ds.class_groups) == {"Latin"}


def test_errors_name_the_kind_and_the_fix():
    with pytest.raises(ValueError, match="unknown data kind 'mnist'; choose one of glyphs, "
                                         "omniglot, folder, csv"):
        build_dataset("mnist", "train")
    with pytest.raises(TypeError, match="kind 'glyphs' does not take rotations"):
        build_dataset("glyphs", "train", rotations=True)
    with pytest.raises(ValueError, match="'glyphs' is generated and takes no root"):
        build_dataset("glyphs", "train", root="/data")
    with pytest.raises(ValueError, match="'omniglot' needs root"):
        build_dataset("omniglot", "train")
    with pytest.raises(ValueError, match=r"'csv' needs a root folder for split 'test' "
                                         r"\(read from root/test.csv\)"):
        build_dataset("csv", "test")
