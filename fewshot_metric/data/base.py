"""FewShotDataset: labelled images with class names and groups, plus an in-memory decode cache."""

from __future__ import annotations

import io
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import v2

Transform = Callable[[Image.Image], torch.Tensor]


def to_float_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor [C, H, W] in [0, 1], channels as decoded (no normalisation)."""
    if image.mode == "1":
        image = image.convert("L")
    return v2.functional.to_dtype(v2.functional.pil_to_tensor(image), torch.float32, scale=True)


def open_image(data: str | Path | bytes, source: str) -> Image.Image:
    """Fully decodes an image from a path or from encoded bytes, upright as a viewer shows it
    (EXIF orientation applied); `source` names it in errors. Images of more than
    `PIL.Image.MAX_IMAGE_PIXELS` pixels are refused before any pixel is decoded (PIL would only
    warn up to twice that): a file that small and that large is likely a decompression bomb."""
    if not isinstance(data, bytes):
        if Path(data).is_dir():
            raise IsADirectoryError(f"{source} is a folder, not an image file; pass the image "
                                    f"files in it")
        if not Path(data).is_file():
            raise FileNotFoundError(f"image not found: {source}; check the path")
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and image.width * image.height > limit:
                raise Image.DecompressionBombError(
                    f"{image.width}x{image.height} pixels, more than PIL.Image.MAX_IMAGE_PIXELS "
                    f"= {limit}")
            image.load()
            return ImageOps.exif_transpose(image)
    # PIL's warning is raised, not shown, where warnings are errors (python -W error)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise OSError(f"image {source} is too large to decode safely ({exc}); it may be a "
                      f"decompression bomb: use a smaller image, or raise "
                      f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from exc
    except Image.UnidentifiedImageError as exc:  # its message ends in the file object's repr
        size = len(data) if isinstance(data, bytes) else Path(data).stat().st_size
        problem = ("the file is empty (0 bytes)" if size == 0 else
                   "it is not in an image format PIL reads, or is damaged beyond recognition")
        raise OSError(f"cannot decode image {source}: {problem}; replace or remove the "
                      f"file") from exc
    except (OSError, ValueError, EOFError) as exc:  # what PIL raises for damaged files
        raise OSError(f"cannot decode image {source}: {exc}; replace or remove the "
                      f"file") from exc


class DecodeCache:
    """Keeps decoded images by key when enabled; `get` decodes on first use only.

    `dict.setdefault` is atomic under the GIL, so two threads racing on one key both end up
    with the same stored image (one decode is wasted, nothing is corrupted).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._images: dict[Hashable, Image.Image] = {}

    def get(self, key: Hashable, decode: Callable[[Hashable], Image.Image]) -> Image.Image:
        if not self.enabled:
            return decode(key)
        image = self._images.get(key)
        if image is None:
            image = self._images.setdefault(key, decode(key))
        return image


class FewShotDataset(Dataset):
    """Images with integer labels into `class_names`; `__getitem__(i)` -> (tensor [C, H, W], label).

    Subclasses implement `_decode(i)` (PIL image, original mode) and `source(i)` (where item i
    comes from, for error messages). `transform` maps a PIL image to a tensor [C, H, W] and may
    be replaced at any time; the default only converts to float in [0, 1].
    """

    def __init__(
        self,
        class_names: Sequence[str],
        labels: np.ndarray | Sequence[int],
        class_groups: Sequence[str] | None = None,
        transform: Transform | None = None,
        cache: bool = True,
    ):
        self.class_names = list(class_names)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_groups = list(class_groups) if class_groups is not None else list(class_names)
        if len(self.class_groups) != len(self.class_names):
            raise ValueError(
                f"{type(self).__name__}: {len(self.class_groups)} class groups for "
                f"{len(self.class_names)} classes; give one group per class"
            )
        n_classes = len(self.class_names)
        if self.labels.ndim != 1 or not np.all((self.labels >= 0) & (self.labels < n_classes)):
            raise ValueError(
                f"{type(self).__name__}: labels must be a 1-D array of indices into "
                f"{n_classes} class names"
            )
        self.transform: Transform = transform if transform is not None else to_float_tensor
        self._cache = DecodeCache(cache)

    def _decode(self, i: int) -> Image.Image:
        raise NotImplementedError

    def source(self, i: int) -> str:
        """Where item i comes from (a path, or a path inside an archive)."""
        raise NotImplementedError

    def load_image(self, i: int) -> Image.Image:
        """Decoded image i in its original mode; kept in memory after the first call if cached."""
        return self._cache.get(i, self._decode)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load_image(i)), int(self.labels[i])


class FileListDataset(FewShotDataset):
    """Items read from image files: `paths[i]` holds item i, with label `labels[i]`."""

    def __init__(
        self,
        paths: Sequence[Path],
        class_names: Sequence[str],
        labels: Sequence[int],
        class_groups: Sequence[str] | None = None,
        transform: Transform | None = None,
        cache: bool = True,
    ):
        self.paths = list(paths)
        super().__init__(class_names, labels, class_groups, transform=transform, cache=cache)

    def _decode(self, i: int) -> Image.Image:
        return open_image(self.paths[i], self.source(i))

    def source(self, i: int) -> str:
        return str(self.paths[i])
