"""Text that came from files (sidecars, ONNX metadata, caches) made safe to print.

A sidecar is data anyone can edit: an escape sequence in a GPU name can rewrite the terminal, a
newline can forge a second log line, a bidi override can make a command read differently from what
it runs. Such characters are shown as escapes, and a value put into a suggested shell command is
also quoted.
"""

from __future__ import annotations

import re
import shlex
import unicodedata

MAX_CHARS = 300  # a file name or version is shorter; a longer value is someone else's text

# A URL's user:password@, any scheme (rtsp, rtmps, srt, ftp, ...), anywhere in a text: up to the
# last @ before the path, as a password may hold an unescaped @ (or :, or space-free anything).
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact_credentials(text: str) -> str:
    """`text` with the user:password@ of every URL in it removed: what logs, messages, results
    files and window titles may show of a source. The source itself is opened with its credentials."""
    return _USERINFO.sub(r"\1", text)


def printable(value: object, limit: int = MAX_CHARS) -> str:
    """str(value) with control, format and unassigned characters (Unicode category C*: C0/C1
    controls, DEL, bidi overrides, zero-width marks) escaped as \\xNN / \\uNNNN, cut to `limit`."""
    text = str(value)
    cut = len(text) > limit
    out = []
    for ch in text[:limit]:
        if unicodedata.category(ch).startswith("C"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if cut else "")


def shell_arg(value: object) -> str:
    """One shell word for a suggested command: printable, then quoted where the shell would split
    or expand it."""
    return shlex.quote(printable(value))


def first_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message for a one-line error: its first line (cut to `limit`), or the
    exception's type when it has no message."""
    text = str(e)
    return text.splitlines()[0][:limit] if text else type(e).__name__
