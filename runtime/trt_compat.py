"""The one place that knows how TensorRT versions differ (DESIGN §4-§5).

The builder, the runtime and the INT8 calibrator import TensorRT through `import_tensorrt()` and ask
this module what a version can do. Conventions that tests/test_trt_api.py relies on to check every
TensorRT attribute against the real 10.3, recent 10.x and 11.x Python modules:

- the TensorRT module is always held in a variable named `trt`;
- code that only exists on some major versions sits in a function or class decorated with
  `@for_trt(max_major=10)` / `@for_trt(min_major=11)`, or in a branch of
  `if is_strongly_typed_only(trt): <11+> else: <10 and older>`; everything else must work on all.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from s2trt.errors import MissingDependencyError, S2Error
from s2trt.meta import read_sidecar, sidecar_path
from s2trt.text import first_line, printable, shell_arg

log = logging.getLogger(__name__)

PLUGIN_NAME = "S2SplitAttention"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "s2trt"
PLUGIN_LIB_NAME = "libs2trt_plugins.so"
PLUGIN_ENV = "S2TRT_PLUGIN_LIB"
PLUGIN_BUILD_CMD = ("cmake -S plugins -B plugins/build -DTENSORRT_INCLUDE_DIR=<TensorRT include dir> "
                    "&& cmake --build plugins/build")
_REPO_ROOT = Path(__file__).resolve().parents[1]

_T = TypeVar("_T")
# A library as given (resolved) -> (the private copy the loader opened, its SHA-256, the ctypes
# handle): kept so a library is loaded once per process.
_loaded_plugins: dict[Path, tuple[Path, str, ctypes.CDLL]] = {}
# SHA-256 -> the private copy of those bytes (one per process: a second copy would be a second file,
# which the dynamic loader would load again).
_copies: dict[str, Path] = {}


def for_trt(min_major: int | None = None, max_major: int | None = None) -> Callable[[_T], _T]:
    """Mark a function or class as valid only for these TensorRT major versions (inclusive).

    A marker for the API conformance test, which checks the attributes used inside against those
    versions only; callers choose the right variant with is_strongly_typed_only().
    """
    def mark(obj: _T) -> _T:
        obj.__trt_majors__ = (min_major, max_major)  # type: ignore[attr-defined]
        return obj
    return mark


def import_tensorrt(purpose: str) -> Any:
    """The tensorrt module, or a MissingDependencyError that says how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and (e.name or "").startswith("tensorrt"):
            raise MissingDependencyError(
                f"{purpose} needs TensorRT, whose Python module is not installed: on Jetson it comes "
                "with JetPack (sudo apt install python3-libnvinfer), elsewhere use an NVIDIA TensorRT "
                "container (nvcr.io/nvidia/tensorrt) or pip install tensorrt "
                "--extra-index-url https://pypi.nvidia.com") from None
        reason = first_line(e)
        raise MissingDependencyError(
            f"{purpose} needs TensorRT, but its Python module cannot load the TensorRT libraries "
            f"({reason}): install the libraries of the same version (JetPack, the NVIDIA container, "
            "or pip install tensorrt-cu12-libs from https://pypi.nvidia.com)") from None
    return trt


def trt_version(trt: Any) -> tuple[int, int, int]:
    """(major, minor, patch) of a tensorrt module; '10.7.0.post1' and '10.3.0.26' both parse."""
    return parse_version(str(trt.__version__))


def parse_version(text: str) -> tuple[int, int, int]:
    nums = [int(p) for p in re.findall(r"\d+", text)[:3]] + [0, 0, 0]
    return nums[0], nums[1], nums[2]


