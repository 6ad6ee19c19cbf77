"""Engine and ONNX sidecars are data, not code (README, "Plugin loading"; issue 15 items 8 and 9).

A sidecar is a JSON file anyone can edit or forge. The runtime must not dlopen a library because a
sidecar names it (dlopen runs the library's constructors before any check), must print sidecar text
without control characters and quote it in suggested commands, and must turn a sidecar with wrong
field types into one line and exit 1, never an internal error (exit 70).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
from c_library import c_library
from fakes import FakeCuda, FakeEngine, fake_trt, make_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2trt.cli import run_main
from s2trt.errors import EXIT_ERROR, S2Error
from s2trt.export.engine import EngineOptions, manual_build_hint
from s2trt.meta import sidecar_path
from s2trt.runtime.backends.trt import TrtBackend
from s2trt.text import printable, shell_arg
from s2trt.trt import gpu, plugin_lib, sidecar

PLUGIN = (plugin_lib.PLUGIN_NAME, plugin_lib.PLUGIN_VERSION, plugin_lib.PLUGIN_NAMESPACE)
# A library whose constructor leaves a trace: proof that a dlopen happened, whatever came after.
CTOR_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void s2trt_test_constructor(void)
{
    char const* path = getenv("S2TRT_TEST_CTOR_MARKER");
    FILE* f = path ? fopen(path, "a") : NULL;
    if (f) { fputs("constructor ran\n", f); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def ctor_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return c_library(tmp_path_factory, "ctor", CTOR_SOURCE)


@pytest.fixture(scope="module")
def other_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another library with a constructor that leaves another trace."""
    source = CTOR_SOURCE.replace("constructor ran", "another library ran")
    return c_library(tmp_path_factory, "other", source)


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "constructor-ran"
    monkeypatch.setenv("S2TRT_TEST_CTOR_MARKER", str(path))
    return path


@pytest.fixture(autouse=True)
def _nothing_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No plugin library built in this checkout or set in the environment, unless a test says so."""
    monkeypatch.delenv(plugin_lib.PLUGIN_ENV, raising=False)
    monkeypatch.delenv(plugin_lib.TRUST_ENV, raising=False)
    monkeypatch.setattr(plugin_lib, "_REPO_ROOT", tmp_path / "checkout")
    monkeypatch.setattr(gpu, "gpu_info", lambda device=0: (None, None))
    monkeypatch.setattr(plugin_lib, "_copies", {})  # each test's library is a file of its own


@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator trusts the engine's bundle: its library may load (with the recorded digest)."""
    monkeypatch.setenv(plugin_lib.TRUST_ENV, "1")


