from __future__ import annotations

import pytest
import torch

from fewshot_metric.data import SplitCSVDataset


@pytest.fixture
def split_dir(tmp_path, write_image):
    for name, value in (("a.png", 0), ("b.png", 102), ("c.png", 255)):
        write_image(tmp_path / "images" / name, value)
    (tmp_path / "train.csv").write_text("filename,label\na.png,n02\nb.png,n01\nc.png,n02\n")
    return tmp_path


def test_rows_become_items_with_sorted_classes(split_dir):
    ds = SplitCSVDataset(split_dir / "train.csv")
    assert ds.class_names == ["n01", "n02"]
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.source(1) == str(split_dir / "images" / "b.png")
    image, label = ds[1]
    assert label == 0 and torch.allclose(image, torch.full((1, 4, 6), 0.4))  # 102 / 255


def test_image_root_override(split_dir):
    (split_dir / "images").rename(split_dir / "pics")
    ds = SplitCSVDataset(split_dir / "train.csv", image_root=split_dir / "pics")
    assert len(ds) == 3 and ds.paths[0] == split_dir / "pics" / "a.png"


def test_bad_header_names_file_and_header(split_dir):
    (split_dir / "bad.csv").write_text("file,class\na.png,n01\n")
    expected = "bad.csv: header must be 'filename,label', found 'file,class'"
    with pytest.raises(ValueError, match=expected):
        SplitCSVDataset(split_dir / "bad.csv")


def test_missing_images_name_file_rows_and_count(split_dir):
    (split_dir / "val.csv").write_text("filename,label\na.png,x\ngone.png,x\nlost.png,y\n")
    with pytest.raises(FileNotFoundError, match="val.csv: 2 of 3 images") as info:
        SplitCSVDataset(split_dir / "val.csv")
    assert "row 3: " in str(info.value) and "gone.png" in str(info.value)
    assert "row 4: " in str(info.value) and "lost.png" in str(info.value)


def test_malformed_row_is_named(split_dir):
    (split_dir / "odd.csv").write_text("filename,label\na.png,n01\nb.png,n01,extra\n")
    with pytest.raises(ValueError, match="odd.csv, row 3: expected 2 non-empty fields"):
        SplitCSVDataset(split_dir / "odd.csv")


def test_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.csv does not exist"):
        SplitCSVDataset(tmp_path / "test.csv")
