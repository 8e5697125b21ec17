"""Plain PNG files decoded by libpng (png_decode.c, a C extension loaded with ctypes)
instead of PIL.

For small images PIL's Python layer (plugin lookup, chunk parsing, EXIF handling) costs
several times the decoding itself, and so does any per-image call from Python: a 28x28 grey
PNG took about 130 us through `open_image` and `Preprocess.to_uint8`, about 45 us read,
checked in Python and decoded by one TorchCodec call (this module's previous version), and
takes about 18 us per file on one core in `decode_plain_png_files`, which reads and decodes
a batch of files in one call per thread without the GIL (scratch timings; the query section
of benchmarks/store_bench.py times the whole path). Only files whose pixels need no
conversion beyond scaling low-bit grey take this path (png_decode.c says which); PNG is
lossless, so the pixels are exactly those PIL gives (tests/data/test_png.py compares them).
Every other file, and every file when the extension was not built, goes to PIL.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fewshot_metric.native import load_extension, split_over_threads

EXTENSION = "fewshot_metric.data._png_decode"
MIN_FILES_PER_THREAD = 16

_POINTER, _INT64 = ctypes.c_void_p, ctypes.c_int64


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    return load_extension(EXTENSION, {
        "fsm_png_is_plain": (ctypes.c_int, [_POINTER, _INT64, ctypes.c_int, _INT64, _INT64]),
        "fsm_png_decode": (ctypes.c_int, [_POINTER, _INT64, ctypes.c_int, _INT64, _INT64,
                                          _POINTER]),
        "fsm_png_decode_files": (_INT64, [_POINTER, _INT64, ctypes.c_int, _INT64, _INT64,
                                          _POINTER, _POINTER])})


def unavailable_reason() -> str | None:
    """None when libpng decodes plain PNGs here, else why not (PIL then decodes them)."""
    return _library()[1]


def _within_pil_limit(width: int, height: int) -> bool:
    """Whether PIL would open an image this large (`PIL.Image.MAX_IMAGE_PIXELS`; over it,
    PIL refuses the file and says why)."""
    limit = Image.MAX_IMAGE_PIXELS
    return not limit or width * height <= limit


def decode_plain_png(data: bytes, channels: int) -> torch.Tensor | None:
    """Encoded bytes -> uint8 [channels, H, W] for a plain PNG already in `channels` (1: grey
    of 1-8 bits, 3: 8-bit RGB); None for anything else, including damaged files and images
    larger than `PIL.Image.MAX_IMAGE_PIXELS` (PIL then decodes them, or explains why it
    cannot), and for every file when the extension is not built."""
    library = _library()[0]
    if library is None or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    if not _within_pil_limit(width, height):
        return None
    if not library.fsm_png_is_plain(data, len(data), channels, height, width):
        return None  # checked before allocating what the header claims
    pixels = torch.empty((channels, height, width), dtype=torch.uint8)
    decoded = library.fsm_png_decode(data, len(data), channels, height, width,
                                     pixels.data_ptr())
    if decoded < 0:
        raise MemoryError("could not allocate memory to decode a PNG")
    return pixels if decoded else None


def decode_plain_png_files(paths: Sequence[str | Path], channels: int, size: tuple[int, int],
                           threads: int) -> tuple[torch.Tensor, np.ndarray]:
    """Files -> (uint8 [N, channels, *size], bool [N]): the plain PNGs already at `size`
    (H, W) in `channels` decoded into their slots (True), read and decoded in one call per
    thread, up to `threads` threads, without the GIL; every other file (another size or
    format, missing, damaged) is False and its slot undefined: decode it otherwise."""
    pixels = torch.empty((len(paths), channels, *size), dtype=torch.uint8)
    decoded = np.zeros(len(paths), np.uint8)
    library = _library()[0]
    if library is None or not paths or not _within_pil_limit(size[1], size[0]):
        return pixels, decoded.astype(bool)
    encoded = [os.fsencode(path) for path in paths]
    encoded = [b"" if b"\0" in name else name for name in encoded]  # `decode` refuses those
    names = (ctypes.c_char_p * len(encoded))(*encoded)
    names_at, image_bytes = ctypes.addressof(names), channels * size[0] * size[1]

    def run(start: int, stop: int) -> int:
        return library.fsm_png_decode_files(
            names_at + start * ctypes.sizeof(ctypes.c_char_p), stop - start, channels,
            size[0], size[1], pixels.data_ptr() + start * image_bytes,
            decoded.ctypes.data + start)

    threads = max(1, min(threads, len(paths) // MIN_FILES_PER_THREAD))
    if min(split_over_threads(run, len(paths), threads, "png-decode")) < 0:
        raise MemoryError("could not allocate memory to decode PNG files")
    return pixels, decoded.astype(bool)
