"""Images that declare far more pixels than their files hold, built cheaply for the image-limit tests."""

from __future__ import annotations

import struct
import zlib


def zeros_zlib(n: int) -> bytes:
    """A zlib stream of n (at least 1 MiB) zero bytes.

    Identical 1 MiB blocks of zeros compress to identical bytes once the 32 KiB history is all zeros,
    so the stream is one block repeated rather than a gigabyte compressed in the test."""
    block = 1 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(bytes(block)) + c.flush(zlib.Z_SYNC_FLUSH)
    repeat = c.compress(bytes(block)) + c.flush(zlib.Z_SYNC_FLUSH)
    k, rest = divmod(n, block)
    tail = c.compress(bytes(rest)) + c.flush()
    adler = ((n % 65521) << 16) | 1  # Adler-32 of n zero bytes
    return b"\x78\xda" + first + repeat * max(k - 1, 0) + tail + struct.pack(">I", adler)


def png_bomb(w: int, h: int) -> bytes:
    """A valid all-black w x h RGB PNG of about 1 KB per 3 megapixels: deflate compresses zeros ~1000:1."""
    idat = zeros_zlib(h * (1 + 3 * w))  # each row: filter byte 0, then RGB

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