def _copy(lib: Path, folder: Path, name: str = plugin_lib.PLUGIN_LIB_NAME) -> Path:
    """A fresh file: the dynamic loader runs constructors once per file, not once per test."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(lib, folder / name)
    return folder / name


def _trt_with_registry(engine: FakeEngine) -> SimpleNamespace:
    """The fake TensorRT of test_runtime_trt plus a plugin registry that, like the real one,
    knows the creator only after IPluginRegistry.load_library of the library."""
    trt = fake_trt(engine)
    trt.loaded = []

    def get_creator(*key: str) -> object:
        return key if key == PLUGIN and trt.loaded else None

    trt.get_plugin_registry = lambda: SimpleNamespace(get_creator=get_creator, load_library=trt.loaded.append)
    return trt


def _plugin_engine(tmp_path: Path, **sidecar: object) -> Path:
    return make_engine(tmp_path, plugin=plugin_lib.PLUGIN_NAME, **sidecar)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ which plugin library is loaded

def test_library_path_from_a_sidecar_is_never_loaded(tmp_path: Path, ctor_lib: Path, marker: Path) -> None:
    evil = _copy(ctor_lib, tmp_path / "elsewhere")
    engine = _plugin_engine(tmp_path, plugin_library=str(evil), plugin_sha256=_sha256(evil))
    with pytest.raises(S2Error, match=r"m\.engine needs the S2SplitAttention plugin library: give "
                                      r"--plugin-lib or \$S2TRT_PLUGIN_LIB, put the library it was "
                                      r"built with \(libs2trt_plugins\.so\) next to the engine"):
        TrtBackend(engine, trt=_trt_with_registry(FakeEngine()), cuda=FakeCuda())
    assert not marker.exists()  # not even dlopened


def test_library_next_to_the_engine_loads_only_with_the_recorded_digest(
        tmp_path: Path, trusted: None, ctor_lib: Path, marker: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    beside = _copy(ctor_lib, tmp_path)
    engine = _plugin_engine(tmp_path, plugin_library="../../" + beside.name, plugin_sha256="0" * 64)
    with pytest.raises(S2Error, match="needs the S2SplitAttention plugin library"):
        TrtBackend(engine, trt=_trt_with_registry(FakeEngine()), cuda=FakeCuda())
    assert not marker.exists() and "its SHA-256 differs" in caplog.text

    good = tmp_path / "good"
    beside = _copy(ctor_lib, good)
    engine = _plugin_engine(good, plugin_library=beside.name, plugin_sha256=_sha256(beside))
    trt = _trt_with_registry(FakeEngine())
    backend = TrtBackend(engine, trt=trt, cuda=FakeCuda())
    assert marker.read_text() == "constructor ran\n"
    assert [_sha256(Path(p)) for p in trt.loaded] == [_sha256(beside)]
    backend.close()


def test_the_library_loaded_is_the_one_whose_digest_was_checked(
        tmp_path: Path, trusted: None, ctor_lib: Path, other_lib: Path, marker: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever can write the engine's folder replaces the checked library before it is loaded:
    dlopen by that path would run the replacement's constructor."""
    beside = _copy(ctor_lib, tmp_path)
    engine = _plugin_engine(tmp_path, plugin_library=beside.name, plugin_sha256=_sha256(beside))
    choose = plugin_lib.engine_plugin_library

    def choose_then_replace(*args: object) -> Path | None:
        chosen = choose(*args)
        (tmp_path / "swap.so").write_bytes(other_lib.read_bytes())
        (tmp_path / "swap.so").replace(beside)
        return chosen

    monkeypatch.setattr(plugin_lib, "engine_plugin_library", choose_then_replace)
    trt = _trt_with_registry(FakeEngine())
    TrtBackend(engine, trt=trt, cuda=FakeCuda()).close()
    assert marker.read_text() == "constructor ran\n"
    assert [_sha256(Path(p)) for p in trt.loaded] == [_sha256(ctor_lib)]
    # A copy nobody else can write: the process's own in-memory file, named after the library.
    assert os.readlink(trt.loaded[0]).startswith(f"/memfd:{plugin_lib.PLUGIN_LIB_NAME}")


