"""A corpus of bad and unusual inputs, generated on the fly (no checked-in binaries).

Writers: `write_good_images`, `write_bad_images`, `write_unusual_images`, `write_bad_recipes`,
`write_bad_checkpoints`, `write_damaged_stores` (`relabel_store` for labels written before the
NFC rule), `write_malicious_files`; values: `BAD_LABELS`, `VALID_UNUSUAL_LABELS` (and
`STORED_UNUSUAL_LABELS`, as a store holds them: in NFC), `BAD_K`, `bad_embeddings(dim)`.
`CASES` runs every bad input through the Python API and the CLI;
`run_bad_input_cases(checkpoint, workdir)` runs them all and says which gave a clean error:
the expected exception (API) or exit code 2 with `fewshot-metric CMD: error: ...` on stderr
(CLI), a message naming the input and showing no Python repr (`Outcome.leaks_repr`), and
nothing changed (classes, counts, search answers, and every file under `workdir`, store.json
included).
Outside pytest (which puts this folder on sys.path for the tests beside it), import it with
`sys.path.insert(0, "tests/reliability")`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import re
import shutil
import struct
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from fewshot_metric import FewShotClassifier, PrototypeStore
from fewshot_metric.cli import main
from fewshot_metric.config import ConfigError, load_recipe
from fewshot_metric.store import IncompatibleEmbedderError, StoreFormatError
from fewshot_metric.store.persistence import LABELS_FILE, META_FILE, _meta_digest
from fewshot_metric.training.checkpoint import CheckpointError, load_model

# ----------------------------------------------------------------------------- images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height 8-bit gray pixels but holds 10 bytes of data:
    nothing large exists unless a reader allocates what the header declares."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 10)) + _png_chunk(b"IEND", b""))


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _noise(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))


def write_good_images(folder: Path) -> dict[str, Path]:
    """Four 28x28 glyph-like PNGs: a horizontal bar (h0, h1) and a vertical bar (v0, v1)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i in range(2):
        pixels = np.zeros((28, 28), np.uint8)
        pixels[12 + i:16 + i, 4:24] = 255
        paths[f"h{i}"] = folder / f"h{i}.png"
        Image.fromarray(pixels).save(paths[f"h{i}"])
        paths[f"v{i}"] = folder / f"v{i}.png"
        Image.fromarray(np.ascontiguousarray(pixels.T)).save(paths[f"v{i}"])
    return paths


BAD_IMAGES = ("zero_byte", "truncated_png", "truncated_jpeg", "text_as_png", "directory",
              "missing", "bomb", "oversized")


