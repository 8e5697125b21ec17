"""OmniglotDataset: `<alphabet>/<character>/*.png` read from the authors' zips or from folders."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fewshot_metric.data.base import FewShotDataset, Transform, open_image

SPLITS_FILE = Path(__file__).resolve().parent / "splits" / "omniglot_small.json"
ROTATIONS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
             Image.Transpose.ROTATE_270)  # counterclockwise, like np.rot90
ROTATION_SUFFIXES = ("", "/rot90", "/rot180", "/rot270")
HELP = "see data/README.md for how to get Omniglot"

# (alphabet, character) -> (zip file or None for loose files, sorted member names or paths)
Index = dict[tuple[str, str], tuple[Path | None, list[str] | list[Path]]]


def read_split_alphabets(split: str, split_file: str | Path = SPLITS_FILE) -> list[str]:
    """Alphabets of `split` ("train" | "val" | "test") in a splits JSON file."""
    try:
        splits = json.loads(Path(split_file).read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"cannot read Omniglot splits from {split_file} ({exc!r}); expected JSON like "
            '{"splits": {"train": ["Alphabet", ...], "val": [...], "test": [...]}}'
        ) from exc
    if split not in splits:
        raise ValueError(
            f"unknown Omniglot split '{split}' in {split_file}; choose one of "
            f"{', '.join([*splits, 'all'])}"
        )
    return list(splits[split])


def _zip_members(zip_path: Path) -> dict[tuple[str, str], list[str]]:
    """Members `<top>/<alphabet>/<character>/<file>.png` of one zip, grouped by character."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise ValueError(
            f"{zip_path} is not a readable zip ({exc}); download it again or move it out of "
            f"the Omniglot folder; {HELP}"
        ) from exc
    found: dict[tuple[str, str], list[str]] = {}
    for name in names:
        parts = name.split("/")
        if (len(parts) == 4 and parts[0] != "__MACOSX" and parts[3].lower().endswith(".png")
                and not parts[3].startswith(".")):
            found.setdefault((parts[1], parts[2]), []).append(name)
    return found


def _folder_files(folder: Path) -> dict[tuple[str, str], list[Path]]:
    """Files `folder/<alphabet>/<character>/<file>.png`, grouped by character."""
    found: dict[tuple[str, str], list[Path]] = {}
    for path in folder.glob("*/*/*.png"):
        if not path.name.startswith(".") and not path.parent.parent.name.startswith("."):
            found.setdefault((path.parent.parent.name, path.parent.name), []).append(path)
    return found


def _index(root: Path) -> Index:
    """Every character under root, without reading images. A character found in several places
    comes from the first (zips sorted by name, then root's own files, then its sorted subfolders),
    so the Greek and Latin overlap of the small1/small2 zips counts once."""
    index: Index = {}
    for zip_path in sorted(root.glob("*.zip")):
        for key, names in _zip_members(zip_path).items():
            index.setdefault(key, (zip_path, sorted(names)))
    folders = [root] + sorted(d for d in root.iterdir() if d.is_dir() and d.name[0] != ".")
    for folder in folders:
        for key, paths in _folder_files(folder).items():
            index.setdefault(key, (None, sorted(paths)))
    return index


def _read(index: Index, keys: list[tuple[str, str]]) -> list[list[tuple[str, bytes | Path]]]:
    """Per character in `keys`: (source description, encoded bytes or path) per drawing.
    Zip members are read into memory (a few MB for all of Omniglot), each zip opened once."""
    drawings: list[list[tuple[str, bytes | Path]]] = []
    archives: dict[Path, zipfile.ZipFile] = {}
    try:
        for key in keys:
            zip_path, names = index[key]
            if zip_path is None:
                drawings.append([(str(path), path) for path in names])
                continue
            if zip_path not in archives:
                archives[zip_path] = zipfile.ZipFile(zip_path)
            archive = archives[zip_path]
            drawings.append([(f"{zip_path}:{name}", archive.read(name)) for name in names])
    finally:
        for archive in archives.values():
            archive.close()
    return drawings


