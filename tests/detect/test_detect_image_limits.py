"""Image sizes read from headers (checked against what OpenCV decodes), the formats read, the pixel
limit, and the hostile files that made the header check and the decoder disagree (issue 26.4)."""

from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from image_bombs import zeros_zlib

from s2trt.detect.image_limits import (
    DEFAULT_MAX_PIXELS,
    check_image_bytes,
    gif_size,
    image_format,
    image_size_from_header,
)
from s2trt.detect.image_read import max_file_bytes, read_image
from s2trt.errors import S2Error

ENCODINGS = [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
             (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 60]),
             (".tif", []), (".pfm", [])]
# Formats OpenCV decodes but YOLOv5 does not read as images: refused by content, with their name.
REFUSED = [(".ppm", "PNM"), (".pam", "PNM"), (".ras", "Sun raster"), (".hdr", "Radiance HDR"),
           (".gif", "GIF"), (".avif", "AVIF/HEIF")]


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
    assert gif_size(screen + frame + b"\x3b") == (30005, 20005)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n\0\0", b"\xff\xd8\xff\xe0",
                                  b"II*\x00\xff\xff\xff\x00", b"RIFF\0\0\0\0WEBPVP8 "])
def test_unknown_or_cut_headers_have_no_size_and_are_refused(data):
    assert image_size_from_header(data) is None
    with pytest.raises(S2Error, match="not an image whose size can be checked"):
        check_image_bytes(data)


def test_an_empty_image_is_refused():
    with pytest.raises(S2Error, match="declares a 0x5 image"):
        check_image_bytes(png_header(0, 5))


@pytest.mark.parametrize("ext, name", REFUSED, ids=[e for e, _ in REFUSED])
def test_formats_yolov5_does_not_read_are_refused_by_content_with_their_name(tmp_path, ext, name):
    data = encode(ext, np.zeros((6, 10, 3), np.uint8), [])
    assert image_format(data) == name
    disguised = tmp_path / "photo.jpg"  # the name says JPEG: the content decides
    disguised.write_bytes(data)
    with pytest.raises(S2Error) as e:
        read_image(str(disguised), DEFAULT_MAX_PIXELS)
    assert str(e.value) == (f"{disguised}: {name} images are not read (s2trt reads BMP, JPEG/MPO, PNG, "
                            "TIFF/DNG, WebP, PFM, as YOLOv5 does)")


def tiff_width_twice(first: int, second: int, h: int) -> bytes:
    """An 8-bit grey deflated TIFF whose IFD gives ImageWidth twice; libtiff keeps the first."""
    body = zeros_zlib(max(first, second) * h)
    entries = [(256, 4, first), (256, 4, second), (257, 4, h), (258, 3, 8), (259, 3, 8), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, h), (279, 4, len(body))]
    start = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        value = start if tag == 273 else value
        ifd += struct.pack("<HHIHH" if typ == 3 else "<HHII", tag, typ, 1, value, *([0] if typ == 3 else []))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + body


def test_a_tiff_giving_its_width_twice_is_refused_by_the_check_and_by_the_decoder(tmp_path):
    small = tiff_width_twice(64, 8, 16)
    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_GRAYSCALE).shape == (16, 64)  # the first
    assert image_size_from_header(small) is None
    with pytest.raises(S2Error, match="its TIFF header gives ImageWidth twice, so its size is not certain"):
        check_image_bytes(small, what="t.tif")
    # The decoder on its own, as a header check that read the last width would have let it through:
    # OpenCV's own limit, set before cv2 is imported, refuses 20000x20000 without allocating it.
    bomb = tmp_path / "t.tif"
    bomb.write_bytes(tiff_width_twice(20000, 100, 20000))
    # VmHWM, the child's own peak: ru_maxrss would count pytest's memory, which fork carries over.
    code = ("import sys\n"
            "from s2trt.detect.image_limits import limit_decoder_pixels\n"
            "assert limit_decoder_pixels(120_000_000)\n"
            "import cv2, numpy as np\n"
            "data = np.fromfile(sys.argv[1], np.uint8)\n"
            "try:\n"
            "    img = cv2.imdecode(data, cv2.IMREAD_COLOR)\n"
            "except cv2.error as e:\n"
            "    img = 'refused' if 'CV_IO_MAX_IMAGE_PIXELS' in str(e) else str(e)\n"
            "print(img if isinstance(img, str) else img.shape, "
            "open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n")
    r = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120)
    verdict, peak_kb = r.stdout.split()
    assert verdict == "refused", r.stdout + r.stderr
    assert int(peak_kb) < 600_000, f"peak RSS {int(peak_kb) / 1e3:.0f} MB: the image was decoded"


@pytest.mark.parametrize("data, name", [
    # A PNM comment ended by \r: one reader takes the next line as the size, another the same line.
    (b"P6\n# decoy 4 4\r20000 20000\n255\n" + bytes(64), "PNM"),
    # Radiance HDR with an extra space and a decoy resolution line.
    (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n -Y 4 +X 4\n-Y 20000 +X 20000\n" + bytes(64), "Radiance HDR"),
    # JPEG 2000 with a decoy 'ihdr' in a box before the real header.
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I", 20) + b"xml ihdr" + struct.pack(">II", 4, 4)
     + struct.pack(">I", 22) + b"ihdr" + struct.pack(">IIHBBBB", 20000, 20000, 3, 7, 7, 0, 0), "JPEG 2000"),
])
def test_headers_that_read_two_ways_are_refused_by_their_format(tmp_path, data, name):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with pytest.raises(S2Error, match=f"^{path}: {name} images are not read"):
        read_image(str(path), DEFAULT_MAX_PIXELS)


def test_a_huge_sparse_file_holding_a_jpeg_is_refused_from_its_size(tmp_path):
    path = tmp_path / "sparse.jpg"
    with open(path, "wb") as f:
        f.write(encode(".jpg", np.zeros((8, 8, 3), np.uint8), []))
        f.truncate(3 << 30)  # 3 GB, of which a few KB are on disk
    tracemalloc.start()
    try:
        with pytest.raises(S2Error) as e:
            read_image(str(path), DEFAULT_MAX_PIXELS, "raise it with --max-pixels")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value) == (f"{path}: 3221 MB is more than an image of at most 120 megapixels takes "
                            "(raise it with --max-pixels)")
    assert peak < 1 << 20, f"{peak} bytes allocated to refuse it"
    assert max_file_bytes(DEFAULT_MAX_PIXELS) < 3 << 30


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff",
                                                              b"II*\x00", b"MM\x00*", b"BM", b"PF\n",
                                                              b"RIFF\0\0\0\0WEBPVP8X"]))
def test_any_bytes_are_read_or_refused_in_one_line_within_the_limit(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("any") / "x.jpg"
    path.write_bytes(prefix + data)
    try:
        img = read_image(str(path), 10_000)
    except S2Error as e:
        assert "\n" not in str(e) and str(e).startswith(f"{path}: ")
    else:
        assert img.ndim == 3 and img.shape[0] * img.shape[1] <= 10_000
