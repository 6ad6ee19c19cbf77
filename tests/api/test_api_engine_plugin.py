"""`Detector(trust_engine_plugin=)` is s2infer's --trust-engine-plugin: the plugin library that came
with an engine (beside it, with the SHA-256 its sidecar records) is loaded only when the operator
trusts the engine. Proof of a load is the library's constructor running (dlopen runs it before any
other check could); TensorRT, CUDA and the GPU are this repository's fakes (tests/support/fakes.py)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from c_library import c_library
from fakes import FakeCuda, FakeEngine, fake_trt, make_engine

import s2trt
from s2trt.errors import S2Error
from s2trt.runtime.backends import trt as trt_backend
from s2trt.trt import gpu, plugin_lib, versions

PLUGIN = (plugin_lib.PLUGIN_NAME, plugin_lib.PLUGIN_VERSION, plugin_lib.PLUGIN_NAMESPACE)
MARKS = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void s2trt_api_test_loaded(void)
{
    FILE* f = fopen(getenv("S2TRT_API_TEST_MARKER"), "a");
    if (f) { fputs("loaded\n", f); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def marking_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared library that appends a line to $S2TRT_API_TEST_MARKER when it is loaded."""
    return c_library(tmp_path_factory, "marks", MARKS)


@pytest.fixture
def engine_bundle(tmp_path: Path, marking_lib: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """An engine that needs the plugin, shipped with its library beside it and that library's digest
    in its sidecar; no other plugin library anywhere, no trust in the environment."""
    beside = tmp_path / plugin_lib.PLUGIN_LIB_NAME
    shutil.copy(marking_lib, beside)  # a file of its own: the loader runs constructors once per file
    engine = make_engine(tmp_path, plugin=plugin_lib.PLUGIN_NAME, plugin_library=beside.name,
                         plugin_sha256=hashlib.sha256(beside.read_bytes()).hexdigest())
    marker = tmp_path / "loaded"
    monkeypatch.setenv("S2TRT_API_TEST_MARKER", str(marker))
    monkeypatch.delenv(plugin_lib.PLUGIN_ENV, raising=False)
    monkeypatch.delenv(plugin_lib.TRUST_ENV, raising=False)
    monkeypatch.setattr(plugin_lib, "_REPO_ROOT", tmp_path / "checkout")  # nothing built in this checkout
    monkeypatch.setattr(plugin_lib, "_copies", {})

    registered: list[str] = []  # like TensorRT's registry: the creator exists once the library is loaded
    trt = fake_trt(FakeEngine())
    trt.get_plugin_registry = lambda: SimpleNamespace(
        get_creator=lambda *key: key if key == PLUGIN and registered else None,
        load_library=registered.append)
    monkeypatch.setattr(versions, "import_tensorrt", lambda purpose: trt)
    monkeypatch.setattr(gpu, "gpu_info", lambda device=0: (None, None))
    monkeypatch.setattr(gpu, "select_device", lambda device: None)
    monkeypatch.setattr(trt_backend, "_open_cuda", FakeCuda)
    return SimpleNamespace(engine=engine, beside=beside, marker=marker, registered=registered)


def test_an_engines_own_plugin_library_loads_only_when_trusted(engine_bundle: SimpleNamespace) -> None:
    b = engine_bundle
    with pytest.raises(S2Error, match=f"{b.beside} is not loaded: a library that comes with an engine runs "
                                      "only if you trust where the engine came from: rerun with "
                                      "--trust-engine-plugin"):
        s2trt.Detector(b.engine, gpu_preprocess="off")
    assert not b.marker.exists() and not b.registered  # not even dlopened

    with s2trt.Detector(b.engine, gpu_preprocess="off", trust_engine_plugin=True) as det:
        assert det.names == ["a", "b", "c"]  # the engine deserialized, with its plugin registered
    assert b.marker.read_text() == "loaded\n"
    (loaded,) = b.registered  # the private copy of the bytes that were hashed
    assert Path(loaded).read_bytes() == b.beside.read_bytes()


def test_the_environment_still_trusts_without_the_option(engine_bundle: SimpleNamespace,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """False is s2infer without the flag: $S2TRT_TRUST_ENGINE_PLUGIN=1 decides, as it does there."""
    monkeypatch.setenv(plugin_lib.TRUST_ENV, "1")
    with s2trt.Detector(engine_bundle.engine, gpu_preprocess="off"):
        pass
    assert engine_bundle.marker.read_text() == "loaded\n"