def test_unreadable_library_next_to_the_engine_is_one_line(
        tmp_path: Path, trusted: None, ctor_lib: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Not a traceback (exit 70): the library is not loaded, and the error says where else to put one."""
    beside = _copy(ctor_lib, tmp_path)
    engine = _plugin_engine(tmp_path, plugin_library=beside.name, plugin_sha256=_sha256(beside))
    real_open = open

    def no_read(file: object, *args: object, **kw: object) -> object:
        if str(file) == str(beside):  # what open() raises for a file without read permission
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr("builtins.open", no_read)
    with pytest.raises(S2Error, match="needs the S2SplitAttention plugin library"):
        TrtBackend(engine, trt=_trt_with_registry(FakeEngine()), cuda=FakeCuda())
    assert "libs2trt_plugins.so cannot be read (Permission denied): not loaded" in caplog.text


def test_a_matching_digest_alone_loads_nothing_from_the_engine_bundle(
        tmp_path: Path, ctor_lib: Path, marker: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The library and the digest that vouches for it come from the same untrusted bundle: without the
    operator's opt-in the library is not even read, and the error says how to opt in."""
    beside = _copy(ctor_lib, tmp_path / "bundle")
    engine = _plugin_engine(tmp_path / "bundle", plugin_library=beside.name, plugin_sha256=_sha256(beside))
    with pytest.raises(S2Error) as e:
        TrtBackend(engine, trt=_trt_with_registry(FakeEngine()), cuda=FakeCuda())
    assert str(e.value) == (f"{beside} is not loaded: a library that comes with an engine runs only if you "
                            "trust where the engine came from: rerun with --trust-engine-plugin (or "
                            "S2TRT_TRUST_ENGINE_PLUGIN=1), or point --plugin-lib or $S2TRT_PLUGIN_LIB at a "
                            "library you built")
    assert not marker.exists()
    for off in ("", "0"):
        monkeypatch.setenv(plugin_lib.TRUST_ENV, off)
        with pytest.raises(S2Error, match="is not loaded"):
            plugin_lib.engine_plugin_library(engine, {"plugin_library": beside.name,
                                                      "plugin_sha256": _sha256(beside)}, None)
    # A library s2trt ships is used instead, and the one beside is named in a warning.
    shipped = _copy(ctor_lib, tmp_path / "checkout" / "plugins" / "build")
    side = {"plugin_library": beside.name, "plugin_sha256": _sha256(beside)}
    assert plugin_lib.engine_plugin_library(engine, side, None) == shipped
    assert f"{beside} is not loaded" in caplog.text
    # The opt-in, as s2infer's flag sets it.
    from s2trt.runtime.cli import parse

    assert parse(["--engine", str(engine), "x.jpg", "--trust-engine-plugin"]).trust_engine_plugin
    monkeypatch.setenv(plugin_lib.TRUST_ENV, "1")
    assert plugin_lib.engine_plugin_library(engine, side, None).read_bytes() == beside.read_bytes()


def test_plugin_library_precedence(tmp_path: Path, ctor_lib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--plugin-lib, then $S2TRT_PLUGIN_LIB, then the digest-checked library beside the engine, then
    the library that ships with s2trt (no file is loaded here: only the choice is made)."""
    beside = _copy(ctor_lib, tmp_path)
    engine = tmp_path / "m.engine"
    side = {"plugin_library": beside.name, "plugin_sha256": _sha256(beside)}
    shipped = _copy(ctor_lib, tmp_path / "checkout" / "plugins" / "build")
    assert plugin_lib.engine_plugin_library(engine, side, "/opt/given.so") == Path("/opt/given.so")
    monkeypatch.setenv(plugin_lib.PLUGIN_ENV, "/opt/env.so")
    assert plugin_lib.engine_plugin_library(engine, side, None) == Path("/opt/env.so")
    monkeypatch.delenv(plugin_lib.PLUGIN_ENV)
    assert plugin_lib.engine_plugin_library(engine, side, None, trust_bundle=True).read_bytes() == \
        beside.read_bytes()
    assert plugin_lib.engine_plugin_library(engine, {**side, "plugin_sha256": "f" * 64}, None,
                                            trust_bundle=True) == shipped
    assert plugin_lib.engine_plugin_library(engine, None, None) == shipped


# ------------------------------------------------------------------ sidecar text printed safely

def _no_control(text: str) -> bool:
    return not any(unicodedata.category(c).startswith("C") for c in text)


def test_printable_and_shell_arg() -> None:
    assert printable("Orin\x1b[2J\nFAKE\u202e") == "Orin\\x1b[2J\\x0aFAKE\\u202e"
    assert printable("x" * 400).endswith("…") and len(printable("x" * 400)) == 301
    assert shlex.split(shell_arg("a model; rm -rf ~\n.onnx")) == ["a model; rm -rf ~\\x0a.onnx"]


def test_refusal_prints_sidecar_text_safely(tmp_path: Path) -> None:
    onnx = "/models/my model; touch pwned\n.onnx"
    engine = make_engine(tmp_path, gpu="Orin\x1b]0;owned\x07\nERROR: fake", onnx_file=onnx, precision="fp16")
    with pytest.raises(S2Error) as e:
        TrtBackend(engine, trt=fake_trt(FakeEngine(), version="10.16.1"), cuda=FakeCuda())
    msg = str(e.value)
    assert _no_control(msg) and "Orin\\x1b]0;owned\\x07\\x0aERROR: fake" in msg
    # The suggested command is one line, and the shell reads the ONNX path as one word, not two commands.
    assert shlex.split(msg.split("rebuild it on this machine with: ")[1]) == [
        "s2export", "/models/my model; touch pwned\\x0a.onnx", "--fp16"]


# ------------------------------------------------------------------ wrong types: exit 1, one line

@pytest.mark.parametrize("sidecar", [
    ["not", "an", "object"], "10.3.0", {"tensorrt_version": 10.3}, {"gpu": ["Orin"]},
    {"compute_capability": 8.7}, {"compute_capability": "sm87"}, {"plugin_library": 5},
    {"plugin_sha256": "../libevil.so"}, {"plugin": {"name": "x"}}, {"onnx_file": True},
    {"profiles": "min 1"}, {"workspace_gib": "2"}, {"tensorrt_version": "ten"},
], ids=repr)
def test_sidecar_with_wrong_types_is_one_line(tmp_path: Path, sidecar: object) -> None:
    engine = make_engine(tmp_path)
    base = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**base, **sidecar} if isinstance(sidecar, dict) else sidecar))
    with pytest.raises(S2Error) as e:
        TrtBackend(engine, trt=fake_trt(FakeEngine()), cuda=FakeCuda())
    assert "\n" not in str(e.value) and "m.engine.json" in str(e.value)


def _open_exit_code(engine: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """What s2infer's error handling (s2trt.cli.run_main) makes of opening this engine."""
    def main(args: object) -> int:
        TrtBackend(engine, trt=fake_trt(FakeEngine()), cuda=FakeCuda()).close()
        return 0

    rc = run_main("s2infer", lambda argv: SimpleNamespace(verbose=False, quiet=True), main, [])
    return rc, capsys.readouterr().err


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
# The engine fields; the ModelMeta fields (names, imgsz, ...) are checked by s2trt.meta and its tests.
FIELDS = st.sampled_from(list(sidecar.ENGINE_FIELDS))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(FIELDS, JSON, max_size=3) | JSON)
def test_any_sidecar_json_exits_0_or_1(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       changes: object) -> None:
    """Property: whatever JSON the sidecar holds, opening the engine succeeds or fails with one line
    and exit 1 — never an internal error (exit 70)."""
    engine = make_engine(tmp_path)
    base = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**base, **changes} if isinstance(changes, dict) else changes))
    rc, err = _open_exit_code(engine, capsys)
    assert rc in (0, EXIT_ERROR), err
    assert rc == 0 or (err.count("\n") == 1 and "internal error" not in err)


# ------------------------------------------------------------------ the ONNX sidecar the builder reads

def test_onnx_sidecar_with_wrong_types_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where only the sidecar travels with the ONNX (a Jetson without the onnx package), its values
    make the printed build commands: they are checked, not trusted."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read")
    for bad in ([1, 2], {"producer": "s2trt", "names": ["a"], "imgsz": "640"},
                {"producer": "s2trt", "names": ["a"], "imgsz": [640, 640], "batch": [1]},
                {"producer": "s2trt", "names": ["a"], "imgsz": [640, 640], "precision": "fp64"}):
        sidecar_path(onnx).write_text(json.dumps(bad))
        with pytest.raises(S2Error) as e:
            manual_build_hint(onnx, EngineOptions())
        assert "\n" not in str(e.value) and "model" in str(e.value)
