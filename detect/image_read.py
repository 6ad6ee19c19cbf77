"""Reading an image file without trusting it: its size on disk, its format and its header are
checked before it is read whole and decoded, so no file makes the reader allocate more than the
pixel limit allows.

A 3 GB sparse file holding a small JPEG costs one stat here, not 3 GB of memory: no image of at most
N pixels takes more than MAX_BYTES_PER_PIXEL * N bytes (16-bit RGBA TIFF, float PFM) plus room for
metadata, so a larger file is refused before it is read.
"""

from __future__ import annotations

import os
import stat

import numpy as np

from s2trt.detect.image_limits import (
    READ,
    READ_FORMATS,
    check_image_bytes,
    check_image_size,
    gif_size,
    image_format,
    image_size_from_header,
)
from s2trt.errors import S2Error
from s2trt.text import first_line

MAX_BYTES_PER_PIXEL = 16  # float RGB PFM is 12, 16-bit RGBA TIFF 8; compressed formats take less
METADATA_BYTES = 16 << 20  # EXIF, ICC profiles, thumbnails, XMP
HEADER_BYTES = 1 << 18  # where every size field lies (a JPEG's frame header after 64 KB APP segments)


def max_file_bytes(max_pixels: int) -> int:
    """The largest file an image of at most max_pixels pixels can be in the formats read."""
    return MAX_BYTES_PER_PIXEL * max_pixels + METADATA_BYTES


def read_checked(path: str, max_pixels: int, hint: str = "") -> bytes:
    """The bytes of an image file whose size, format and header are within the limits; S2Error
    (one line, naming `path`) otherwise. The file is stat'ed and its header read before the rest."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise S2Error(f"{path}: not a regular file")
            _check_file_size(path, st.st_size, max_pixels, hint)
            head = f.read(HEADER_BYTES)
            full = len(head) == HEADER_BYTES  # else the whole file is read
            if image_format(head) is None:
                raise S2Error(f"{path}: not a readable image")
            if not full or image_format(head) not in READ or image_size_from_header(head):
                check_image_bytes(head, max_pixels, path, hint)  # refused before the rest is read
            data = head + f.read(max_file_bytes(max_pixels) + 1 - len(head)) if full else head
            if full:  # a size field past the first bytes (a JPEG after large APP segments)
                check_image_bytes(data, max_pixels, path, hint)
    except OSError as e:
        raise S2Error(f"{path}: cannot read: {e.strerror or e}") from None
    _check_file_size(path, len(data), max_pixels, hint)  # it grew while it was read
    return data


def _check_file_size(path: str, size: int, max_pixels: int, hint: str) -> None:
    if size > max_file_bytes(max_pixels):
        raise S2Error(f"{path}: {size / 1e6:.0f} MB is more than an image of at most "
                      f"{max_pixels / 1e6:g} megapixels takes" + (f" ({hint})" if hint else ""))


def read_image(path: str, max_pixels: int, hint: str = "") -> np.ndarray:
    """An image file decoded to BGR uint8 (EXIF rotation applied, as cv2.imread does), once every
    check of read_checked has passed; OpenCV's own pixel limit (image_limits.limit_decoder_pixels)
    is the last word on what its decoder finds."""
    import cv2

    data = read_checked(path, max_pixels, hint)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:  # the decoder's own limit, or a file it cannot parse
        raise S2Error(f"{path}: refused by the decoder ({first_line(e, 200)})") from None
    if img is None:
        raise S2Error(f"{path}: not a readable image ({READ_FORMATS})")
    return img


def check_gif_video(path: str, max_pixels: int, hint: str = "") -> None:
    """A GIF read as a video: every frame's extent within the limit, from a file whose size is sane."""
    try:
        size = os.stat(path).st_size
        _check_file_size(path, size, max_pixels, hint)
        with open(path, "rb") as f:
            data = f.read(max_file_bytes(max_pixels) + 1)
    except OSError as e:
        raise S2Error(f"{path}: cannot read: {e.strerror or e}") from None
    _check_file_size(path, len(data), max_pixels, hint)
    dims = gif_size(data)
    if dims is None:
        raise S2Error(f"{path}: not a GIF whose size can be checked before decoding")
    check_image_size(*dims, max_pixels, path, hint)
