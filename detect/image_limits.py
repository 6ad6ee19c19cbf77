"""Image bombs: read an encoded image's size from its header and refuse it before anything decodes it.

A 1.2 MB PNG can declare 20000x20000 pixels; decoding it costs 1.2 GB as BGR before any check can
run. The header states the size, so the limit is applied to the bytes. Only the formats YOLOv5
itself reads as images are accepted, recognised by their content (not their name): BMP, JPEG (and
MPO), PNG, TIFF (and DNG), WebP and PFM; any other format is refused by name, since each parser
here that disagrees with its decoder is a way past the limit. Only the header fields are parsed (no
decompression); a header that can be read two ways (a TIFF tag given twice) is refused. GIF's size
is read too, for the GIF videos FFmpeg decodes frame by frame.

The decoder is the second net: `limit_decoder_pixels` sets OpenCV's own limit
(OPENCV_IO_MAX_IMAGE_PIXELS, read once when cv2 is imported), which it checks against the size its
own header parser finds.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from collections.abc import Callable

from s2trt.errors import S2Error

# 120 megapixels: above the largest still cameras in common use (102 MP medium format, 108 MP phone
# sensors), decoded as 8-bit BGR that is 360 MB; a 20000x20000 bomb (400 MP, 1.2 GB) is refused.
DEFAULT_MAX_PIXELS = 120_000_000

READ_FORMATS = "BMP, JPEG/MPO, PNG, TIFF/DNG, WebP, PFM"

# JPEG start-of-frame markers (SOF0..SOF15 except DHT C4, JPG C8, DAC CC): they carry the size.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png(d: bytes) -> tuple[int, int] | None:
    if len(d) >= 24 and d[12:16] == b"IHDR":
        w, h = struct.unpack(">II", d[16:24])
        return w, h
    return None


def _jpeg(d: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", d[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > len(d):
                return None
            h, w = struct.unpack(">HH", d[i + 5:i + 9])
            return w, h
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or scan data before any frame header
            return None
        i += 2 + length
    return None


def _bmp(d: bytes) -> tuple[int, int] | None:
    if len(d) < 26:
        return None
    (dib,) = struct.unpack("<I", d[14:18])
    if dib == 12:  # BITMAPCOREHEADER: 16-bit unsigned sizes
        w, h = struct.unpack("<HH", d[18:22])
        return w, h
    w, h = struct.unpack("<ii", d[18:26])
    return abs(w), abs(h)  # a negative height is a top-down bitmap


def _webp(d: bytes) -> tuple[int, int] | None:
    chunk = d[12:16]
    if chunk == b"VP8 " and len(d) >= 30 and d[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(d) >= 25 and d[20] == 0x2F:
        (bits,) = struct.unpack("<I", d[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(d) >= 30:
        return (int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1)
    return None


def _tiff(d: bytes) -> tuple[int, int] | None:
    """The first image (IFD), the one OpenCV decodes."""
    e = "<" if d[:2] == b"II" else ">"
    (version,) = struct.unpack(e + "H", d[2:4])
    if version == 42:
        count_fmt, entry, head, off_fmt = "H", 12, 2, "I"
        (ifd,) = struct.unpack(e + "I", d[4:8])
    elif version == 43 and len(d) >= 16:  # BigTIFF
        count_fmt, entry, head, off_fmt = "Q", 20, 8, "Q"
        (ifd,) = struct.unpack(e + "Q", d[8:16])
    else:
        return None
    if ifd + head > len(d):
        return None
    (n,) = struct.unpack(e + count_fmt, d[ifd:ifd + head])
    size: dict[int, int] = {}
    for k in range(n):
        p = ifd + head + k * entry
        if p + entry > len(d):
            break
        tag, typ = struct.unpack(e + "HH", d[p:p + 4])
        if tag not in (256, 257):
            continue
        if tag in size:  # libtiff keeps the first, a reader of the last would see another image
            raise HeaderProblem(f"its TIFF header gives {'ImageWidth' if tag == 256 else 'ImageLength'} "
                                "twice")
        value = d[p + 4 + struct.calcsize(off_fmt):p + entry]
        if typ == 3:  # SHORT
            (size[tag],) = struct.unpack(e + "H", value[:2])
        elif typ == 4:  # LONG
            (size[tag],) = struct.unpack(e + "I", value[:4])
        elif typ == 16:  # LONG8 (BigTIFF)
            (size[tag],) = struct.unpack(e + "Q", value[:8])
    if 256 in size and 257 in size:
        return size[256], size[257]
    return None


def _gif(d: bytes) -> tuple[int, int] | None:
    """The logical screen, grown to every frame's extent: a frame may reach past the screen."""
    if len(d) < 13:
        return None
    w, h, flags = struct.unpack("<HHB", d[6:11])
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while i < len(d):
        block = d[i]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            i += 2
        elif block == 0x2C and i + 10 <= len(d):  # image descriptor
            left, top, fw, fh, fflags = struct.unpack("<HHHHB", d[i + 1:i + 10])
            w, h = max(w, left + fw), max(h, top + fh)
            i += 10 + (3 << ((fflags & 7) + 1) if fflags & 0x80 else 0) + 1  # + LZW code size
        else:
            break
        while i < len(d) and d[i]:  # skip sub-blocks up to the terminator
            i += d[i] + 1
        i += 1
    return w, h


