"""The TensorRT calibration cache and calibrator, without TensorRT: keyed write/read/mismatch, and the
calibrator class driven the way TensorRT drives it (a stand-in base class and CUDA memory)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from calib_helpers import export_random_model, write_images
from fakes import FakeCuda, FakeTRT

from s2trt.calib import trt_calibrator
from s2trt.calib.cache import cache_key, graph_digest, load_cache, save_cache
from s2trt.calib.data import Preprocessing, open_reader
from s2trt.errors import S2Error

onnx = pytest.importorskip("onnx")
PREP = Preprocessing((64, 64))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_random_model(tmp_path_factory.mktemp("cache") / "m.onnx", imgsz=64)


def _key(model: Path, method: str = "entropy", prep: Preprocessing = PREP) -> dict:
    return cache_key(graph_digest(model), prep.as_dict(), method)


def test_digest_ignores_metadata_but_not_weights(model: Path, tmp_path: Path) -> None:
    m = onnx.load(str(model))
    m.metadata_props.add().key = "note"
    onnx.save(m, str(tmp_path / "meta.onnx"))
    assert graph_digest(tmp_path / "meta.onnx") == graph_digest(model)
    w = m.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.flat[0] += 1
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(m, str(tmp_path / "weights.onnx"))
    assert graph_digest(tmp_path / "weights.onnx") != graph_digest(model)


def test_write_then_read(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "m.calib"
    assert load_cache(cache, _key(model)) is None  # none yet: calibrate
    save_cache(cache, b"TRT-100300-EntropyCalibration2\nimages: 3c010a14\n", _key(model), images=16)
    assert load_cache(cache, _key(model)) == b"TRT-100300-EntropyCalibration2\nimages: 3c010a14\n"
    side = json.loads((tmp_path / "m.calib.json").read_text())
    assert side["key"]["method"] == "entropy" and side["images"] == 16


@pytest.mark.parametrize("change, message", [
    (lambda m, tmp: _key(m, method="minmax"), "calibration method entropy, not minmax"),
    (lambda m, tmp: _key(m, prep=Preprocessing((96, 96))), r"other preprocessing \(imgsz \[64, 64\] vs"),
    (lambda m, tmp: cache_key("0" * 64, PREP.as_dict(), "entropy"), "another model"),
])
def test_mismatch_is_refused_with_the_reason(model: Path, tmp_path: Path, change, message: str) -> None:
    cache = tmp_path / "m.calib"
    save_cache(cache, b"table", _key(model))
    with pytest.raises(S2Error, match=message):
        load_cache(cache, change(model, tmp_path))
    assert cache.read_bytes() == b"table"  # refused, not overwritten


def test_cache_without_key_is_refused(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "foreign.calib"
    cache.write_bytes(b"TRT-8601-EntropyCalibration2\n")
    with pytest.raises(S2Error, match=r"no key file foreign\.calib\.json"):
        load_cache(cache, _key(model))


@pytest.mark.parametrize("key_file", [
    "[1, 2]", '{"key": "entropy"}', '{"key": {"format": 1, "graph_sha256": 5, "preprocess": [1]}}',
    '{"key": {"format": "\\u001b[2J", "method": "entropy"}}'])
def test_forged_key_file_is_one_line(model: Path, tmp_path: Path, key_file: str) -> None:
    """A key file is JSON anyone can edit: wrong types are refused in one line (exit 1, never an
    internal error), and its text is printed without control characters."""
    cache = tmp_path / "m.calib"
    cache.write_bytes(b"table")
    (tmp_path / "m.calib.json").write_text(key_file)
    with pytest.raises(S2Error) as e:
        load_cache(cache, _key(model))
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value) and "m.calib" in str(e.value)


# ------------------------------------------------------------------- the calibrator, TensorRT-free

CURRENT_DEVICE = [0]  # what cudaSetDevice made current, as the CUDA runtime keeps it per thread


@pytest.fixture(autouse=True)
def _cuda_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    CURRENT_DEVICE[0] = 0
    monkeypatch.setattr("s2trt.trt.gpu.select_device",
                        lambda device: CURRENT_DEVICE.__setitem__(0, device))


def _cuda() -> FakeCuda:
    """CUDA memory allocated on the device cudaSetDevice made current."""
    return FakeCuda(device=lambda: CURRENT_DEVICE[0])


def test_calibrator_feeds_batches_and_writes_the_cache(model: Path, tmp_path: Path, monkeypatch) -> None:
    write_images(tmp_path / "imgs", 5)
    reader = open_reader(tmp_path / "imgs", PREP, size=5, batch=2, progress=False)
    reader.drop_last = True
    expected = list(reader.batches())
    cuda = _cuda()
    monkeypatch.setattr("s2trt.trt.cuda_mem.open_cuda", lambda: cuda)
    fake = FakeTRT("10.3.0")
    cls = trt_calibrator._calibrator_class(fake, "minmax")
    assert issubclass(cls, fake.IInt8MinMaxCalibrator)
    cal = cls(reader, None, tmp_path / "m.calib", _key(model, "minmax"))
    assert cal.base_initialised and cal.get_batch_size() == 2 and cuda.device  # memory up front
    assert cal.read_calibration_cache() is None  # no cache: TensorRT calibrates
    seen = []
    while (ptrs := cal.get_batch(["images"])) is not None:
        assert len(ptrs) == 1
        seen.append(cuda.bytes_at(ptrs[0], 2 * 3 * 64 * 64 * 4).view(np.float32).reshape(2, 3, 64, 64).copy())
    assert len(seen) == 2 and all(np.array_equal(a, b) for a, b in zip(seen, expected, strict=True))
    assert cuda.closed
    cal.write_calibration_cache(memoryview(b"TRT-100300-MinMaxCalibration\n"))
    assert load_cache(tmp_path / "m.calib", _key(model, "minmax")) == b"TRT-100300-MinMaxCalibration\n"


def test_make_calibrator_checks_before_tensorrt(model: Path, tmp_path: Path, monkeypatch) -> None:
    write_images(tmp_path / "imgs", 2)
    reader = open_reader(tmp_path / "imgs", PREP, size=2, batch=1, progress=False)
    with pytest.raises(S2Error, match="no 'percentile' method"):
        trt_calibrator.make_calibrator(model, reader, "percentile")
    monkeypatch.setattr(trt_calibrator, "import_tensorrt", lambda purpose: FakeTRT("11.0.0"))
    with pytest.raises(S2Error, match="no INT8 calibrator"):
        trt_calibrator.make_calibrator(model, reader, "entropy")
    fake = FakeTRT("10.3.0")
    monkeypatch.setattr(trt_calibrator, "import_tensorrt", lambda purpose: fake)
    save_cache(tmp_path / "m.calib", b"table", _key(model, "minmax"))
    with pytest.raises(S2Error, match="not entropy"):  # a mismatching cache stops before any image is read
        trt_calibrator.make_calibrator(model, reader, "entropy", tmp_path / "m.calib")
    cal = trt_calibrator.make_calibrator(model, reader, "minmax", tmp_path / "m.calib")
    assert cal.read_calibration_cache() == b"table" and cal._mem is None  # a cache needs no GPU
    # TensorRT takes whole batches only: 2 images cannot fill one batch of 4, said before any build.
    big = open_reader(tmp_path / "imgs", PREP, size=2, batch=4, progress=False)
    with pytest.raises(S2Error, match="do not fill one batch of 4"):
        trt_calibrator.make_calibrator(model, big, "minmax")


def test_a_failed_calibration_is_never_cached(model: Path, tmp_path: Path, monkeypatch) -> None:
    write_images(tmp_path / "imgs", 1)
    reader = open_reader(tmp_path / "imgs", PREP, size=1, batch=1, progress=False)
    monkeypatch.setattr("s2trt.trt.cuda_mem.open_cuda", _cuda)
    cal = trt_calibrator._calibrator_class(FakeTRT("10.3.0"), "entropy")(reader, None, tmp_path / "m.calib",
                                                                   _key(model))
    cal.error = S2Error("frame 3 could not be decoded")
    cal.write_calibration_cache(memoryview(b"partial table"))
    assert not (tmp_path / "m.calib").exists()


def test_calibrator_errors_end_calibration_without_raising(model: Path, tmp_path: Path,
                                                           monkeypatch) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"no jpeg")
    reader = open_reader(tmp_path / "imgs", PREP, size=1, batch=1, progress=False)
    monkeypatch.setattr("s2trt.trt.cuda_mem.open_cuda", _cuda)
    cal = trt_calibrator._calibrator_class(FakeTRT("10.3.0"), "entropy")(reader, None, None, _key(model))
    assert cal.get_batch(["images"]) is None  # TensorRT sees the end of the data, not an exception
    assert isinstance(cal.error, S2Error) and "bad.jpg" in str(cal.error)


def test_calibration_batch_follows_the_engine_profile(tmp_path: Path, monkeypatch) -> None:
    """TensorRT calibrates a dynamic-batch network at its profile's opt shape: batches must match."""
    from s2trt.calib.pipeline import Int8Options, trt_calibrator
    from s2trt.export.engine import EngineOptions

    write_images(tmp_path / "imgs", 8)
    monkeypatch.setattr("s2trt.calib.trt_calibrator.import_tensorrt", lambda purpose: FakeTRT("10.3.0"))
    monkeypatch.setattr("s2trt.trt.cuda_mem.open_cuda", _cuda)
    dyn = export_random_model(tmp_path / "dyn.onnx", imgsz=64, dynamic=True)
    opts = Int8Options(calib=str(tmp_path / "imgs"), method="minmax", size=8)
    cal = trt_calibrator(dyn, opts, EngineOptions(precision="int8", opt_shape=(3, 3, 64, 64)))
    assert cal.get_batch_size() == 3 and opts.batch is None
    default = trt_calibrator(dyn, Int8Options(calib=str(tmp_path / "imgs"), size=8),
                             EngineOptions(precision="int8"))
    assert default.get_batch_size() == 8  # the builder's default opt batch
    assert default.method == "entropy"  # TensorRT's calibrator default, not the Q/DQ one
    # s2export's path: the calibrator is made on the build's --device, not moved there later.
    assert default.device == 0
    on_1 = trt_calibrator(dyn, opts, EngineOptions(precision="int8", device=1))
    assert on_1.device == 1


