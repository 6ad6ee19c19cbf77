"""TensorRT API conformance: every TensorRT attribute the package uses exists on the versions that use it.

No TensorRT library can be installed here, but TensorRT's Python module can: the PyPI wheels
tensorrt-cu12-bindings (10.3 = JetPack 6, newest 10.x) and tensorrt-cu13-bindings (11.x) import
against stub libraries (tests/support/trt_stub), and the real module lists its API. The uses are collected
from the package sources with their version paths (tests/support/trt_stub/usage.py explains the rules).
"""

from __future__ import annotations

import textwrap

import pytest
from paths import REPO
from trt_stub import provision
from trt_stub.dump_api import parameter_names
from trt_stub.usage import ALL, Use, collect_files, collect_source, missing

PACKAGE_FOLDERS = ("core", "trt", "detect", "models", "export", "calib", "runtime", "serve", "demo")


def _uses(source: str) -> set[tuple[str, tuple]]:
    return {(u.path, u.majors) for u in collect_source(textwrap.dedent(source), "snippet.py")}


# ------------------------------------------------------------------ the collector, no wheels needed

def test_collector_assigns_version_paths() -> None:
    uses = _uses("""
        from s2trt.trt.versions import for_trt, is_strongly_typed_only

        @for_trt(max_major=10)
        def old(trt, config):
            config.set_flag(trt.BuilderFlag.FP16)

        @for_trt(min_major=11)
        class New:
            def f(self, trt):
                return trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED

        def either(trt):
            if is_strongly_typed_only(trt):
                a = trt.A
            else:
                a = trt.B
            if not is_strongly_typed_only(trt):
                a = trt.C
            return trt.D if is_strongly_typed_only(trt) else trt.E
    """)
    assert uses == {
        ("IBuilderConfig.set_flag", (None, 10)), ("BuilderFlag", (None, 10)),
        ("BuilderFlag.FP16", (None, 10)),
        ("NetworkDefinitionCreationFlag", (11, None)),
        ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", (11, None)),
        ("A", (11, None)), ("B", (None, 10)), ("C", (None, 10)), ("D", (11, None)), ("E", (None, 10)),
    }


def test_collector_types_tensorrt_objects() -> None:
    uses = _uses("""
        from pathlib import Path

        class Backend:
            def __init__(self, trt, engine_file: Path, logger):
                runtime = trt.Runtime(logger)
                self._engine = runtime.deserialize_cuda_engine(engine_file.read_bytes())
                ctx = self._engine.create_execution_context()
                ctx.execute_async_v3(0)
                cfg = trt.Builder(logger).create_builder_config()
                cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1)
                trt.get_plugin_registry().get_creator("a", "1", "b")

            def run(self, engine: Path, config: dict):
                return engine.stem, config.get("x")
    """)
    assert uses == {
        ("Runtime", ALL), ("Runtime.deserialize_cuda_engine", ALL),
        ("ICudaEngine.create_execution_context", ALL), ("IExecutionContext.execute_async_v3", ALL),
        ("Builder", ALL), ("Builder.create_builder_config", ALL),
        ("IBuilderConfig.set_memory_pool_limit", ALL), ("MemoryPoolType", ALL),
        ("MemoryPoolType.WORKSPACE", ALL), ("get_plugin_registry", ALL), ("IPluginRegistry.get_creator", ALL),
    }  # `engine: Path` and `config: dict` are not TensorRT objects


def test_collector_reads_the_package() -> None:
    """The conformance check below is only as good as what it collects from the real sources."""
    uses = {(u.path, u.majors) for u in collect_files(REPO, PACKAGE_FOLDERS)}
    for expected in [("BuilderFlag.FP16", (None, 10)), ("BuilderFlag.INT8", (None, 10)),
                     ("IBuilderConfig.int8_calibrator", (None, 10)),
                     # Typed graphs are built strongly typed on 10.x too (NvInfer.h v10.3.0 line 9620:
                     # "kSTRONGLY_TYPED = 1,"); FP32 islands of an FP32 graph are pinned on ≤ 10 only.
                     ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", ALL),
                     ("BuilderFlag.OBEY_PRECISION_CONSTRAINTS", (None, 10)), ("ILayer.precision", (None, 10)),
                     ("ILayer.set_output_type", (None, 10)), ("ITensor.is_shape_tensor", (None, 10)),
                     ("IBuilderConfig.set_memory_pool_limit", ALL),
                     ("IPluginRegistry.get_creator", ALL), ("OnnxParser.parse_from_file", ALL),
                     ("Builder.build_serialized_network", ALL), ("IOptimizationProfile.set_shape", ALL)]:
        assert expected in uses


# Version-compatible engines are not built (README, "Version compatibility"). In NvInfer.h (10.3)
# plugins_to_serialize is "the plugin libraries to be serialized with version-compatible engines",
# kEXCLUDE_LEAN_RUNTIME needs IRuntime::loadRuntime(path) of a lean runtime library (NvInferRuntime.h
# 10.3, loadRuntime), and running a library carried by the plan needs setEngineHostCodeAllowed(true):
# code taken from a model file. None of it may come back half-done.
VERSION_COMPAT_API = ("BuilderFlag.VERSION_COMPATIBLE", "BuilderFlag.EXCLUDE_LEAN_RUNTIME",
                      "IBuilderConfig.plugins_to_serialize", "Runtime.engine_host_code_allowed",
                      "Runtime.load_runtime")


def test_package_builds_and_loads_no_version_compatible_engines() -> None:
    used = {u.path: u.where for u in collect_files(REPO, PACKAGE_FOLDERS)}
    assert not {p: used[p] for p in VERSION_COMPAT_API if p in used}


