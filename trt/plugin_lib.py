"""The S2SplitAttention plugin library: where it is looked up, and how it is hashed and loaded (from a
private in-memory copy of the bytes hashed) and checked against TensorRT's plugin registry."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from s2trt.errors import S2Error
from s2trt.text import first_line, printable

log = logging.getLogger(__name__)

PLUGIN_NAME = "S2SplitAttention"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "s2trt"
PLUGIN_LIB_NAME = "libs2trt_plugins.so"
PLUGIN_ENV = "S2TRT_PLUGIN_LIB"
# The operator's opt-in to run a library that came with an engine (docs/ARCHITECTURE.md, contracts).
TRUST_ENV = "S2TRT_TRUST_ENGINE_PLUGIN"
TRUST_FLAG = "--trust-engine-plugin"
PLUGIN_BUILD_CMD = ("cmake -S plugins -B plugins/build -DTENSORRT_INCLUDE_DIR=<TensorRT include dir> "
                    "&& cmake --build plugins/build")
_REPO_ROOT = Path(__file__).resolve().parents[1]

# A library as given (resolved) -> (the private copy the loader opened, its SHA-256, the ctypes
# handle): kept so a library is loaded once per process.
_loaded_plugins: dict[Path, tuple[Path, str, ctypes.CDLL]] = {}
# SHA-256 -> the private copy of those bytes (one per process: a second copy would be a second file,
# which the dynamic loader would load again).
_copies: dict[str, Path] = {}


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


def bundle_trusted() -> bool:
    """Whether the operator opted in to libraries that come with an engine ($S2TRT_TRUST_ENGINE_PLUGIN
    set to anything but 0, or s2infer --trust-engine-plugin)."""
    return os.environ.get(TRUST_ENV, "") not in ("", "0")


def engine_plugin_library(engine_path: str | Path, sidecar: dict[str, Any] | None,
                          explicit: str | Path | None, trust_bundle: bool | None = None) -> Path | None:
    """The plugin library the runtime may load for an engine: --plugin-lib, else $S2TRT_PLUGIN_LIB,
    else (only when the operator trusts the engine's bundle: `trust_bundle`, by default
    bundle_trusted()) the library next to the engine whose SHA-256 the sidecar records, else the one
    that ships with s2trt; None when there is none.

    Never a path read from the sidecar: dlopen runs a library's constructors, so a sidecar that
    named any file would run its code before any check. From the sidecar only a file name is taken,
    looked up beside the engine, and loaded only when its digest is the recorded one. That digest
    comes from the same bundle as the library, so it proves the two belong together, not where they
    came from: loading it is the operator's decision, and without it the error says how to make it.
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(PLUGIN_ENV)
    if env:
        return Path(env).expanduser()
    side = sidecar or {}
    name, digest = side.get("plugin_library"), side.get("plugin_sha256")
    beside = Path(engine_path).parent / Path(name).name if name and digest else None
    if beside is None or not beside.is_file():
        return shipped_plugin_library()
    if not (bundle_trusted() if trust_bundle is None else trust_bundle):
        shipped = shipped_plugin_library()
        advice = (f"a library that comes with an engine runs only if you trust where the engine came "
                  f"from: rerun with {TRUST_FLAG} (or {TRUST_ENV}=1), or point --plugin-lib or "
                  f"${PLUGIN_ENV} at a library you built")
        if shipped is None:
            raise S2Error(f"{printable(beside)} is not loaded: {advice}")
        log.warning("%s is not loaded (%s); using %s", printable(beside), advice, printable(shipped))
        return shipped
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
