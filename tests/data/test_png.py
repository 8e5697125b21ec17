"""decode_plain_png(_files), libpng through png_decode.c: the pixels PIL gives for plain grey /
RGB PNGs, None (not decoded) for the rest; Embedder.decode and decode_many give the same
tensors through it as through PIL, and the same when the extension is missing."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_metric.backbones import create_backbone
from fewshot_metric.data import png
from fewshot_metric.data.base import open_image
from fewshot_metric.data.png import decode_plain_png, decode_plain_png_files
from fewshot_metric.distances import build_distance
from fewshot_metric.embedder import Embedder
from fewshot_metric.model import FewShotModel

reason = png.unavailable_reason()
if reason is not None and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the PNG decoder extension: {reason}")
needs_decoder = pytest.mark.skipif(reason is not None, reason=f"PNG decoder: {reason}")


def png_bytes(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data))


def grey_png(levels: list[list[int]], depth: int) -> bytes:
    """A grey PNG of `depth` bits per pixel, rows of levels 0..2**depth - 1, filter type 0."""
    per_byte = 8 // depth
    raw = b""
    for row in levels:
        packed = bytearray(-(-len(row) // per_byte))
        for x, level in enumerate(row):
            packed[x // per_byte] |= level << (8 - depth * (x % per_byte + 1))
        raw += b"\x00" + bytes(packed)
    header = struct.pack(">IIBBBBB", len(levels[0]), len(levels), depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@needs_decoder
def test_grey_png_written_by_hand_decodes_to_its_bytes() -> None:
    # 3 wide, 2 high, 8-bit grey: the pixels are the row bytes
    data = grey_png([[0, 10, 20], [250, 128, 1]], depth=8)
    pixels = decode_plain_png(data, channels=1)
    assert pixels is not None and pixels.dtype == torch.uint8
    assert pixels.tolist() == [[[0, 10, 20], [250, 128, 1]]]
    assert decode_plain_png(data, channels=3) is None  # grey, but RGB wanted: PIL converts


@needs_decoder
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_low_bit_grey_is_scaled_to_0_255_as_pil_does(depth: int) -> None:
    top = 2**depth - 1
    levels = [[x % (top + 1) for x in range(11)], [top - x % (top + 1) for x in range(11)]]
    data = grey_png(levels, depth)
    pixels = decode_plain_png(data, channels=1)
    assert pixels is not None
    step = 255 // top  # 255, 85, 17
    assert pixels[0].tolist() == [[level * step for level in row] for row in levels]
    image = Image.open(io.BytesIO(data))
    assert np.array_equal(pixels[0].numpy(), np.asarray(image.convert("L")))


@needs_decoder
@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
@pytest.mark.parametrize("interlace", [0, 1])
def test_plain_png_matches_pil(mode: str, channels: int, interlace: int) -> None:
    rng = np.random.default_rng(channels)
    shape = (17, 23) if channels == 1 else (17, 23, 3)
    image = Image.fromarray(rng.integers(0, 256, shape, np.uint8), mode)
    data = png_bytes(image, interlace=interlace)
    pixels = decode_plain_png(data, channels)
    assert pixels is not None and tuple(pixels.shape) == (channels, 17, 23)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert(mode))
    assert np.array_equal(pixels.permute(1, 2, 0).squeeze(2).numpy(), expected)


@needs_decoder
def test_grey_png_with_a_transparent_value_keeps_its_grey_values() -> None:
    # PIL opens it as mode "L" (transparency only in .info) and convert_mode leaves it so
    grey = np.random.default_rng(5).integers(0, 256, (9, 7), np.uint8)
    data = png_bytes(Image.fromarray(grey), transparency=0)
    pixels = decode_plain_png(data, channels=1)
    assert pixels is not None and np.array_equal(pixels[0].numpy(), grey)


def other_pngs() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (9, 7), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    palette = Image.fromarray(grey).convert("P")
    return {
        "RGBA": png_bytes(Image.fromarray(rng.integers(0, 256, (9, 7, 4), np.uint8), "RGBA")),
        "grey + alpha": png_bytes(Image.fromarray(grey).convert("LA")),
        "palette": png_bytes(palette),
        "16-bit grey": png_bytes(Image.fromarray(grey.astype(np.uint16) * 257)),
        "EXIF rotated": png_bytes(Image.fromarray(grey), exif=exif),
        "truncated": png_bytes(Image.fromarray(grey))[:-30],
        "JPEG": (lambda b: (Image.fromarray(grey).save(b, format="JPEG"), b.getvalue())[1])(
            io.BytesIO()),
        "empty": b"",
    }


def with_chunk(data: bytes, extra: bytes) -> bytes:
    """`data` with the chunk bytes `extra` inserted right after IHDR."""
    at = 8 + 12 + 13
    return data[:at] + extra + data[at:]


@needs_decoder
def test_chunks_that_cannot_change_pil_pixels_keep_the_fast_path() -> None:
    grey = np.random.default_rng(6).integers(0, 256, (5, 4), np.uint8)
    data = with_chunk(png_bytes(Image.fromarray(grey)),
                      chunk(b"gAMA", struct.pack(">I", 45455)) + chunk(b"sRGB", b"\x00"))
    pixels = decode_plain_png(data, channels=1)
    assert pixels is not None and np.array_equal(pixels[0].numpy(), grey)


XMP_ROTATED = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/'
               b'1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/'
               b'tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("extra", [
    chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP_ROTATED),  # PIL rotates
    chunk(b"tEXt", b"Comment\x00hello"),  # any text chunk could carry an orientation
    chunk(b"gAMA", struct.pack(">I", 45455))[:-1] + b"\x00",  # bad CRC: PIL refuses the file
    chunk(b"prVt", b"private data"),  # a chunk nobody here knows
], ids=["XMP orientation", "text", "bad CRC", "unknown chunk"])
def test_other_chunks_go_to_pil(extra: bytes) -> None:
    grey = np.random.default_rng(7).integers(0, 256, (5, 4), np.uint8)
    data = with_chunk(png_bytes(Image.fromarray(grey)), extra)
    assert decode_plain_png(data, channels=1) is None


def test_xmp_orientation_is_applied_on_the_pil_path(tmp_path: Path) -> None:
    grey = np.random.default_rng(8).integers(0, 256, (5, 4), np.uint8)  # 4 wide, 5 high
    extra = chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP_ROTATED)
    (tmp_path / "rotated.png").write_bytes(with_chunk(png_bytes(Image.fromarray(grey)), extra))
    model = embedder(1, 28)
    upright = open_image(tmp_path / "rotated.png", "rotated.png")
    assert upright.size == (5, 4)
    assert torch.equal(model.decode(tmp_path / "rotated.png"), model.transform.to_uint8(upright))


@pytest.mark.parametrize("name", list(other_pngs()))
def test_anything_else_goes_to_pil(name: str) -> None:
    assert decode_plain_png(other_pngs()[name], channels=1) is None


@needs_decoder
def test_images_over_pil_pixel_limit_go_to_pil(monkeypatch: pytest.MonkeyPatch) -> None:
    data = png_bytes(Image.fromarray(np.zeros((10, 10), np.uint8)))
    assert decode_plain_png(data, 1) is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 99)
    assert decode_plain_png(data, 1) is None  # open_image then refuses it, naming the file


def embedder(in_chans: int, size: int) -> Embedder:
    torch.manual_seed(0)
    backbone = create_backbone("conv4", in_chans=in_chans, image_size=size)
    return Embedder(FewShotModel(backbone, "prototypical", {}, build_distance("sqeuclidean")),
                    {}, device="cpu")


@pytest.mark.parametrize("in_chans", [1, 3])
def test_embedder_decode_equals_the_pil_path(in_chans: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    files = {  # the target is 28x28: some files are resized, some converted, some neither
        "grey28.png": Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8)),
        "grey40x31.png": Image.fromarray(rng.integers(0, 256, (31, 40), np.uint8)),
        "rgb28.png": Image.fromarray(rng.integers(0, 256, (28, 28, 3), np.uint8)),
        "rgb50.png": Image.fromarray(rng.integers(0, 256, (50, 50, 3), np.uint8)),
        "rgba28.png": Image.fromarray(rng.integers(0, 256, (28, 28, 4), np.uint8), "RGBA"),
        "bilevel105.png": Image.fromarray(rng.integers(0, 2, (105, 105), np.uint8) > 0),
    }
    model = embedder(in_chans, 28)
    for name, image in files.items():
        image.save(tmp_path / name)
        fast = model.decode(tmp_path / name)
        pil = model.transform.to_uint8(open_image(tmp_path / name, name))
        assert fast.dtype == torch.uint8 and tuple(fast.shape) == (in_chans, 28, 28), name
        assert torch.equal(fast, pil), name


def test_embedder_decode_errors_still_name_the_file(tmp_path: Path) -> None:
    model = embedder(1, 28)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        model.decode(tmp_path / "missing.png")
    with pytest.raises(IsADirectoryError, match="a folder"):
        model.decode(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(OSError, match=r"cannot decode image .*bad\.png"):
        model.decode(tmp_path / "bad.png")


@needs_decoder
def test_omniglot_drawings_decode_as_pil_decodes_them(omniglot_dir: Path) -> None:
    # the authors' PNGs are 105x105 1-bit grey: all of the first zip's first 400 take the fast
    # path and give PIL's pixels, at the file's size and resized for Conv-4
    transform = embedder(1, 28).transform
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))[:400]
        assert len(names) == 400
        for name in names:
            data = archive.read(name)
            pixels = decode_plain_png(data, channels=1)
            assert pixels is not None, name
            image = open_image(data, name)
            assert np.array_equal(pixels[0].numpy(), np.asarray(image.convert("L"))), name
            assert torch.equal(transform.to_uint8(pixels), transform.to_uint8(image)), name


def grey_6x5_png(idat: bytes) -> bytes:
    """A PNG of 8-bit grey, 5 wide and 6 high, with `idat` as its image data: every chunk
    and CRC right, whatever the data holds."""
    header = struct.pack(">IIBBBBB", 5, 6, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


GREY_ROWS = np.random.default_rng(9).integers(0, 256, (6, 5), np.uint8)
RAW_ROWS = b"".join(b"\x00" + row.tobytes() for row in GREY_ROWS)  # filter type 0 per row


@needs_decoder
def test_hand_made_image_data_decodes_and_damaged_data_is_not_decoded() -> None:
    pixels = decode_plain_png(grey_6x5_png(zlib.compress(RAW_ROWS)), 1)
    assert pixels is not None and np.array_equal(pixels[0].numpy(), GREY_ROWS)
    damaged = {
        "rows missing": zlib.compress(RAW_ROWS[:-12]),
        "not a zlib stream": b"\x00" * 20,
        "unknown filter type": zlib.compress(b"\x07" + RAW_ROWS[1:]),
        "stream cut short": zlib.compress(RAW_ROWS)[:-9],
    }
    for name, idat in damaged.items():  # libpng errors or warns: never half-decoded pixels
        assert decode_plain_png(grey_6x5_png(idat), 1) is None, name


def write_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


@needs_decoder
def test_files_at_the_size_are_decoded_and_the_rest_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    grey = rng.integers(0, 256, (3, 6, 5), np.uint8)  # 6 high, 5 wide
    paths = write_files(tmp_path, {
        "plain.png": png_bytes(Image.fromarray(grey[0])),
        "interlaced.png": png_bytes(Image.fromarray(grey[1]), interlace=1),
        "bilevel.png": png_bytes(Image.fromarray(grey[2] > 127)),  # 1 bit per pixel
        "5 high.png": png_bytes(Image.fromarray(grey[0][:5])),
        "rgb.png": png_bytes(Image.fromarray(rng.integers(0, 256, (6, 5, 3), np.uint8))),
        "text.png": with_chunk(png_bytes(Image.fromarray(grey[0])),
                               chunk(b"tEXt", b"Comment\x00hi")),
        "cut.png": grey_6x5_png(zlib.compress(RAW_ROWS)[:-9]),
        "photo.jpg": other_pngs()["JPEG"],
        "empty.png": b"",
    }) + [tmp_path / "missing.png", tmp_path]
    pixels, decoded = decode_plain_png_files(paths, 1, (6, 5), threads=1)
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (11, 1, 6, 5)
    assert decoded.tolist() == [True] * 3 + [False] * 8
    for path, got in zip(paths[:3], pixels[:3], strict=True):
        assert np.array_equal(got[0].numpy(), np.asarray(Image.open(path).convert("L"))), path
    rgb, decoded = decode_plain_png_files(paths, 3, (6, 5), threads=1)
    assert decoded.tolist() == [False] * 4 + [True] + [False] * 6
    assert np.array_equal(rgb[4].permute(1, 2, 0).numpy(), np.asarray(Image.open(paths[4])))


@needs_decoder
def test_files_split_over_threads_decode_as_one_thread(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    files = {f"{i:02d}.png": png_bytes(Image.fromarray(
        rng.integers(0, 256, (6, 5, 3) if i % 7 == 0 else (6, 5), np.uint8))) for i in range(60)}
    paths = write_files(tmp_path, files)
    one, decoded = decode_plain_png_files(paths, 1, (6, 5), threads=1)
    three, decoded_three = decode_plain_png_files(paths, 1, (6, 5), threads=3)  # 20 files each
    assert decoded.tolist() == [i % 7 != 0 for i in range(60)] == decoded_three.tolist()
    assert torch.equal(one[torch.from_numpy(decoded)], three[torch.from_numpy(decoded)])


@pytest.mark.parametrize("in_chans", [1, 3])
def test_decode_many_equals_decode_one_by_one(in_chans: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    paths = write_files(tmp_path, {
        "grey28.png": png_bytes(Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8))),
        "rgb28.png": png_bytes(Image.fromarray(rng.integers(0, 256, (28, 28, 3), np.uint8))),
        "grey40x31.png": png_bytes(Image.fromarray(rng.integers(0, 256, (31, 40), np.uint8))),
        "rgba28.png": png_bytes(Image.fromarray(rng.integers(0, 256, (28, 28, 4), np.uint8))),
        "photo.jpg": other_pngs()["JPEG"],
    })
    images = [*paths, Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8)), paths[0]]
    model = embedder(in_chans, 28)
    many = model.decode_many(images)
    assert torch.equal(many, torch.stack([model.decode(image) for image in images]))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        model.decode_many([paths[0], tmp_path / "missing.png"])


def test_without_the_extension_pil_decodes_every_file(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    image = Image.fromarray(np.random.default_rng(13).integers(0, 256, (28, 28), np.uint8))
    [path] = write_files(tmp_path, {"grey28.png": png_bytes(image)})
    model = embedder(1, 28)
    monkeypatch.setattr(png, "_library", lambda: (None, "not built here"))
    assert png.unavailable_reason() == "not built here"
    assert decode_plain_png(path.read_bytes(), 1) is None
    pixels, decoded = decode_plain_png_files([path], 1, (28, 28), threads=2)
    assert tuple(pixels.shape) == (1, 1, 28, 28) and decoded.tolist() == [False]
    assert torch.equal(model.decode_many([path])[0], torch.from_numpy(np.array(image))[None])


def header_png(width: int, height: int, idat: bytes, after_idat: bytes = b"") -> bytes:
    """An 8-bit grey PNG of the given header size, image data and chunks after it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + after_idat
            + chunk(b"IEND", b""))


