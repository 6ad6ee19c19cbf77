"""The TensorRT calibration cache file and the key that says which model it belongs to.

TensorRT ≤ 10 writes its calibration table as an opaque blob and reads back whatever file it is
given: a cache from another model or other preprocessing silently produces a wrong engine. So every
cache gets a sidecar `<cache>.json` with a key (a hash of the ONNX graph and its weights, the
preprocessing and the calibration method); a cache is reused only when the key matches, and refused
with a message that says what differs otherwise. Plain functions, so they are testable without
TensorRT.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from pathlib import Path
from typing import Any

from s2trt.errors import S2Error
from s2trt.meta import read_sidecar, sidecar_path, write_bytes_atomic, write_json_atomic
from s2trt.text import first_line, printable

log = logging.getLogger(__name__)

KEY_FORMAT = 1
KEY_FIELDS = ("format", "graph_sha256", "preprocess", "method")


def graph_digest(onnx_path: str | Path) -> str:
    """SHA-256 of the graph (nodes, weights, inputs, outputs), not of the file's metadata: restamping
    the metadata keeps a cache valid, any change to what is computed invalidates it."""
    import onnx

    try:
        model = onnx.load(str(onnx_path))
    except Exception as e:
        raise S2Error(f"{onnx_path} is not a readable ONNX file ({first_line(e, 200)})") from None
    h = hashlib.sha256(model.graph.SerializeToString(deterministic=True))
    for op in sorted((o.domain, o.version) for o in model.opset_import):
        h.update(repr(op).encode())
    return h.hexdigest()


def cache_key(graph_sha256: str, preprocess: dict[str, Any], method: str) -> dict[str, Any]:
    return {"format": KEY_FORMAT, "graph_sha256": graph_sha256, "preprocess": preprocess, "method": method}


def _difference(stored: dict[str, Any], key: dict[str, Any]) -> str | None:
    """What differs, in words; the stored values are file text, printed without control characters."""
    if stored.get("format") != key["format"]:
        return f"key format {printable(stored.get('format'), 20)} (this s2trt writes {key['format']})"
    if stored.get("graph_sha256") != key["graph_sha256"]:
        return "another model (its ONNX graph or weights differ)"
    if stored.get("method") != key["method"]:
        return f"calibration method {printable(stored.get('method'), 20)}, not {key['method']}"
    if stored.get("preprocess") != key["preprocess"]:
        old, new = stored.get("preprocess"), key["preprocess"]
        if not isinstance(old, dict):
            return "other preprocessing (none recorded)"
        diffs = [f"{printable(k, 40)} {printable(old.get(k), 40)} vs {new.get(k)}"
                 for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return "other preprocessing (" + ", ".join(diffs) + ")"
    return None


def load_cache(path: str | Path, key: dict[str, Any]) -> bytes | None:
    """The cached calibration table when `path` exists and matches `key`; None when there is none.

    A cache that exists but does not match (or has no key) is an error, never silently reused nor
    silently overwritten: the user chose that file.
    """
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise S2Error(f"calibration cache {path} is not a file")
    stored = read_sidecar(path)
    if stored is None or not isinstance(stored, dict) or not isinstance(stored.get("key"), dict):
        what = "no key file" if stored is None else "a key file that s2trt did not write:"
        raise S2Error(f"calibration cache {path} has {what} {sidecar_path(path).name}, so s2trt "
                      "cannot tell which model it belongs to: delete it to recalibrate, or pass "
                      "another --calib-cache")
    why = _difference(stored["key"], key)
    if why is not None:
        raise S2Error(f"calibration cache {path} was made for {why}: delete it to recalibrate, or "
                      "pass another --calib-cache")
    data = path.read_bytes()
    if not data:
        raise S2Error(f"calibration cache {path} is empty: delete it to recalibrate")
    log.info("reusing calibration cache %s (made %s from %s images)", path,
             printable(stored.get("created", "?"), 40), printable(stored.get("images", "?"), 20))
    return data


def save_cache(path: str | Path, data: bytes, key: dict[str, Any], **info: Any) -> None:
    """Write the table, then its key. In that order: a crash in between leaves a table without a
    matching key, which the next run refuses, never a stale table under a fresh key."""
    path = Path(path)
    write_bytes_atomic(path, bytes(data))
    write_json_atomic(sidecar_path(path), {
        "key": key, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **info})
    log.info("calibration cache written to %s", path)