def test_parameter_names_from_pybind_signatures() -> None:
    doc = """set_shape(self: tensorrt.IOptimizationProfile, input: str, min: tensorrt.Dims, opt: Dict[str, \
Tuple[int, int]] = {}, max: tensorrt.Dims = Dims(1, 2)) -> None

    Set the shapes."""
    assert parameter_names("set_shape", doc) == ["input", "min", "opt", "max"]
    overloaded = """f(*args, **kwargs)
Overloaded function.

1. f(self: X, a: int) -> None

2. f(self: X, b: str = 'x') -> None
"""
    assert parameter_names("f", overloaded) == ["a", "b"]
    assert parameter_names("g", "g(self: X, **kwargs) -> None") is None
    assert parameter_names("h", "no signature") is None


# ----------------------------------------------------------------- against the real TensorRT modules

@pytest.fixture(params=list(provision.WHEELS), ids=lambda v: f"trt{v}")
def trt_api(request: pytest.FixtureRequest) -> dict:
    return provision.api_or_skip(request.param)


def _major(api: dict) -> int:
    return int(api["version"].split(".")[0])


def test_package_uses_only_existing_tensorrt_api(trt_api: dict) -> None:
    uses = collect_files(REPO, PACKAGE_FOLDERS)
    problems = list(missing(uses, trt_api, _major(trt_api)))
    assert not problems, f"TensorRT {trt_api['version']} lacks:\n" + "\n".join(problems)


def test_compat_helpers_on_the_real_module(trt_api: dict) -> None:
    expected = tuple(int(p) for p in trt_api["version"].split(".")[:3])
    assert tuple(trt_api["trt_version"]) == expected
    assert trt_api["strongly_typed_only"] is (expected[0] >= 11)


def test_typed_network_flags_on_the_real_modules(trt_api: dict) -> None:
    """The flags behind typed networks, as the real bindings define them. NvInfer.h of v10.3.0:
    line 9620 "kSTRONGLY_TYPED = 1," (so 10.3 builds strongly typed networks, create_network(1 << 1)),
    line 8334 "kOBEY_PRECISION_CONSTRAINTS = 9,"; NvInfer.h of v11.1, line 11471:
    "kSTRONGLY_TYPED TRT_DEPRECATED_ENUM = 0" with "Strongly typed mode is always enabled. This flag is
    retained for API compatibility but is ignored."."""
    values = trt_api["values"]
    if _major(trt_api) == 10:
        assert values["NetworkDefinitionCreationFlag.STRONGLY_TYPED"] == 1
        assert values["BuilderFlag.OBEY_PRECISION_CONSTRAINTS"] == 9
        assert "BuilderFlag.FP16" in values and "BuilderFlag.INT8" in values
    else:
        assert values["NetworkDefinitionCreationFlag.STRONGLY_TYPED"] == 0
        assert "BuilderFlag.FP16" not in values and "BuilderFlag.OBEY_PRECISION_CONSTRAINTS" not in values


SNIPPETS = {
    # TensorRT 11 removed the precision flags: the 11 path must not use them (rf-detr#1453).
    "fp16_flag_on_11_path": ("""
        @for_trt(min_major=11)
        def precision(trt, config):
            config.set_flag(trt.BuilderFlag.FP16)
        """, {11}),
    "fp16_flag_in_10_branch": ("""
        def precision(trt, config):
            if is_strongly_typed_only(trt):
                return trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
            config.set_flag(trt.BuilderFlag.FP16)
        """, {11}),  # code after the branch runs on every version
    "fp16_flag_in_else": ("""
        def precision(trt, config):
            if is_strongly_typed_only(trt):
                return trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
            else:
                config.set_flag(trt.BuilderFlag.FP16)
        """, set()),
    "calibrator_unmarked": ("""
        def make(trt):
            class Calibrator(trt.IInt8EntropyCalibrator2):
                pass
            return Calibrator
        """, {11}),
    "calibrator_marked": ("""
        @for_trt(max_major=10)
        def make(trt):
            class Calibrator(trt.IInt8EntropyCalibrator2):
                def __init__(self):
                    trt.IInt8EntropyCalibrator2.__init__(self)
            return Calibrator
        """, set()),
    "workspace_removed_in_10": ("""
        def workspace(trt, builder):
            config = builder.create_builder_config()
            config.max_workspace_size = 1 << 30
        """, {10, 11}),  # ultralytics#9510
    "keyword_misspelt": ("""
        def cache(trt, config, data):
            config.set_timing_cache(config.create_timing_cache(data), ignore_mismatches=False)
        """, {10, 11}),
    "keyword_right": ("""
        def cache(trt, config, data):
            config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False)
        """, set()),
    "misspelt": ("""
        def precision(trt, config):
            config.set_flag(trt.BuilderFlag.FP61)
        """, {10, 11}),
}


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_fails_exactly_where_its_api_is_missing(trt_api: dict, name: str) -> None:
    source, failing_majors = SNIPPETS[name]
    uses = collect_source(textwrap.dedent(source), f"{name}.py")
    problems = list(missing(uses, trt_api, _major(trt_api)))
    assert bool(problems) is (_major(trt_api) in failing_majors), problems


def test_missing_names_the_file_line_and_attribute() -> None:
    api = provision.api_or_skip(next(v for v in provision.WHEELS if v.startswith("11.")))
    use = Use("BuilderFlag.FP16", (11, None), "export/engine.py:42")
    assert list(missing([use], api, 11)) == [
        "export/engine.py:42: trt.BuilderFlag.FP16 (BuilderFlag.FP16 does not exist)"]