def version_str(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


def is_strongly_typed_only(trt: Any) -> bool:
    """TensorRT 11 removed the precision builder flags and implicit INT8 calibration."""
    return trt_version(trt)[0] >= 11


# ---------------------------------------------------------------- network creation and precision

def create_network(trt: Any, builder: Any, strongly_typed: bool) -> Any:
    """A strongly typed network for a graph that carries its own types (and always on 11, where the
    flag is deprecated and ignored: every network is strongly typed); the flag exists since 10.x."""
    if strongly_typed:
        return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    return builder.create_network(0)  # explicit batch is the only mode since TensorRT 10


@for_trt(max_major=10)
def set_precision_flags(trt: Any, config: Any, precision: str, calibrator: Any = None) -> None:
    """TensorRT ≤ 10: precision is a builder choice; FP16 stays on under INT8 for the layers
    that have no INT8 kernel (and for the Detect head that a Q/DQ graph leaves unquantized)."""
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator


@for_trt(max_major=10)
def set_calibration_profile(config: Any, profile: Any) -> None:
    config.set_calibration_profile(profile)


def _matches(name: str, pattern: str) -> bool:
    """trtexec's layer-name match: equal, or around its one '*'."""
    if "*" not in pattern:
        return name == pattern
    head, tail = pattern.split("*", 1)
    return len(name) >= len(head) + len(tail) and name.startswith(head) and name.endswith(tail)


@for_trt(max_major=10)
def pin_fp32_layers(trt: Any, config: Any, network: Any, patterns: list[str]) -> list[str]:
    """Run the named layers in FP32 with FP32 outputs in a weakly typed network, as trtexec's
    `--precisionConstraints=obey --layerPrecisions=<p>:fp32,... --layerOutputTypes=<p>:fp32,...`
    does (samples/common/sampleEngines.cpp, setLayerPrecisions/setLayerOutputTypes): an exact name
    is pinned as given; a wildcard match skips layers that compute shapes or integers. Returns the
    names of the layers pinned."""
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    integer = (trt.DataType.INT32, trt.DataType.INT64, trt.DataType.BOOL, trt.DataType.UINT8)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        exact = layer.name in patterns
        if not exact and not any(_matches(layer.name, p) for p in patterns if "*" in p):
            continue
        first_in = layer.get_input(0) if layer.num_inputs else None
        out = layer.get_output(0)
        # A constant's output type is the type of its weights.
        skip_precision = not exact and (
            layer.precision in integer or (layer.type == trt.LayerType.CONSTANT and out.dtype in integer)
            or (first_in is not None and first_in.is_shape_tensor)
            or (first_in is not None and first_in.dtype in integer and out.dtype in integer))
        skip_outputs = not exact and (
            layer.precision in (trt.DataType.INT32, trt.DataType.BOOL) or out.is_shape_tensor
            or (layer.type == trt.LayerType.CONSTANT and out.dtype == trt.DataType.INT32))
        if not skip_precision:
            layer.precision = trt.DataType.FLOAT
        if not skip_outputs:
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.DataType.FLOAT)
        if not (skip_precision and skip_outputs):
            pinned.append(layer.name)
    return pinned


# ---------------------------------------------------------------------------------------- plugin

def default_plugin_library() -> Path | None:
    """$S2TRT_PLUGIN_LIB (even when missing, so the error names it), else the library that ships
    with s2trt."""
    env = os.environ.get(PLUGIN_ENV)
    if env:
        return Path(env).expanduser()
    return shipped_plugin_library()


def shipped_plugin_library(name: str = PLUGIN_LIB_NAME) -> Path | None:
    """The CMake build output of this checkout, else a library installed next to the package: the
    plugin library, or another library plugins/ builds (`name`)."""
    import s2trt

    for candidate in (_REPO_ROOT / "plugins" / "build" / name, Path(s2trt.__file__).resolve().parent / name):
        if candidate.is_file():
            return candidate
    return None


