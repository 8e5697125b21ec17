"""ImageFolderDataset: one subfolder per class under a root, image files inside."""

from __future__ import annotations

from pathlib import Path

from fewshot_metric.data.base import FileListDataset, Transform

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and (
        path.suffix.lower() in IMAGE_EXTENSIONS
    )


class ImageFolderDataset(FileListDataset):
    """`root/<class>/**/<image>`: classes are the sorted subfolder names, files sorted by path.

    Hidden entries (names starting with '.') are skipped; extensions match case-insensitively.
    """

    def __init__(self, root: str | Path, transform: Transform | None = None, cache: bool = True):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder {root} does not exist; give a folder with one subfolder per class"
            )
        class_dirs = sorted(
            d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        if not class_dirs:
            raise ValueError(
                f"image folder {root} has no class subfolders; put each class's images in "
                f"{root}/<class name>/"
            )
        paths: list[Path] = []
        labels: list[int] = []
        for label, class_dir in enumerate(class_dirs):
            files = sorted(p for p in class_dir.rglob("*") if _is_image(p))
            if not files:
                raise ValueError(
                    f"class folder {class_dir} has no images (extensions: "
                    f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
                )
            paths += files
            labels += [label] * len(files)
        self.root = root
        super().__init__(
            paths, [d.name for d in class_dirs], labels, transform=transform, cache=cache
        )
