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

# A scheme where a URL begins: not inside a longer word (xrtsp:// is not rtsp://). The lookbehind keeps
# the search linear: a run of letters is tried as a scheme once, from its first letter, not from each
# of its letters again (a log record of 200,000 letters would otherwise take seconds).
_SCHEME = r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://"
# A user:password@ anywhere in the text, nested URLs included (go2rtc's ?src=rtsp://admin:pw@cam/x, a
# JSON list of URLs), up to the last @ before the path, as a password may hold an unescaped @ (or :,
# quotes or anything else but / ? # and whitespace). FFmpeg's udp://@group:port names no user: kept.
_USERINFO = re.compile(rf"({_SCHEME})[^/?#\s]+@")
_URL_START = re.compile(_SCHEME)
# Where a URL in a message ends: whitespace, and the quotes and brackets a message or JSON puts around
# it. Not , [ ] ( ): they are legal inside URLs (IPv6 hosts, SRT stream ids, lists in query values).
_URL_END = re.compile(r"[\s\"'<>`]")
# Query keys whose values are secrets, by their whole name (case-insensitive, percent-decoded, with
# - _ . and camelCase as word breaks): the name itself, or its last word (X-Amz-Signature,
# stream_key, accessToken). Whole names and not substrings, so that keyframe=, usermode= or
# sessionName= stay shown: every value shown tells two sources of one server apart in the results,
# the per-source table and the output names (a camera's channel=1&subtype=0). pass...pin: passwords;
# token, jwt, ticket, session: bearer tokens; secret, key: API keys and SRT-style passphrases; sig,
# signature, hmac, md5, hdnts: signed URLs (S3, CDNs, Wowza, Akamai); auth, credential: both; user,
# login: the user name, which user:password@ hides too.
_SECRET_NAMES = frozenset({
    "pass", "passwd", "password", "passphrase", "pwd", "pw", "pin", "token", "accesstoken", "secret",
    "key", "apikey", "sig", "signature", "hmac", "md5", "hdnts", "auth", "authorization", "credential",
    "credentials", "session", "sessionid", "jwt", "ticket", "user", "username", "login"})
_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
MASK = "***"


def _secret_key(key: str) -> bool:
    """Whether a query value under this key is a secret (see _SECRET_NAMES); an empty name too,
    as nothing tells its value harmless."""
    words = _WORD.findall(_CAMEL.sub("_", unquote(key)).lower())
    return not words or "".join(words) in _SECRET_NAMES or words[-1] in _SECRET_NAMES


def _secret_value(key: str, value: str) -> bool:
    # MediaMTX's SRT login: streamid=read:path:user:pass (publish: too). A bare action:path, or SRT's
    # own #!:: form, names no password and tells paths apart.
    if unquote(key).lower() == "streamid":
        sid = unquote(value)
        return not sid.startswith("#!::") and sid.count(":") >= 2
    return _secret_key(key)


def _mask_query(query: str) -> tuple[str, bool]:
    """The query with its secret values masked, and whether its last value was one."""
    # & and ; both separate parameters (a CGI convention many servers keep). A value without a name
    # (?1) stays: it is a channel on many recorders.
    parts = re.split(r"([&;])", query)
    masked = False
    for i in range(0, len(parts), 2):
        key, equals, value = parts[i].partition("=")
        masked = bool(equals) and _secret_value(key, value)
        if masked:
            parts[i] = f"{key}={MASK}"
    return "".join(parts), masked


def _mask_url(body: str) -> tuple[str, bool]:
    """A URL after its scheme with its query's secret values and its fragment masked, and whether it
    ends inside a masked value (what follows it up to the URL's end is then part of that value)."""
    rest, hashmark, fragment = body.partition("#")
    rest, question, query = rest.partition("?")
    query, open_secret = _mask_query(query)
    if hashmark:
        return rest + question + query + hashmark + (MASK if fragment else ""), True
    return rest + question + query, open_secret


def redact_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it hidden, nested ones included: its
    user:password@ removed, the values of its query keys that name a secret (passphrase=, token=,
    sig=, ...) and its fragment (#...) masked. What logs, messages, results files, output names and
    window titles may show of a source; the source itself is opened with its credentials."""
    text = _USERINFO.sub(r"\1", text)
    starts = list(_URL_START.finditer(text))
    out = []
    done = 0  # where the text is written up to
    for i, m in enumerate(starts):
        if m.start() < done:  # inside a secret value already masked
            continue
        # A URL nested in another's query value (?src=rtsp://...) is masked as a URL of its own:
        # each one ends where the next begins, so the text is read once.
        limit = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        end = _URL_END.search(text, m.end(), limit)
        stop = end.start() if end else limit
        shown, open_secret = _mask_url(text[m.end():stop])
        if open_secret and not end and stop < len(text):
            # A secret value (or fragment) that runs into what looks like a URL (passphrase=a://b):
            # all of it is the secret, up to where the whole URL ends.
            if not shown.endswith(MASK):
                shown += MASK
            end = _URL_END.search(text, stop)
            stop = end.start() if end else len(text)
        out += [text[done:m.start()], m.group(), shown]
        done = stop
    out.append(text[done:])
    return "".join(out)


def has_credentials(url: str) -> bool:
    """Whether `url` holds what redact_credentials hides. What is shown of it; what stays off a
    child's command line is a wider test (runtime/inputs/gst.py hides_url)."""
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
