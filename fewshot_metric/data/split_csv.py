"""SplitCSVDataset: a `filename,label` CSV (Ravi & Larochelle miniImageNet split format)."""

from __future__ import annotations

import csv
from pathlib import Path

from fewshot_metric.data.base import FileListDataset, Transform

HEADER = ["filename", "label"]


class SplitCSVDataset(FileListDataset):
    """Rows `filename,label`; images in `image_root` (default: `images/` beside the CSV).

    Classes are the sorted distinct labels; items keep the row order.
    """

    def __init__(
        self,
        csv_path: str | Path,
        image_root: str | Path | None = None,
        transform: Transform | None = None,
        cache: bool = True,
    ):
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(
                f"split CSV {csv_path} does not exist; expected train.csv/val.csv/test.csv "
                "with the header 'filename,label'"
            )
        self.image_root = Path(image_root) if image_root is not None else csv_path.parent / "images"
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows or [cell.strip() for cell in rows[0]] != HEADER:
            found = ",".join(rows[0]) if rows else "<empty file>"
            raise ValueError(
                f"{csv_path}: header must be 'filename,label', found '{found}'; "
                "fix the first line"
            )
        paths: list[Path] = []
        names: list[str] = []
        missing: list[str] = []
        for row_number, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(
                    f"{csv_path}, row {row_number}: expected 2 non-empty fields "
                    f"'filename,label', found {len(row)} ({','.join(row)!r}); fix the row"
                )
            path = self.image_root / row[0].strip()
            if not path.is_file():
                missing.append(f"row {row_number}: {path}")
            paths.append(path)
            names.append(row[1].strip())
        if missing:
            raise FileNotFoundError(
                f"{csv_path}: {len(missing)} of {len(paths)} images not found under "
                f"{self.image_root} (first: {'; '.join(missing[:5])}); check image_root or "
                "the filenames"
            )
        if not paths:
            raise ValueError(f"{csv_path}: no rows after the header; list one image per row")
        self.csv_path = csv_path
        class_names = sorted(set(names))
        index = {name: label for label, name in enumerate(class_names)}
        labels = [index[name] for name in names]
        super().__init__(paths, class_names, labels, transform=transform, cache=cache)