def write_bad_images(folder: Path) -> dict[str, Path]:
    """Unusable image files (and a folder, and a path that does not exist), by BAD_IMAGES
    name. `bomb` declares 100000x100000 pixels (PIL refuses it); `oversized` 10000x10000,
    over PIL.Image.MAX_IMAGE_PIXELS (89.5 M) but under twice it, where PIL only warns."""
    folder.mkdir(parents=True, exist_ok=True)
    png, jpeg = _encoded(_noise(64, 0), "PNG"), _encoded(_noise(64, 1), "JPEG", quality=90)
    contents = {
        "zero_byte": ("zero_byte.png", b""),
        "truncated_png": ("truncated.png", png[:len(png) // 2]),
        "truncated_jpeg": ("truncated.jpg", jpeg[:len(jpeg) // 2]),
        "text_as_png": ("notes.png", b"shopping list: milk, eggs\n"),
        "bomb": ("bomb.png", png_header_only(100_000, 100_000)),
        "oversized": ("oversized.png", png_header_only(10_000, 10_000)),
    }
    paths = {}
    for name, (filename, data) in contents.items():
        paths[name] = folder / filename
        paths[name].write_bytes(data)
    paths["directory"] = folder / "folder.png"
    paths["directory"].mkdir(exist_ok=True)
    paths["missing"] = folder / "missing.png"
    return {name: paths[name] for name in BAD_IMAGES}


UNUSUAL_IMAGES = ("one_by_one", "gray16", "palette", "rgba", "cmyk_jpeg", "exif_rotated",
                  "animated_gif")


def exif_upright() -> Image.Image:
    """What the `exif_rotated` photo shows: 32 wide, 48 high, black with a white 16x16 square
    in the top-left corner (blocks aligned to JPEG's 8x8 grid, so JPEG keeps them)."""
    pixels = np.zeros((48, 32), np.uint8)
    pixels[:16, :16] = 255
    return Image.fromarray(pixels)


def write_unusual_images(folder: Path) -> dict[str, Path]:
    """Valid images in unusual forms, by UNUSUAL_IMAGES name:

    one_by_one: 1x1 gray 200. gray16: 28x28 16-bit gray, left half 50 * 257, right half
    200 * 257. palette: 28x28 'P', left half red, right half blue. rgba: 28x28 black, top half
    opaque, bottom-left transparent, bottom-right alpha 128. cmyk_jpeg: 32x32 CMYK
    (0, 255, 255, 0), red. exif_rotated: `exif_upright()` stored turned 90 degrees
    counter-clockwise with EXIF orientation 6 (a viewer turns it back). animated_gif: 28x28,
    frame 0 gray 30, frame 1 gray 220.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in UNUSUAL_IMAGES}
    for name, suffix in (("cmyk_jpeg", ".jpg"), ("exif_rotated", ".jpg"),
                         ("animated_gif", ".gif")):
        paths[name] = paths[name].with_suffix(suffix)
    for name in ("one_by_one", "gray16", "palette", "rgba"):
        paths[name] = paths[name].with_suffix(".png")

    Image.new("L", (1, 1), 200).save(paths["one_by_one"])
    gray16 = np.full((28, 28), 50 * 257, np.uint16)
    gray16[:, 14:] = 200 * 257
    Image.fromarray(gray16).save(paths["gray16"])
    palette = Image.new("P", (28, 28), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.paste(1, (14, 0, 28, 28))
    palette.save(paths["palette"])
    rgba = Image.new("RGBA", (28, 28), (0, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 14, 14, 28))
    rgba.paste((0, 0, 0, 128), (14, 14, 28, 28))
    rgba.save(paths["rgba"])
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(paths["cmyk_jpeg"], quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: a viewer turns the stored pixels 90 degrees clockwise
    exif_upright().transpose(Image.Transpose.ROTATE_90).save(paths["exif_rotated"], quality=95,
                                                             exif=exif)
    frames = [Image.new("L", (28, 28), 30), Image.new("L", (28, 28), 220)]
    frames[0].save(paths["animated_gif"], save_all=True, append_images=frames[1:],
                   duration=100, loop=0)
    return paths


# ----------------------------------------------------------------------------- values

BAD_LABELS: dict[str, Any] = {"empty": "", "whitespace": " \t\n ", "not_a_string": 7,
                              "lone_surrogate": "a\udc80"}  # os.fsdecode of b"a\x80"

VALID_UNUSUAL_LABELS = {
    "slash": "a/b", "parent": "../../evil", "absolute": "/tmp/evil", "backslash": "..\\evil",
    "dot": ".", "newline": "x\nnewline", "windows_device": "con", "padded": " cat ",
    "cyrillic": "кошка", "cjk": "猫の写真", "arabic": "قطة", "emoji": "🐈‍⬛",
    "combining": "e\u0301",
}
# The labels as a store holds them: in Unicode NFC ("e\u0301" becomes "\u00e9")
STORED_UNUSUAL_LABELS = {name: unicodedata.normalize("NFC", label)
                         for name, label in VALID_UNUSUAL_LABELS.items()}

BAD_K: dict[str, Any] = {"zero": 0, "negative": -3, "bool": True, "float": 2.0}


def bad_embeddings(dim: int) -> dict[str, Any]:
    """Embeddings a store of dimension `dim` must refuse: add them with two labels
    (`label_count`: three), or search with them (`query_*`)."""
    zeros = np.zeros((2, dim), np.float32)
    nan, inf = zeros.copy(), zeros.copy()
    nan[1, 0], inf[1, 0] = np.nan, np.inf
    return {
        "nan": nan, "inf": inf, "too_large": np.full((2, dim), 1e39),
        "wrong_dim": np.zeros((2, dim + 1), np.float32), "one_dimensional": np.zeros(dim),
        "no_rows": np.zeros((0, dim), np.float32), "strings": [["a"] * dim] * 2,
        "ragged": [[0.0] * dim, [0.0] * (dim - 1)], "label_count": zeros,
        "query_nan": nan, "query_wrong_dim": np.zeros((1, dim - 1), np.float32),
    }


# ----------------------------------------------------------------------------- files

BAD_RECIPES = ("unknown_key", "wrong_type", "section_not_mapping", "missing_data_path",
               "python_tag", "not_yaml", "not_a_mapping", "not_utf8", "missing")


def python_tag_recipe(marker: Path) -> str:
    """A recipe whose tag, loaded with yaml.unsafe_load, would create the file `marker`."""
    return f"name: !!python/object/apply:builtins.open [{json.dumps(str(marker))}, w]\n"


def write_bad_recipes(folder: Path) -> dict[str, Path]:
    """Recipe files that cannot be trained, by BAD_RECIPES name. `missing_data_path` is valid
    YAML naming the data folder `folder/no_such_data`, which does not exist."""
    folder.mkdir(parents=True, exist_ok=True)
    contents: dict[str, str | bytes] = {
        "unknown_key": "train:\n  stepz: 5\n",
        "wrong_type": "train:\n  steps: many\n",
        "section_not_mapping": "train: 5\n",
        "missing_data_path": (f"data:\n  kind: folder\n  root: "
                              f"{json.dumps(str(folder / 'no_such_data'))}\n"),
        "python_tag": python_tag_recipe(folder / "recipe_ran_code"),
        "not_yaml": "train: [1, 2\n",
        "not_a_mapping": "- train\n- eval\n",
        "not_utf8": b"name: caf\xe9\n",
    }
    paths = {name: folder / f"{name}.yaml" for name in BAD_RECIPES}
    for name, text in contents.items():
        data = text if isinstance(text, bytes) else text.encode()
        paths[name].write_bytes(data)
    return paths


BAD_CHECKPOINTS = ("truncated", "text", "foreign_safetensors", "torch_pickle", "wrong_weights",
                   "damaged_metadata", "not_a_model_spec", "missing", "directory")


def write_bad_checkpoints(checkpoint: Path, folder: Path) -> dict[str, Path]:
    """Files that are not a usable checkpoint, by BAD_CHECKPOINTS name; the last four are
    made from the good `checkpoint` (one tensor dropped; spec not JSON; spec `{}`)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.safetensors" for name in BAD_CHECKPOINTS}
    paths["torch_pickle"] = folder / "torch_pickle.pt"
    data = checkpoint.read_bytes()
    paths["truncated"].write_bytes(data[:len(data) // 2])
    paths["text"].write_text("not a checkpoint\n")
    save_file({"w": torch.zeros(2)}, str(paths["foreign_safetensors"]))
    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    torch.save(tensors, paths["torch_pickle"])
    save_file(dict(list(tensors.items())[1:]), str(paths["wrong_weights"]), metadata=metadata)
    save_file(tensors, str(paths["damaged_metadata"]), metadata={**metadata, "spec": "{oops"})
    save_file(tensors, str(paths["not_a_model_spec"]), metadata={**metadata, "spec": "{}"})
    paths["directory"].mkdir(exist_ok=True)
    return paths


DAMAGED_STORES = ("missing_meta", "meta_not_json", "meta_class_removed", "label_blank",
                  "index_missing", "means_edited", "labels_collide_in_nfc", "not_a_store")
COLLIDING_LABELS = ["caf\u00e9", "cafe\u0301"]  # "café" composed, and e + combining acute


def relabel_store(folder: Path, labels: list[str]) -> None:
    """Writes `labels` into the saved store `folder` with store.json's checksums to match: a
    store as fewshot_metric wrote it before the NFC label rule."""
    (folder / LABELS_FILE).write_text(json.dumps(labels, ensure_ascii=False), encoding="utf-8")
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    meta["files"][LABELS_FILE] = hashlib.sha256((folder / LABELS_FILE).read_bytes()).hexdigest()
    meta["meta_sha256"] = _meta_digest(meta)
    (folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def write_damaged_stores(store: Path, folder: Path) -> dict[str, Path]:
    """Damaged copies of the saved prototype-mode `store` (at least two classes), by
    DAMAGED_STORES name; `labels_collide_in_nfc` has its first two labels replaced by
    COLLIDING_LABELS (checksums updated); `not_a_store` is a folder holding only
    notes.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in DAMAGED_STORES}
    for name in DAMAGED_STORES[:-1]:
        shutil.copytree(store, paths[name])
    meta = json.loads((store / "store.json").read_text(encoding="utf-8"))
    (paths["missing_meta"] / "store.json").unlink()
    (paths["meta_not_json"] / "store.json").write_text("{ this is not JSON")
    removed = {**meta, "classes": meta["classes"] - 1}
    (paths["meta_class_removed"] / "store.json").write_text(json.dumps(removed))
    labels = json.loads((store / "labels.json").read_text(encoding="utf-8"))
    (paths["label_blank"] / "labels.json").write_text(json.dumps(["   ", *labels[1:]]))
    (paths["index_missing"] / "index.faiss").unlink()
    means = bytearray((paths["means_edited"] / "means.npy").read_bytes())
    means[-1] ^= 0xFF
    (paths["means_edited"] / "means.npy").write_bytes(bytes(means))
    relabel_store(paths["labels_collide_in_nfc"], COLLIDING_LABELS + labels[2:])
    paths["not_a_store"].mkdir()
    (paths["not_a_store"] / "notes.txt").write_text("my notes\n")
    return paths


class CreatesFile:
    """Pickles to a call of open(path, "w"): unpickling it creates `path`."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def write_malicious_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Files that create `marker` when unpickled (or YAML-loaded unsafely): a raw pickle and a
    torch.save zip as checkpoints (.pt and .safetensors), a run folder's last.state.pt, local
    backbone weights (.pt and .safetensors), a recipe with a !!python tag, and a store whose
    store.json is a pickle."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"weight": CreatesFile(marker)}
    raw = pickle.dumps(payload, protocol=2)
    paths = {"checkpoint_pt": folder / "model.pt",
             "checkpoint_safetensors": folder / "model.safetensors",
             "checkpoint_torch_zip": folder / "model_zip.pt",
             "train_state": folder / "run" / "last.state.pt",
             "weights_pt": folder / "weights.pt",
             "weights_safetensors": folder / "weights.safetensors",
             "recipe": folder / "recipe.yaml",
             "store": folder / "store"}
    for name in ("checkpoint_pt", "checkpoint_safetensors", "weights_pt",
                 "weights_safetensors"):
        paths[name].write_bytes(raw)
    paths["train_state"].parent.mkdir(exist_ok=True)
    for name in ("checkpoint_torch_zip", "train_state"):
        torch.save(payload, paths[name])
    paths["recipe"].write_text(python_tag_recipe(marker))
    paths["store"].mkdir(exist_ok=True)
    (paths["store"] / "store.json").write_bytes(raw)
    return paths


# ----------------------------------------------------------------------------- the cases


class Workbench:
    """The inputs and stores the cases run against, built in `workdir`: a classifier with
    classes "horizontal" and "vertical" (one shot each) in memory and saved at `store`, an
    empty one (in memory and saved at `empty_store`), a regular file `store_file` given as a
    store, and every bad file."""

    def __init__(self, checkpoint: Path, workdir: Path):
        self.checkpoint, self.workdir = Path(checkpoint), Path(workdir)
        self.good = write_good_images(self.workdir / "good")
        self.bad = write_bad_images(self.workdir / "bad")
        self.recipes = write_bad_recipes(self.workdir / "recipes")
        self.checkpoints = write_bad_checkpoints(self.checkpoint, self.workdir / "checkpoints")
        self.mixed = self.workdir / "mixed"  # a class folder with good and bad images
        for name in ("good", "bad"):
            (self.mixed / name).mkdir(parents=True, exist_ok=True)
        for name in ("h0", "h1"):
            shutil.copy(self.good[name], self.mixed / "good" / f"{name}.png")
        shutil.copy(self.good["v0"], self.mixed / "bad" / "v0.png")
        self.mixed_bad = [shutil.copy(self.bad[name], self.mixed / "bad")
                          for name in ("zero_byte", "truncated_png", "text_as_png",
                                       "truncated_jpeg")]
        self.classifier = FewShotClassifier.from_checkpoint(self.checkpoint)
        self.classifier.register_many({"horizontal": [self.good["h0"]],
                                       "vertical": [self.good["v0"]]})
        self.store = self.workdir / "stores" / "store"
        self.classifier.save(self.store)
        self.empty = FewShotClassifier(self.classifier.embedder)
        self.empty_store = self.workdir / "stores" / "empty"
        self.empty.save(self.empty_store)
        self.damaged = write_damaged_stores(self.store, self.workdir / "stores" / "damaged")
        self.store_file = self.workdir / "stores" / "a_file"  # a regular file, not a folder
        self.store_file.write_text("not a store\n")
        self.probe = self.classifier.embedder.embed(list(self.good.values()))
        self.embeddings = bad_embeddings(self.classifier.embedder.dim)

    def snapshot(self, memory: bool = True) -> tuple[Any, ...]:
        """What no failed call may change: the in-memory classifiers' classes, counts and
        answers to probe queries (if `memory`; a CLI call cannot touch them), the bytes of every
        file in the stores folder, the sizes and modification times of all other files under
        workdir, and the folders. The advisory `*.lock` file a load creates beside a store (by
        design) is left out."""
        state: tuple[Any, ...] = ()
        if memory:
            store = self.classifier.store
            answer = store.search(self.probe, k=len(store))
            state = (store.counts, answer.labels, answer.distances.tolist(),
                     self.empty.store.counts)
        stores = self.workdir / "stores"
        files = []
        for path in sorted(self.workdir.rglob("*")):
            if path.suffix == ".lock":
                continue
            if path.is_dir():
                files.append((path, "folder"))
            elif stores in path.parents:
                files.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
            else:
                stat = path.stat()
                files.append((path, (stat.st_size, stat.st_mtime_ns)))
        return (*state, files)


@dataclass(frozen=True)
class Case:
    """A bad input given to one entry point. `call(bench)` makes an API call (which must
    raise `expected`) or returns CLI arguments (`expected` None: exit code 2);
    `subjects(bench)` are what the message must name."""

    name: str
    call: Callable[[Workbench], Any]
    expected: type[BaseException] | None
    subjects: Callable[[Workbench], list[str]]


REPR = re.compile(r"object at 0x[0-9a-fA-F]+|<[A-Za-z_][\w.]* object\b")


@dataclass(frozen=True)
class Outcome:
    """What a case gave: `error` (exception type, or "exit N"), the message, whether it was
    the expected error, whether the message names every subject, whether nothing changed."""

    error: str
    message: str
    expected_error: bool
    names_input: bool
    unchanged: bool

    @property
    def leaks_repr(self) -> bool:
        """Whether the message shows a Python object's repr ("<_io.BytesIO object at 0x...>"),
        noise to a user."""
        return bool(REPR.search(self.message))

    @property
    def clean(self) -> bool:
        return self.expected_error and self.names_input and self.unchanged and not self.leaks_repr

    def report(self) -> str:
        problems = [text for ok, text in ((self.expected_error, f"unexpected {self.error}"),
                                          (self.names_input, "does not name the input"),
                                          (self.unchanged, "changed the store or files"),
                                          (not self.leaks_repr, "shows a Python repr"))
                    if not ok]
        return self.message if not problems else f"{'; '.join(problems)}: {self.message}"


def _cli(argv: list[str]) -> tuple[str, str, bool]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
        except Exception as error:  # an error that escaped main: never clean
            return type(error).__name__, str(error), False
    message = err.getvalue().strip()
    prefix = f"fewshot-metric {argv[0]}: error: "
    return f"exit {code}", message, code == 2 and message.startswith(prefix)


def run_case(case: Case, bench: Workbench) -> Outcome:
    memory = case.expected is not None
    before = bench.snapshot(memory)
    if case.expected is None:
        error, message, expected = _cli([str(arg) for arg in case.call(bench)])
    else:
        try:
            case.call(bench)
            error, message, expected = "no error", "", False
        except Exception as exc:
            error, message = type(exc).__name__, str(exc)
            expected = isinstance(exc, case.expected)
    names = all(subject in message for subject in case.subjects(bench))
    return Outcome(error, message, expected, names, bench.snapshot(memory) == before)


def _image_cases() -> list[Case]:
    cases = []
    for key in BAD_IMAGES:
        expected = {"missing": FileNotFoundError, "directory": IsADirectoryError}.get(key, OSError)

        def path(b: Workbench, key: str = key) -> Path:
            return b.bad[key]

        def subjects(b: Workbench, key: str = key) -> list[str]:
            return [str(b.bad[key])]

        cases += [
            Case(f"image/{key}/api_register", lambda b, path=path: b.classifier.register_many(
                {"horizontal": [b.good["h1"]], "new": [b.good["v1"], path(b)]}),
                 expected, subjects),
            Case(f"image/{key}/api_query",
                 lambda b, path=path: b.classifier.query([b.good["h1"], path(b)]),
                 expected, subjects),
            Case(f"image/{key}/cli_register", lambda b, path=path: [
                "register", "--store", b.store, "--label", "horizontal", b.good["h1"], path(b),
                "--quiet"], None, subjects),
            Case(f"image/{key}/cli_query", lambda b, path=path: [
                "query", "--store", b.store, b.good["h1"], path(b), "--quiet"], None, subjects),
        ]

    def several(b: Workbench) -> list[str]:
        return [str(path) for path in b.mixed_bad]

    def missing(b: Workbench) -> list[str]:
        return [str(b.workdir / "gone1.png"), str(b.workdir / "gone2.png")]

    return cases + [
        Case("image/several_bad/api_register", lambda b: b.classifier.register(
            "new", [b.good["h1"], *b.mixed_bad]), OSError, several),
        Case("image/several_bad/api_query", lambda b: b.classifier.query(
            [*b.mixed_bad, b.good["h1"]]), OSError, several),
        Case("image/several_bad/api_register_folder",
             lambda b: b.classifier.register_folder(b.mixed), OSError, several),
        Case("image/several_bad/cli_register_folder", lambda b: [
            "register", "--store", b.store, "--folder", b.mixed, "--quiet"], None, several),
        Case("image/several_missing/cli_register", lambda b: [
            "register", "--store", b.store, "--label", "new", b.good["h1"], *missing(b)],
             None, missing),
    ]


def _label_cases() -> list[Case]:
    cases = []
    for key, label in BAD_LABELS.items():
        def subjects(b: Workbench, label: Any = label) -> list[str]:
            return [repr(label)]

        cases += [
            Case(f"label/{key}/api_register", lambda b, label=label: b.classifier.register_many(
                {label: [b.good["h1"]]}), ValueError, subjects),
            Case(f"label/{key}/api_store_add", lambda b, label=label: b.classifier.store.add(
                b.probe[:1], [label]), ValueError, subjects),
            Case(f"label/{key}/api_store_rename", lambda b, label=label:
                 b.classifier.store.rename("horizontal", label), ValueError, subjects),
        ]
        if isinstance(label, str):
            cases += [
                Case(f"label/{key}/cli_register", lambda b, label=label: [
                    "register", "--store", b.store, "--label", label, b.good["h1"], "--quiet"],
                     None, subjects),
                Case(f"label/{key}/cli_rename", lambda b, label=label: [
                    "store", "rename", b.store, "horizontal", label], None, subjects),
            ]
    return cases


def _embedding_cases() -> list[Case]:
    subjects = {"nan": ["row 1 (label 'new') of embeddings"],
                "inf": ["row 1 (label 'new') of embeddings"],
                "too_large": ["row 0 (label 'new') of embeddings"],
                "wrong_dim": ["embeddings", "dim"], "one_dimensional": ["embeddings", "shape"],
                "no_rows": ["embeddings", "shape"], "strings": ["embeddings", "dtype"],
                "ragged": ["embeddings"], "label_count": ["embeddings", "labels"],
                "query_nan": ["row 1 of query_emb"], "query_wrong_dim": ["query_emb", "dim"]}
    cases = []
    for key, named in subjects.items():
        expected = IncompatibleEmbedderError if key.endswith("wrong_dim") else ValueError
        if key.startswith("query_"):
            def call(b: Workbench, key: str = key) -> Any:
                return b.classifier.store.search(b.embeddings[key], k=1)
        else:
            def call(b: Workbench, key: str = key) -> Any:
                labels = ["new"] * (3 if key == "label_count" else 2)
                return b.classifier.store.add(b.embeddings[key], labels)
        cases.append(Case(f"embedding/{key}/api_store", call, expected,
                          lambda b, named=named: named))
    return cases


def _k_cases() -> list[Case]:
    cases = []
    for key, k in BAD_K.items():
        def subjects(b: Workbench, k: Any = k) -> list[str]:
            return ["k must be an int >= 1", f"got {k!r}"]

        cases += [
            Case(f"k/{key}/api_query", lambda b, k=k: b.classifier.query([b.good["h1"]], k=k),
                 ValueError, subjects),
            Case(f"k/{key}/api_store_search", lambda b, k=k: b.classifier.store.search(
                b.probe, k=k), ValueError, subjects),
        ]
        if isinstance(k, int) and not isinstance(k, bool):
            cases.append(Case(f"k/{key}/cli_query", lambda b, k=k: [
                "query", "--store", b.store, b.good["h1"], "--k", k], None, subjects))
    return cases


def _empty_store_cases() -> list[Case]:
    return [
        Case("empty_store/classifier/api_query", lambda b: b.empty.query([b.good["h1"]]),
             ValueError, lambda b: ["store has no classes"]),
        Case("empty_store/store/api_search", lambda b: b.empty.store.search(b.probe),
             ValueError, lambda b: ["store has no classes"]),
        Case("empty_store/folder/cli_query", lambda b: [
            "query", "--store", b.empty_store, b.good["h1"]], None,
             lambda b: [str(b.empty_store), "has no classes"]),
    ]


def _train(recipe: Path, out: Path) -> None:
    from fewshot_metric.training.trainer import Trainer

    Trainer(load_recipe(recipe), out, progress=False)


def _recipe_cases() -> list[Case]:
    cases = []
    for key in BAD_RECIPES:
        def subjects(b: Workbench, key: str = key) -> list[str]:
            if key == "missing_data_path":
                return [str(b.recipes[key].parent / "no_such_data")]
            return [str(b.recipes[key])]

        if key == "missing_data_path":
            api = Case(f"recipe/{key}/api_trainer", lambda b, key=key: _train(
                b.recipes[key], b.workdir / "runs" / key), FileNotFoundError, subjects)
        else:
            api = Case(f"recipe/{key}/api_load_recipe",
                       lambda b, key=key: load_recipe(b.recipes[key]), ConfigError, subjects)
        cases += [api, Case(f"recipe/{key}/cli_train", lambda b, key=key: [
            "train", b.recipes[key], "--out", b.workdir / "runs" / key, "--quiet"],
                            None, subjects)]
    return cases


def _checkpoint_cases() -> list[Case]:
    cases = []
    for key in BAD_CHECKPOINTS:
        def path(b: Workbench, key: str = key) -> Path:
            return b.checkpoints[key]

        def subjects(b: Workbench, key: str = key) -> list[str]:
            return [str(b.checkpoints[key])]

        cases += [
            Case(f"checkpoint/{key}/api_load_model", lambda b, path=path: load_model(path(b)),
                 CheckpointError, subjects),
            Case(f"checkpoint/{key}/api_classifier_load", lambda b, path=path:
                 FewShotClassifier.load(b.store, checkpoint=path(b)), CheckpointError,
                 subjects),
            Case(f"checkpoint/{key}/cli_register_new", lambda b, path=path, key=key: [
                "register", "--store", b.workdir / "stores" / f"new_{key}", "--checkpoint",
                path(b), "--label", "new", b.good["h1"], "--quiet"], None, subjects),
            Case(f"checkpoint/{key}/cli_query", lambda b, path=path: [
                "query", "--store", b.store, "--checkpoint", path(b), b.good["h1"], "--quiet"],
                 None, subjects),
            Case(f"checkpoint/{key}/cli_eval", lambda b, path=path: [
                "eval", path(b), "--episodes", 2], None, subjects),
        ]
    return cases


def _store_cases() -> list[Case]:
    cases = []
    for key in DAMAGED_STORES:
        def folder(b: Workbench, key: str = key) -> Path:
            return b.damaged[key]

        def subjects(b: Workbench, key: str = key) -> list[str]:
            return [str(b.damaged[key])]

        cases += [
            Case(f"store/{key}/api_store_load", lambda b, folder=folder: PrototypeStore.load(
                folder(b)), StoreFormatError, subjects),
            Case(f"store/{key}/api_classifier_load", lambda b, folder=folder:
                 FewShotClassifier.load(folder(b), checkpoint=b.checkpoint), StoreFormatError,
                 subjects),
            Case(f"store/{key}/cli_info", lambda b, folder=folder: [
                "store", "info", folder(b)], None, subjects),
            Case(f"store/{key}/cli_query", lambda b, folder=folder: [
                "query", "--store", folder(b), b.good["h1"], "--quiet"], None, subjects),
            Case(f"store/{key}/cli_register", lambda b, folder=folder: [
                "register", "--store", folder(b), "--label", "new", b.good["h1"], "--quiet"],
                 None, subjects),
            Case(f"store/{key}/cli_register_checkpoint", lambda b, folder=folder: [
                "register", "--store", folder(b), "--checkpoint", b.checkpoint, "--label",
                "new", b.good["h1"], "--quiet"], None, subjects),
        ]
    return cases


def _images_argument_cases() -> list[Case]:
    """register(label, images) given one image instead of a list, or none."""
    def one_path(b: Workbench) -> Any:
        return b.classifier.register("new", str(b.good["h1"]))

    def one_image(b: Workbench) -> Any:
        return b.classifier.register("new", Image.open(b.good["h1"]))

    return [
        Case("images_argument/one_path/api_register", one_path, ValueError,
             lambda b: ["class 'new'", f"pass a list: [{str(b.good['h1'])!r}]"]),
        Case("images_argument/one_pil_image/api_register", one_image, ValueError,
             lambda b: ["class 'new'", "one PIL image; pass a list"]),
        Case("images_argument/empty/api_register", lambda b: b.classifier.register("new", []),
             ValueError, lambda b: ["class 'new'", "an empty list"]),
    ]


def _store_file_cases() -> list[Case]:
    def subjects(b: Workbench) -> list[str]:
        return [str(b.store_file), "it is a file"]

    return [
        Case("store_file/api_store_load", lambda b: PrototypeStore.load(b.store_file),
             NotADirectoryError, subjects),
        Case("store_file/api_classifier_load", lambda b: FewShotClassifier.load(
            b.store_file, checkpoint=b.checkpoint), NotADirectoryError, subjects),
        Case("store_file/cli_query", lambda b: [
            "query", "--store", b.store_file, b.good["h1"], "--quiet"], None, subjects),
        Case("store_file/cli_info", lambda b: ["store", "info", b.store_file], None, subjects),
        Case("store_file/cli_remove", lambda b: ["store", "remove", b.store_file, "horizontal"],
             None, subjects),
        Case("store_file/cli_register", lambda b: [
            "register", "--store", b.store_file, "--label", "new", b.good["h1"], "--quiet"],
             None, lambda b: [str(b.store_file), "is a file"]),
    ]


CASES: dict[str, Case] = {case.name: case for case in (
    _image_cases() + _label_cases() + _embedding_cases() + _k_cases() + _empty_store_cases()
    + _recipe_cases() + _checkpoint_cases() + _store_cases() + _store_file_cases()
    + _images_argument_cases())}


def run_bad_input_cases(checkpoint: Path, workdir: Path) -> list[tuple[str, bool, str]]:
    """(case name, clean, message) for every case in CASES, run against a Workbench in
    `workdir`; when not clean the message starts with what was wrong."""
    bench = Workbench(checkpoint, workdir)
    rows = []
    for case in CASES.values():
        outcome = run_case(case, bench)
        rows.append((case.name, outcome.clean, outcome.report()))
    return rows
