from __future__ import annotations

import re

import pytest
import torch

from fewshot_metric.data import ImageFolderDataset


@pytest.fixture
def folder(tmp_path, write_image):
    root = tmp_path / "classes"
    write_image(root / "cat" / "b.png", 51)
    write_image(root / "cat" / "a.JPG", (255, 0, 0), mode="RGB")
    write_image(root / "cat" / ".hidden.png", 0)
    (root / "cat" / "notes.txt").write_text("not an image")
    write_image(root / "dog" / "sub" / "x.bmp", 0)
    (root / ".cache").mkdir()
    return root


def test_classes_files_and_order(folder):
    ds = ImageFolderDataset(folder)
    assert ds.class_names == ["cat", "dog"]
    assert ds.class_groups == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 1]
    assert ds.labels.dtype.name == "int64"
    assert [p.name for p in ds.paths] == ["a.JPG", "b.png", "x.bmp"]
    assert ds.source(2) == str(folder / "dog" / "sub" / "x.bmp")
    assert ds.load_image(0).mode == "RGB" and ds.load_image(1).mode == "L"


def test_getitem_default_transform_and_settable_transform(folder):
    ds = ImageFolderDataset(folder)
    image, label = ds[1]
    assert label == 0 and isinstance(label, int)
    assert image.shape == (1, 4, 6) and image.dtype == torch.float32
    assert torch.allclose(image, torch.full((1, 4, 6), 0.2))  # 51 / 255
    ds.transform = lambda im: torch.tensor([float(im.size[0])])
    assert ds[2][0].item() == 6.0 and ds[2][1] == 1


def test_cache_keeps_decoded_images(folder):
    cached = ImageFolderDataset(folder)
    assert cached.load_image(0) is cached.load_image(0)
    uncached = ImageFolderDataset(folder, cache=False)
    assert uncached.load_image(0) is not uncached.load_image(0)


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))} has no class subfolders"):
        ImageFolderDataset(tmp_path)


def test_class_folder_without_images_is_named(folder):
    (folder / "empty").mkdir()
    (folder / "empty" / "readme.txt").write_text("x")
    expected = re.escape(f"class folder {folder / 'empty'} has no images")
    with pytest.raises(ValueError, match=expected):
        ImageFolderDataset(folder)


def test_undecodable_image_names_the_file(folder):
    (folder / "dog" / "broken.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(folder)
    broken = [p.name for p in ds.paths].index("broken.png")
    with pytest.raises(OSError, match="broken.png"):
        ds.load_image(broken)
