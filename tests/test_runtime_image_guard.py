"""Image sizes read from headers (checked against what OpenCV decodes) and the pixel limit."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS, check_image_bytes, image_size_from_header
from s2trt.errors import S2Error

ENCODINGS = [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
             (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 60]),
             (".tif", []), (".ppm", []), (".pfm", []), (".ras", []), (".hdr", []), (".gif", []),
             (".pam", []), (".avif", [])]


def encode(ext: str, img: np.ndarray, params: list[int]) -> bytes:
    if ext in (".pfm", ".hdr"):
        img = img.astype(np.float32) / 255
    try:
        ok, buf = cv2.imencode(ext, img, params)
    except cv2.error:
        ok = False
    if not ok:
        pytest.skip(f"this OpenCV cannot encode {ext}")
    return buf.tobytes()


@pytest.mark.parametrize("ext, params", ENCODINGS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("h, w", [(7, 13), (1, 300), (300, 1), (257, 333)])
def test_header_size_is_what_opencv_decodes(ext, params, h, w):
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    data = encode(ext, img, params)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None
    assert image_size_from_header(data) == (decoded.shape[1], decoded.shape[0]) == (w, h)
    check_image_bytes(data, max_pixels=h * w)  # exactly at the limit passes


def test_grayscale_and_16bit_png():
    for img in (np.zeros((5, 9), np.uint8), np.zeros((5, 9, 3), np.uint16)):
        assert image_size_from_header(encode(".png", img, [])) == (9, 5)


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h (8-bit RGB) with a tiny compressed body of zeros."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def test_a_bomb_is_refused_from_its_header_with_one_line():
    bomb = png_header(20000, 20000)
    assert image_size_from_header(bomb) == (20000, 20000)
    with pytest.raises(S2Error) as e:
        check_image_bytes(bomb, what="bomb.png", hint="raise it with --max-pixels")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == ("bomb.png: 20000x20000 is 400.0 megapixels, above the limit of 120 megapixels "
                   "(raise it with --max-pixels)")
    assert DEFAULT_MAX_PIXELS == 120_000_000
    check_image_bytes(bomb, max_pixels=20000 * 20000)  # a raised limit lets it through


def test_a_jpeg_size_after_large_exif_segments():
    img = np.zeros((11, 17, 3), np.uint8)
    data = encode(".jpg", img, [])
    app1 = b"\xff\xe1" + struct.pack(">H", 60002) + b"Exif\0\0" + bytes(59994)
    data = data[:2] + app1 * 3 + data[2:]  # 180 KB of metadata before the frame header
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (11, 17, 3)
    assert image_size_from_header(data) == (17, 11)


def test_a_gif_frame_larger_than_its_screen_counts():
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 5, 5, 30000, 20000, 0) + b"\x02\x02\x44\x01\x00"
    assert image_size_from_header(screen + frame + b"\x3b") == (30005, 20005)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n\0\0", b"\xff\xd8\xff\xe0",
                                  b"II*\x00\xff\xff\xff\x00", b"RIFF\0\0\0\0WEBPVP8 "])
def test_unknown_or_cut_headers_have_no_size_and_are_refused(data):
    assert image_size_from_header(data) is None
    with pytest.raises(S2Error, match="not an image format whose size can be checked"):
        check_image_bytes(data)


def test_an_empty_image_is_refused():
    with pytest.raises(S2Error, match="declares a 0x5 image"):
        check_image_bytes(png_header(0, 5))