def engine_plugin_library(engine_path: str | Path, sidecar: dict[str, Any] | None,
                          explicit: str | Path | None) -> Path | None:
    """The plugin library the runtime may load for an engine: --plugin-lib, else $S2TRT_PLUGIN_LIB,
    else the library next to the engine whose SHA-256 the sidecar records, else the one that ships
    with s2trt; None when there is none.

    Never a path read from the sidecar: dlopen runs a library's constructors, so a sidecar that
    named any file would run its code before any check. From the sidecar only a file name is taken,
    looked up beside the engine, and loaded only when its digest is the recorded one.
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(PLUGIN_ENV)
    if env:
        return Path(env).expanduser()
    side = sidecar or {}
    name, digest = side.get("plugin_library"), side.get("plugin_sha256")
    if name and digest:
        beside = Path(engine_path).parent / Path(name).name
        if beside.is_file():
            try:
                copy, _ = _private_copy(beside, digest)
            except OSError as e:
                log.warning("%s cannot be read (%s): not loaded", printable(beside),
                            printable(e.strerror or type(e).__name__))
            else:
                if copy is not None:
                    return copy
                log.warning("%s is not the plugin library %s was built with (its SHA-256 differs): not "
                            "loaded", printable(beside), printable(Path(engine_path).name))
    return shipped_plugin_library()


def _private_copy(path: Path, digest: str | None = None) -> tuple[Path | None, str]:
    """The bytes of `path`, hashed as they are copied into an anonymous in-memory file of this
    process (memfd): (the path that opens the copy, their SHA-256); the copy is None when `digest`
    is given and the bytes' SHA-256 is another.

    The loader maps the file it opens, and a file rewritten in place (`cp` over it, a rebuild)
    changes what is mapped under the running process: its relocated pages revert to the file's, and
    the process crashes at the latest when it exits. Nobody else can write the memfd, so the bytes
    hashed are the bytes that run, and unlike a copy under /tmp it loads where /tmp is mounted
    noexec (Docker's --tmpfs default)."""
    if digest in _copies:
        return _copies[digest], digest
    fd = os.memfd_create(path.name, os.MFD_CLOEXEC)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as src, open(fd, "wb", closefd=False) as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                dst.write(block)
    except BaseException:
        os.close(fd)
        raise
    sha = h.hexdigest()
    if digest is not None and sha != digest:
        os.close(fd)
        return None, sha
    if sha in _copies:  # the same bytes under another name: loaded once
        os.close(fd)
    else:  # the descriptor stays open for the life of the process: the path names it
        _copies[sha] = Path(f"/proc/self/fd/{fd}")
    return _copies[sha], sha


def load_plugin_library(path: str | Path | None, required: bool) -> Path | None:
    """Load the plugin library globally (its creators register with TensorRT on load), from a
    private copy of its bytes (see _private_copy); the library as given (resolved) is returned, and
    plugin_library_sha256 tells the digest of what was loaded."""
    lib = Path(path).expanduser() if path else default_plugin_library()
    if lib is None:
        if not required:
            return None
        raise S2Error(f"the {PLUGIN_NAME} plugin library was not found (no --plugin-lib, ${PLUGIN_ENV} "
                      f"unset, no plugins/build/{PLUGIN_LIB_NAME}): build it with `{PLUGIN_BUILD_CMD}`")
    if lib not in _copies.values():  # /proc/self/fd/N resolves to no file
        lib = lib.resolve()
    if lib in _loaded_plugins:
        return lib
    if not lib.is_file():
        raise S2Error(f"plugin library {printable(lib)} does not exist: build it with `{PLUGIN_BUILD_CMD}` "
                      f"or point --plugin-lib / ${PLUGIN_ENV} at it")
    if lib in _copies.values():
        copy, sha = lib, next(d for d, c in _copies.items() if c == lib)
    else:
        try:
            copy, sha = _private_copy(lib)
        except OSError as e:
            raise S2Error(f"cannot read plugin library {printable(lib)} "
                          f"({printable(e.strerror or type(e).__name__)})") from None
    try:
        handle = ctypes.CDLL(str(copy), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        reason = first_line(e)
        reason = reason.replace(str(copy), str(lib))
        raise S2Error(f"cannot load plugin library {printable(lib)} ({printable(reason)}): rebuild it "
                      f"against the TensorRT installed here with `{PLUGIN_BUILD_CMD}`") from None
    _loaded_plugins[lib] = (copy, sha, handle)
    log.info("loaded plugin library %s", lib)
    return lib


def plugin_library_sha256(lib: Path) -> str:
    """The SHA-256 of the bytes load_plugin_library loaded for `lib`, whatever the file holds now."""
    return _loaded_plugins[lib][1]


def check_plugin_registered(trt: Any, name: str = PLUGIN_NAME, version: str = PLUGIN_VERSION,
                            namespace: str = PLUGIN_NAMESPACE, library: Path | None = None) -> None:
    """Fail before a long build when TensorRT cannot create the plugin.

    IPluginRegistry.get_creator (10.3 and 11; get_plugin_creator is gone in 11) finds V3 creators.
    A library that exports getCreators() instead of registering on load is registered here.
    """
    registry = trt.get_plugin_registry()
    creator = registry.get_creator(name, version, namespace)
    if creator is None and library is not None:
        # The loaded copy: the path given would be a second file to the loader, loaded again.
        registry.load_library(str(_loaded_plugins[library][0] if library in _loaded_plugins else library))
        creator = registry.get_creator(name, version, namespace)
    if creator is None:
        where = (f"{printable(library)} is loaded but registers no such creator: rebuild it against TensorRT "
                 f"{trt.__version__} with `{PLUGIN_BUILD_CMD}`" if library is not None else
                 f"load the plugin library with --plugin-lib or ${PLUGIN_ENV} (build it with "
                 f"`{PLUGIN_BUILD_CMD}`)")
        raise S2Error(f"TensorRT has no plugin {namespace}::{name} version {version}: {where}")


def ensure_plugin(trt: Any, path: str | Path | None, required: bool) -> Path | None:
    """Load the plugin library and make sure TensorRT can create the plugin: what the builder does
    before parsing and the runtime before deserializing. The library lists its creators through
    getCreators(), which IPluginRegistry.load_library registers (a dlopen alone registers nothing)."""
    lib = load_plugin_library(path, required)
    if lib is not None:
        check_plugin_registered(trt, library=lib)
    return lib


# ------------------------------------------------------------------------- GPU and engine sidecar

def gpu_info(device: int = 0) -> tuple[str | None, str | None]:
    """(GPU name, compute capability like "8.7") via cuda-python or pycuda; None where unknown."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        err, props = cudart.cudaGetDeviceProperties(device)
        if err == cudart.cudaError_t.cudaSuccess:
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
            return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    except Exception as e:  # a driver problem must not hide the engine's own error
        log.debug("cuda-python device query failed: %s", e)
    try:
        import pycuda.driver as drv

        drv.init()
        dev = drv.Device(device)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    except ImportError:
        pass
    except Exception as e:
        log.debug("pycuda device query failed: %s", e)
    return None, None


def select_device(device: int) -> None:
    """Make `device` current before TensorRT creates its CUDA context."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
    except ImportError:
        if device != 0:
            raise MissingDependencyError("--device needs the Python package 'cuda-python', which is "
                                         "not installed: pip install 's2trt[gpu]'") from None
        return
    (err,) = cudart.cudaSetDevice(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise S2Error(f"cannot use CUDA device {device} ({err}): check --device and nvidia-smi")


def engine_sidecar(trt: Any, precision: str, plugin_lib: Path | None, plugin_sha256: str | None,
                   meta: dict[str, Any], device: int = 0) -> dict[str, Any]:
    """The ONNX metadata plus what ties an engine to its TensorRT version, GPU and plugin library
    (by file name and SHA-256, the only way the runtime takes a library from a sidecar). The digest
    is taken when the library is loaded: the file may be rebuilt during a build of minutes."""
    name, cc = gpu_info(device)
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
    gpu, cc = gpu_info(device)
    built_gpu, built_cc = sidecar.get("gpu"), sidecar.get("compute_capability")
    # Only the exact version: s2trt builds no version-compatible engines, and a "version_compatible"
    # key left by older releases described engines built without the flag.
    version_ok = built_v is None or parse_version(built_v) == here_v
    gpu_ok = built_cc is None or cc is None or built_cc == cc
    if not (version_ok and gpu_ok):
        raise S2Error(f"{name} was built with {_where(built_v, built_gpu, built_cc)}; this is "
                      f"{_where(version_str(here_v), gpu, cc)}: rebuild it on this machine with: "
                      f"{rebuild_command(sidecar)}")
    if built_gpu and gpu and built_gpu != gpu:
        log.warning("%s was built on %s and runs on %s (same compute capability): TensorRT advises "
                    "rebuilding for best speed", name, printable(built_gpu), printable(gpu))

