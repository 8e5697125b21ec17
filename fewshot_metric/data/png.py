"""Plain PNG files decoded by TorchCodec (libpng) instead of PIL.

For small images PIL's Python layer (plugin lookup, chunk parsing, EXIF handling) costs
several times the decoding itself: a 28x28 grey PNG took about 130 us through `open_image`
and `Preprocess.to_uint8`, about 48 us here (benchmarks/store_bench.py, query section). Only
files whose pixels need no conversion beyond scaling low-bit grey take this path: grey (1, 2,
4 or 8 bits) when one channel is wanted, 8-bit RGB when three are, and only chunks that
cannot change what PIL shows (no text, EXIF or colour profile chunks), all CRCs right. PNG is
lossless, so the pixels are exactly those PIL gives (tests/data/test_png.py compares them);
every other file returns None and goes to PIL.
"""

from __future__ import annotations

import struct
import zlib

import torch
from PIL import Image
from torchcodec.decoders import decode_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (IHDR colour type, bit depth) -> channels: grey (0) of 1, 2, 4 or 8 bits, RGB (2) of 8 bits.
# libpng scales 1/2/4-bit grey to 0..255 by repeating the bits, as PIL's "L" conversion does.
_PLAIN_CHANNELS = {(0, 1): 1, (0, 2): 1, (0, 4): 1, (0, 8): 1, (2, 8): 3}
_IHDR_END = 8 + 8 + 13  # signature, chunk length + type, IHDR data
# chunks that leave PIL's pixels of a grey or RGB image as the file stores them
_PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs",
                           b"tIME", b"bKGD", b"tRNS"})


def _only_plain_chunks(data: bytes) -> bool:
    """Whether every chunk is one PIL reads nothing from that changes the pixels or refuses
    the file over (text chunks can hold an EXIF or XMP orientation; PIL also rejects bad
    CRCs where libpng only warns), and every CRC but the image data's is right."""
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        end = at + 12 + length
        if kind not in _PLAIN_CHUNKS or end > len(data):
            return False
        if kind != b"IDAT" and zlib.crc32(data[at + 4:end - 4]) != int.from_bytes(
                data[end - 4:end], "big"):
            return False
        if kind == b"IEND":
            return True
        at = end
    return False


def decode_plain_png(data: bytes, channels: int) -> torch.Tensor | None:
    """Encoded bytes -> uint8 [channels, H, W] for a PNG already in `channels` (1: grey of
    1-8 bits, 3: 8-bit RGB) with only plain chunks; None for anything else, including
    damaged files and images larger than `PIL.Image.MAX_IMAGE_PIXELS` (PIL then decodes
    them, or explains why it cannot)."""
    if len(data) < _IHDR_END or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    if _PLAIN_CHANNELS.get((color_type, bit_depth)) != channels:
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if (limit and width * height > limit) or not _only_plain_chunks(data):
        return None
    try:
        pixels = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                            mode="UNCHANGED")
    except (RuntimeError, ValueError):  # libpng refused the file
        return None
    if pixels.dtype != torch.uint8 or tuple(pixels.shape) != (channels, height, width):
        return None  # e.g. a tRNS chunk expanded to an alpha channel
    return pixels