class OmniglotDataset(FewShotDataset):
    """Omniglot characters as classes `"<Alphabet>/<character>"`, grouped by alphabet.

    `root` holds the authors' zips (read in place, never extracted) and/or extracted folders
    (`root/<Alphabet>/<character>/*.png` or `root/<any>/<Alphabet>/<character>/*.png`).
    Select alphabets by `split` ("train" | "val" | "test" | "all", from `split_file`) or by an
    explicit `alphabets` list; neither means "all". `rotations=True` adds 90/180/270-degree
    counterclockwise copies of each character as classes `"<Alphabet>/<character>/rotN"`.
    Images are 1-bit ('1' mode) 105x105 for the authors' release.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        alphabets: Sequence[str] | None = None,
        rotations: bool = False,
        cache: bool = True,
        transform: Transform | None = None,
        split_file: str | Path = SPLITS_FILE,
    ):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"Omniglot folder {root} does not exist; {HELP}")
        if split is not None and alphabets is not None:
            raise ValueError(
                f"OmniglotDataset: give either split='{split}' or alphabets=[...], not both"
            )
        if split is not None and split != "all":
            alphabets = read_split_alphabets(split, split_file)
        if isinstance(alphabets, str):
            alphabets = [alphabets]
        if alphabets is not None and not alphabets:
            raise ValueError("OmniglotDataset: alphabets=[] selects nothing; name at least one")
        index = _index(root)
        if not index:
            raise FileNotFoundError(
                f"no Omniglot images in {root}: expected the authors' zips "
                f"(images_background*.zip) or folders <Alphabet>/<character>/*.png; {HELP}"
            )
        available = sorted({alphabet for alphabet, _ in index})
        missing = sorted(set(alphabets or ()) - set(available))
        if missing:
            raise ValueError(
                f"alphabets {missing} not found in {root} ({len(available)} available: "
                f"{', '.join(available)}); pick from those or add the missing data"
            )
        selected = set(available if alphabets is None else alphabets)
        keys = sorted(key for key in index if key[0] in selected)
        self.root = root
        self._sources: list[str] = []
        self._data: list[bytes | Path] = []
        file_index: list[int] = []
        rotation_index: list[int] = []
        labels: list[int] = []
        class_names: list[str] = []
        class_groups: list[str] = []
        for (alphabet, character), files in zip(keys, _read(index, keys), strict=True):
            first = len(self._data)
            self._sources += [source for source, _ in files]
            self._data += [data for _, data in files]
            for k in range(4 if rotations else 1):
                file_index += range(first, len(self._data))
                rotation_index += [k] * len(files)
                labels += [len(class_names)] * len(files)
                class_names.append(f"{alphabet}/{character}{ROTATION_SUFFIXES[k]}")
                class_groups.append(alphabet)
        self._file_index = np.asarray(file_index, dtype=np.int64)
        self._rotation_index = np.asarray(rotation_index, dtype=np.int64)
        super().__init__(class_names, labels, class_groups, transform=transform, cache=cache)

    @property
    def alphabets(self) -> list[str]:
        """Sorted alphabets in this dataset."""
        return sorted(set(self.class_groups))

    def _read_file(self, f: int) -> Image.Image:
        return open_image(self._data[f], self._sources[f])

    def load_image(self, i: int) -> Image.Image:
        """Decoded drawing i ('1' mode), rotated for rotated classes; files are cached."""
        image = self._cache.get(int(self._file_index[i]), self._read_file)
        rotation = ROTATIONS[self._rotation_index[i]]
        return image if rotation is None else image.transpose(rotation)

    def source(self, i: int) -> str:
        k = int(self._rotation_index[i])
        rotated = f" rotated {90 * k} degrees" if k else ""
        return f"{self._sources[self._file_index[i]]}{rotated}"
