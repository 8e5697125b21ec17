"""Plain PNG files decoded by TorchCodec (libpng) instead of PIL.

For small images PIL's Python layer (plugin lookup, chunk parsing, EXIF handling) costs
several times the decoding itself: a 28x28 grey PNG took about 130 us through `open_image`
and `Preprocess.to_uint8`, about 48 us here (benchmarks/store_bench.py, query section). Only
files whose pixels need no conversion beyond scaling low-bit grey take this path: grey (1, 2,
4 or 8 bits) when one channel is wanted, 8-bit RGB when three are, no EXIF chunk. PNG is
lossless, so the pixels are exactly those PIL gives (tests/data/test_png.py compares them);
every other file returns None and goes to PIL.
"""

from __future__ import annotations

import struct

import torch
from PIL import Image
from torchcodec.decoders import decode_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (IHDR colour type, bit depth) -> channels: grey (0) of 1, 2, 4 or 8 bits, RGB (2) of 8 bits.
# libpng scales 1/2/4-bit grey to 0..255 by repeating the bits, as PIL's "L" conversion does.
_PLAIN_CHANNELS = {(0, 1): 1, (0, 2): 1, (0, 4): 1, (0, 8): 1, (2, 8): 3}
_IHDR_END = 8 + 8 + 13  # signature, chunk length + type, IHDR data


def decode_plain_png(data: bytes, channels: int) -> torch.Tensor | None:
    """Encoded bytes -> uint8 [channels, H, W] for a PNG already in `channels` (1: grey of
    1-8 bits, 3: 8-bit RGB) without EXIF data; None for anything else, including damaged files and
    images larger than `PIL.Image.MAX_IMAGE_PIXELS` (PIL then decodes them, or explains why
    it cannot)."""
    if len(data) < _IHDR_END or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    if _PLAIN_CHANNELS.get((color_type, bit_depth)) != channels:
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
