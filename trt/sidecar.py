"""The engine sidecar: what ties an engine to its TensorRT version, GPU and plugin library; reading
it back with its types checked, and refusing an engine built for another version or GPU."""

from __future__ import annotations

import datetime as _dt
import logging
import re
from pathlib import Path
from typing import Any

from s2trt.errors import S2Error
from s2trt.meta import read_sidecar, sidecar_path
from s2trt.text import printable, shell_arg
from s2trt.trt import gpu
from s2trt.trt.versions import parse_version, trt_version, version_str

log = logging.getLogger(__name__)


def engine_sidecar(trt: Any, precision: str, plugin_lib: Path | None, plugin_sha256: str | None,
                   meta: dict[str, Any], device: int = 0) -> dict[str, Any]:
    """The ONNX metadata plus what ties an engine to its TensorRT version, GPU and plugin library
    (by file name and SHA-256, the only way the runtime takes a library from a sidecar). The digest
    is taken when the library is loaded: the file may be rebuilt during a build of minutes."""
    name, cc = gpu.gpu_info(device)
    return {**meta,
            "precision": precision,
            "tensorrt_version": version_str(trt_version(trt)),
            "gpu": name,
            "compute_capability": cc,
            "plugin_library": plugin_lib.name if plugin_lib else None,
            "plugin_sha256": plugin_sha256 if plugin_lib else None,
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


_OPT_STR = (str, type(None))
# The engine fields of a sidecar and the JSON types they may have (None: absent or unknown). The
# ModelMeta fields are checked where ModelMeta reads them.
ENGINE_FIELDS: dict[str, tuple[type, ...]] = {
    "tensorrt_version": _OPT_STR, "gpu": _OPT_STR, "compute_capability": _OPT_STR,
    "plugin": _OPT_STR, "plugin_library": _OPT_STR, "plugin_sha256": _OPT_STR, "onnx_file": _OPT_STR,
    "precision": _OPT_STR, "precision_path": _OPT_STR, "built_at": _OPT_STR,
    "profiles": (dict, type(None)), "workspace_gib": (int, float, type(None)),
}
_FORMATS = {"tensorrt_version": re.compile(r"\d+(\.\d+){0,3}"), "compute_capability": re.compile(r"\d+\.\d+"),
            "plugin_sha256": re.compile(r"[0-9a-f]{64}")}


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")


def read_engine_sidecar(engine_path: str | Path) -> dict[str, Any] | None:
    """The sidecar of an engine, None when there is none; one-line S2Error when it is not the
    JSON object s2trt writes (wrong types would otherwise fail deep inside the runtime)."""
    side = read_sidecar(engine_path)
    where = sidecar_path(engine_path).name
    if side is None:  # read_sidecar refuses anything but a JSON object
        return None
    for key, types in ENGINE_FIELDS.items():
        value = side.get(key)
        fmt = _FORMATS.get(key)
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(dict.fromkeys(_json_type(t()) for t in types))
            raise S2Error(f"{printable(where)}: '{key}' is {_json_type(value)}, expected {expected}: "
                          "rebuild the engine, or delete the sidecar to run without it")
        if fmt is not None and isinstance(value, str) and not fmt.fullmatch(value):
            raise S2Error(f"{printable(where)}: '{key}' is {printable(value, 40)!r}, not a valid "
                          f"{key.replace('_', ' ')}: rebuild the engine, or delete the sidecar")
    return side


def rebuild_command(sidecar: dict[str, Any]) -> str:
    """The s2export command that rebuilds an engine; the sidecar's ONNX path is shown quoted and
    without control characters (it is text from a file, pasted into a shell)."""
    onnx = sidecar.get("onnx_file") or "model.onnx"
    flag = {"fp16": " --fp16", "int8": " --int8"}.get(str(sidecar.get("precision")), "")
    return f"s2export {shell_arg(onnx)}{flag}"


def _where(version: str | None, gpu: str | None, cc: str | None) -> str:
    sm = f" (sm_{printable(cc).replace('.', '')})" if cc else ""
    return f"TensorRT {printable(version or 'unknown')} on {printable(gpu or 'an unknown GPU')}{sm}"


def check_engine_compatible(engine_path: str | Path, sidecar: dict[str, Any] | None, trt: Any,
                            device: int = 0) -> None:
    """Refuse an engine built by another TensorRT version or GPU generation, naming the fix.

    Unknowns (no sidecar, no CUDA query module) are logged, not errors: TensorRT's own
    deserialization check remains the last word.
    """
    name = printable(Path(engine_path).name)
    if sidecar is None:
        log.warning("%s has no sidecar JSON: cannot check its TensorRT version and GPU", name)
        return
    built_v = sidecar.get("tensorrt_version")
    here_v = trt_version(trt)
    here_gpu, cc = gpu.gpu_info(device)
    built_gpu, built_cc = sidecar.get("gpu"), sidecar.get("compute_capability")
    # Only the exact version: s2trt builds no version-compatible engines, and a "version_compatible"
    # key left by older releases described engines built without the flag.
    version_ok = built_v is None or parse_version(built_v) == here_v
    gpu_ok = built_cc is None or cc is None or built_cc == cc
    if not (version_ok and gpu_ok):
        raise S2Error(f"{name} was built with {_where(built_v, built_gpu, built_cc)}; this is "
                      f"{_where(version_str(here_v), here_gpu, cc)}: rebuild it on this machine with: "
                      f"{rebuild_command(sidecar)}")
    if built_gpu and here_gpu and built_gpu != here_gpu:
        log.warning("%s was built on %s and runs on %s (same compute capability): TensorRT advises "
                    "rebuilding for best speed", name, printable(built_gpu), printable(here_gpu))

