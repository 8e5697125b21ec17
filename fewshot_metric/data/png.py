"""Plain PNG files decoded by TorchCodec (libpng) instead of PIL.

For small images PIL's Python layer (plugin lookup, chunk parsing, EXIF handling) costs
several times the decoding itself: a 28x28 grey PNG took about 130 us through `open_image`
and `Preprocess.to_uint8`, about 40 us here (benchmarks/store_bench.py, query section). Only
files whose pixels need no conversion take this path: 8-bit grey when one channel is wanted,
8-bit RGB when three are, no EXIF chunk. PNG is lossless, so the pixels are exactly those PIL
gives (tests/data/test_png.py compares them); every other file returns None and goes to PIL.
"""

from __future__ import annotations

import struct

import torch
from PIL import Image
from torchcodec.decoders import decode_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS_OF_COLOR_TYPE = {0: 1, 2: 3}  # IHDR colour type -> channels: 0 grey, 2 RGB
_IHDR_END = 8 + 8 + 13  # signature, chunk length + type, IHDR data


def decode_plain_png(data: bytes, channels: int) -> torch.Tensor | None:
    """Encoded bytes -> uint8 [channels, H, W] for an 8-bit PNG already in `channels`
    (1: grey, 3: RGB) without EXIF data; None for anything else, including damaged files and
    images larger than `PIL.Image.MAX_IMAGE_PIXELS` (PIL then decodes them, or explains why
    it cannot)."""
    if len(data) < _IHDR_END or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    if bit_depth != 8 or _CHANNELS_OF_COLOR_TYPE.get(color_type) != channels:
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if (limit and width * height > limit) or b"eXIf" in data:  # EXIF may rotate: PIL's job
        return None
    try:
        pixels = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                            mode="UNCHANGED")
    except (RuntimeError, ValueError):  # libpng refused the file
        return None
    if pixels.dtype != torch.uint8 or tuple(pixels.shape) != (channels, height, width):
        return None  # e.g. a tRNS chunk expanded to an alpha channel
    return pixels