def test_calibration_memory_is_on_the_build_device(model: Path, tmp_path: Path, monkeypatch) -> None:
    """`s2export model.onnx --int8 --calib imgs --device 1`: the calibrator is made before the build
    selects device 1, but TensorRT reads get_batch()'s pointers on the device that builds
    (IInt8Calibrator::getBatch, NvInfer.h 10.3 line 7694: "bindings An array of pointers to device
    memory")."""
    from onnx_files import write_onnx

    from s2trt.export.engine import EngineOptions, build_engine
    from s2trt.meta import ModelMeta

    write_images(tmp_path / "imgs", 2)
    reader = open_reader(tmp_path / "imgs", PREP, size=2, batch=1, progress=False)
    mems: list[FakeCuda] = []
    monkeypatch.setattr("s2trt.trt.cuda_mem.open_cuda", lambda: mems.append(_cuda()) or mems[-1])
    monkeypatch.setattr(trt_calibrator, "import_tensorrt", lambda purpose: FakeTRT("10.3.0"))
    cal = trt_calibrator.make_calibrator(model, reader, "entropy")  # before --device is applied
    onnx_file = write_onnx(tmp_path / "m.onnx", ModelMeta(names=["a"], imgsz=[64, 64], batch=1))
    fake = FakeTRT("10.3.0", shape=(1, 3, 64, 64))
    pointers: list[tuple[int, int]] = []

    def builder(logger: object) -> types.SimpleNamespace:
        b = FakeTRT.Builder(fake, logger)

        def build(network: object, config: object) -> bytes:  # TensorRT drives the calibrator here
            while (ptrs := config.int8_calibrator.get_batch(["images"])) is not None:
                pointers.append((CURRENT_DEVICE[0], mems[-1].device_of[ptrs[0]]))
            return b"engine"

        b.build_serialized_network = build
        return b

    fake.Builder = builder
    monkeypatch.setattr("s2trt.trt.versions.import_tensorrt", lambda purpose: fake)
    monkeypatch.setattr("s2trt.trt.gpu.gpu_info", lambda device=0: ("GPU 1", "8.6"))
    build_engine(onnx_file, tmp_path / "m.engine", EngineOptions(precision="int8", calibrator=cal, device=1))
    assert pointers == [(1, 1), (1, 1)]  # both batches from device-1 memory, read while device 1 builds
    assert set(mems[0].device_of.values()) == {0} and mems[0].closed  # the first buffer, given back
    direct = trt_calibrator.make_calibrator(model, reader, "entropy", device=2)
    assert set(mems[-1].device_of.values()) == {2} and direct.device == 2
