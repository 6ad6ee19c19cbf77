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
from urllib.parse import unquote

MAX_CHARS = 300  # a file name or version is shorter; a longer value is someone else's text

# A URL in a text: from its scheme to the next whitespace.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(\S*)")
# Its user:password@, up to the last @ before the path, as a password may hold an unescaped @ (or :,
# or anything else but / ? # and whitespace). FFmpeg's udp://@group:port names no user: kept.
_USERINFO = re.compile(r"^[^/?#]+@")
# Query keys whose values are secrets by their name (case-insensitive, anywhere in the key): SRT's
# passphrase, password/passwd/pwd, token and access_token, api_key, sig/signature and credential
# (signed URLs such as S3's X-Amz-*), auth, session, and the user name, which user:password@ hides
# too. Other values (a camera's channel=1&subtype=0, SRT's streamid) stay: they tell two sources of
# one server apart in the results, the per-source table and the output names.
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|key|sig|auth|cred|session|ticket|jwt|user|login", re.I)
MASK = "***"


def _redact_url(m: re.Match[str]) -> str:
    rest = _USERINFO.sub("", m.group(2), count=1)
    rest, hashmark, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    parts = []
    for part in query.split("&") if question else []:
        key, equals, _ = part.partition("=")
        if equals:
            parts.append(f"{key}={MASK}" if _SECRET_KEY.search(unquote(key)) else part)
        else:  # a value without a name cannot be told harmless by it
            parts.append(MASK if part else part)
    return m.group(1) + rest + question + "&".join(parts) + (hashmark + MASK if fragment else hashmark)


def redact_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it hidden: its user:password@ removed, the values
    of its query keys that name a secret (passphrase=, token=, sig=, ...) and its fragment (#...)
    masked. What logs, messages, results files, output names and window titles may show of a source;
    the source itself is opened with its credentials."""
    return _URL.sub(_redact_url, text)


def has_credentials(url: str) -> bool:
    """Whether `url` holds what redact_credentials hides: the one test of what is secret in a URL,
    which also keeps it off a child's command line (runtime/inputs/gst.py)."""
    return redact_credentials(url) != url


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