def _pfm(d: bytes) -> tuple[int, int] | None:
    """'PF' or 'Pf', then width and height separated by whitespace; no comments (OpenCV's reader
    takes none, so a header with one is refused rather than read another way)."""
    m = re.match(rb"P[Ff]\s+(\d{1,9})\s+(\d{1,9})\s", d[:64])
    return (int(m.group(1)), int(m.group(2))) if m else None


class HeaderProblem(ValueError):
    """A header that decoders may read another way than this module: refused, not guessed."""


# Recognised by content: (name, test of the first bytes). Only READ_FORMATS are decoded.
_MAGIC: list[tuple[str, Callable[[bytes], bool]]] = [
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n"),
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff"),
    ("BMP", lambda d: d[:2] == b"BM"),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP"),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
    ("PFM", lambda d: d[:2] in (b"PF", b"Pf") and d[2:3].isspace()),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a")),
    ("PNM", lambda d: len(d) > 2 and d[0:1] == b"P" and d[1:2] in b"1234567" and d[2:3].isspace()),
    ("Sun raster", lambda d: d[:4] == b"\x59\xa6\x6a\x95"),
    ("Radiance HDR", lambda d: d[:10] == b"#?RADIANCE" or d[:6] == b"#?RGBE"),
    ("JPEG 2000", lambda d: d[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or d[:4] == b"\xff\x4f\xff\x51"),
    ("OpenEXR", lambda d: d[:4] == b"\x76\x2f\x31\x01"),
    ("AVIF/HEIF", lambda d: d[4:8] == b"ftyp"),
]
_SIZE = {"PNG": _png, "JPEG": _jpeg, "BMP": _bmp, "WebP": _webp, "TIFF": _tiff, "PFM": _pfm, "GIF": _gif}
READ = ("PNG", "JPEG", "BMP", "WebP", "TIFF", "PFM")  # the names image_format gives them


def image_format(data: bytes) -> str | None:
    """The format an encoded image's first bytes say it is, whatever its name; None if unknown."""
    d = bytes(data[:16])
    return next((name for name, test in _MAGIC if test(d)), None)


def _size(data: bytes, formats: tuple[str, ...]) -> tuple[int, int] | None:
    """Raises HeaderProblem for an ambiguous header; None for another format or a cut header."""
    fmt = image_format(data)
    if fmt not in formats:
        return None
    try:
        return _SIZE[fmt](data if isinstance(data, bytes) else bytes(data))
    except struct.error:  # a header cut short
        return None


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by an encoded image's header, without decoding; None if the format
    is not one of READ_FORMATS, or the header is cut short or ambiguous."""
    try:
        return _size(data, READ)
    except HeaderProblem:
        return None


def gif_size(data: bytes) -> tuple[int, int] | None:
    """A GIF's size (its screen grown to every frame), for a GIF read as a video; None if the data
    is no GIF or its header is cut short."""
    return _size(data, ("GIF",))


def limit_decoder_pixels(max_pixels: int) -> bool:
    """Make OpenCV's image decoders refuse more than max_pixels pixels themselves, checked against
    the size their own header parsers find. OpenCV reads the limit once, when cv2 is imported (it has
    no call to change it), so this must run first; False when cv2 is imported already (its limit
    stays what it was: the header check still applies)."""
    if "cv2" in sys.modules:
        return False
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(max_pixels)
    return True


def check_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image",
                      hint: str = "") -> None:
    """Raise S2Error (one line) unless data is one of READ_FORMATS whose header declares between 1
    and max_pixels pixels.

    Another format is refused by name, and a header whose size cannot be read (cut short, or
    ambiguous) is refused too: its decoder would allocate whatever the file declares, which is what
    this check exists to prevent. `what` names the input in the message (a path, "request 3");
    `hint` is appended to the over-limit message (how the caller raises the limit, e.g. "raise it
    with --max-pixels").
    """
    fmt = image_format(data)
    if fmt is not None and fmt not in READ:
        raise S2Error(f"{what}: {fmt} images are not read (s2trt reads {READ_FORMATS}, as YOLOv5 does)")
    try:
        size = _size(data, READ)
    except HeaderProblem as e:
        raise S2Error(f"{what}: {e}, so its size is not certain: refused") from None
    if size is None:
        raise S2Error(f"{what}: not an image whose size can be checked before decoding "
                      f"({READ_FORMATS})")
    check_image_size(*size, max_pixels, what, hint)


def check_image_size(w: int, h: int, max_pixels: int, what: str, hint: str = "") -> None:
    """check_image_bytes for a size already read with image_size_from_header."""
    if w * h == 0:
        raise S2Error(f"{what}: the header declares a {w}x{h} image (no pixels)")
    if w * h > max_pixels:
        raise S2Error(f"{what}: {w}x{h} is {w * h / 1e6:.1f} megapixels, above the limit of "
                      f"{max_pixels / 1e6:g} megapixels" + (f" ({hint})" if hint else ""))


def check_frame_pixels(w: int, h: int, max_pixels: int, what: str, hint: str = "") -> None:
    """The same limit for decoded video or stream frames, whose size the container reports."""
    if w * h > max_pixels:
        raise S2Error(f"{what}: frames of {w}x{h} are {w * h / 1e6:.1f} megapixels, above the limit of "
                      f"{max_pixels / 1e6:g} megapixels" + (f" ({hint})" if hint else ""))