@needs_decoder
@pytest.mark.parametrize("width, height", [(3, 0), (0, 3)])
def test_an_empty_image_is_not_decoded(width: int, height: int, tmp_path: Path) -> None:
    data = header_png(width, height, zlib.compress(b""))  # PIL cannot identify it
    assert decode_plain_png(data, 1) is None
    [path] = write_files(tmp_path, {"empty.png": data})
    with pytest.raises(OSError, match="empty.png"):
        embedder(1, 28).decode(path)


@needs_decoder
@pytest.mark.parametrize("after", [chunk(b"gAMA", b""), chunk(b"tRNS", b"\x00"),
                                   chunk(b"pHYs", b"\x00" * 4)], ids=["gAMA", "tRNS", "pHYs"])
def test_a_truncated_chunk_after_the_image_data_is_not_decoded(after: bytes) -> None:
    data = header_png(5, 6, zlib.compress(RAW_ROWS), after)
    with pytest.raises(OSError, match="Truncated"):
        open_image(data, "x.png")  # PIL refuses the file
    assert decode_plain_png(data, 1) is None
    good = header_png(5, 6, zlib.compress(RAW_ROWS), chunk(b"tIME", b"\x07\xea\x0b\x19\0\0\0"))
    pixels = decode_plain_png(good, 1)  # a whole chunk there is fine
    assert pixels is not None and np.array_equal(pixels[0].numpy(), GREY_ROWS)


@needs_decoder
def test_a_path_with_a_nul_byte_goes_to_decode_which_refuses_it(tmp_path: Path) -> None:
    [path] = write_files(tmp_path, {"g.png": header_png(5, 6, zlib.compress(RAW_ROWS))})
    pixels, decoded = decode_plain_png_files([f"{path}\0junk", path], 1, (6, 5), threads=1)
    assert decoded.tolist() == [False, True]
    with pytest.raises(ValueError, match="null"):
        embedder(1, 28).decode_many([f"{path}\0junk"])
