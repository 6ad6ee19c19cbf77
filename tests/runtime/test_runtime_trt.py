"""The TensorRT backend against a fake TensorRT module and fake CUDA memory.

No TensorRT library or GPU exists on CI: the fakes (tests/support/fakes.py) implement the slice of the
TensorRT 10/11 Python API the backend uses (tensor-name I/O, profiles, set_input_shape,
execute_async_v3) with NumPy, so buffer planning, batching, shape checks and error messages are
tested for real. The fake engine's "network" is a known function of its input, so a wrong buffer,
offset or order changes the result.
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes import (
    NC,
    DataType,
    FakeCuda,
    FakeCudart,
    FakeEngine,
    H,
    N,
    TensorIOMode,
    W,
    batch_of,
    expected_output0,
    fake_trt,
    make_engine,
    open_fake,
)

from s2trt.detect.boxes import postprocess
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.runtime.backends.trt import TrtBackend, cuda_index, describe_engine, numpy_dtype


@pytest.mark.parametrize("n", [1, 3, 8, 11])
def test_dynamic_batch_runs_in_order_and_splits_at_profile_max(tmp_path, n):
    engine = FakeEngine(profile=(1, 4, 8))
    backend, cuda = open_fake(tmp_path, engine)
    assert backend.spec.min == 1 and backend.max_batch == 8
    x = batch_of(n)
    out = backend.infer(x)["output0"]
    assert out.shape == (n, N, 5 + NC)
    np.testing.assert_allclose(out[..., 0], expected_output0(x), rtol=1e-5)
    ctx = engine.contexts[0]
    assert ctx.runs == ([8, n - 8] if n > 8 else [n])
    assert ctx.shapes_set[0] == (8, 3, H, W)  # buffers planned for the profile's max
    backend.close()
    assert cuda.closed


def test_fixed_batch_pads_partial_batch_and_drops_padding(tmp_path):
    engine = FakeEngine(batch=4)
    backend, _ = open_fake(tmp_path, engine)
    assert backend.spec.fixed and backend.max_batch == 4
    x = batch_of(6)
    out = backend.infer(x)["output0"]
    assert out.shape[0] == 6
    np.testing.assert_allclose(out[..., 0], expected_output0(x), rtol=1e-5)
    assert engine.contexts[0].runs == [4, 4] and engine.contexts[0].shapes_set == []


def test_outputs_are_copies_not_views_of_reused_buffers(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine())
    first = backend.infer(batch_of(2, seed=1))["output0"]
    keep = first.copy()
    backend.infer(batch_of(2, seed=2))
    np.testing.assert_array_equal(first, keep)


def test_fp16_input_engine_gets_converted_input(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine(in_dtype=DataType.HALF))
    x = batch_of(2)
    out = backend.infer(x)["output0"]
    np.testing.assert_allclose(out[..., 0], expected_output0(x.astype(np.float16)), rtol=1e-4)


def test_nms_engine_outputs_decode_to_detections(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine(nms=True))
    assert backend.layout == "nms"
    x = batch_of(3)
    dets = postprocess(backend.infer(x), DetectOptions(conf_thres=0.1))
    means = x.reshape(3, -1).mean(1)
    assert [d.shape for d in dets] == [(1, 6)] * 3
    np.testing.assert_allclose([d[0, 4] for d in dets], means, rtol=1e-5)
    np.testing.assert_array_equal(dets[0][0], np.array([1, 2, 30, 40, means[0], 2], np.float32))
    assert [len(d) for d in postprocess(backend.infer(x), DetectOptions(0.9))] == [0, 0, 0]  # means are ~0.5


def test_imgsz_outside_the_profile_names_the_profile(tmp_path):
    with pytest.raises(S2Error, match=r"profile min 1x3x64x96, opt 4x3x64x96, max 8x3x64x96") as e:
        open_fake(tmp_path, FakeEngine(), imgsz=(640, 640))
    assert "--imgsz 64 96" in str(e.value)


def test_wrong_input_size_at_run_time_is_one_clear_error(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine())
    with pytest.raises(S2Error, match=r"takes \(batch, 3, 64, 96\)"):
        backend.infer(np.zeros((1, 3, 64, 64), np.float32))


def test_refused_input_shape_reports_the_profile(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine(profile=(1, 2, 4)))
    backend.engine.contexts[0].e.profile = (2, 2, 4)  # the engine now refuses batch 1
    with pytest.raises(S2Error, match=r"refused input shape 1x3x64x96 .*profile min 1x3x64x96"):
        backend.infer(batch_of(1))


def test_engine_that_does_not_deserialize(tmp_path):
    cuda = FakeCuda()
    with pytest.raises(S2Error, match=r"could not load .*rebuild it here with: s2export"):
        TrtBackend(make_engine(tmp_path, blob=b"garbage"), trt=fake_trt(FakeEngine()), cuda=cuda)
    assert cuda.closed  # the stream and buffers made before the failure are released


def test_engine_from_another_tensorrt_version_is_refused(tmp_path):
    with pytest.raises(S2Error, match=r"built with TensorRT 10\.3\.0.*this is TensorRT 11\.0\.0"):
        open_fake(tmp_path, FakeEngine(), version="11.0.0")


def test_engine_without_sidecar_uses_class_ids(tmp_path, caplog):
    backend, _ = open_fake(tmp_path, FakeEngine(), sidecar=False)
    assert backend.meta.names == ["0", "1", "2"] and tuple(backend.imgsz) == (H, W)
    assert "no sidecar" in caplog.text


def test_non_s2trt_engine_outputs(tmp_path):
    engine = FakeEngine()
    engine.io[1] = ("logits", TensorIOMode.OUTPUT, (-1, 1000), DataType.FLOAT)
    with pytest.raises(S2Error, match="has outputs \\['logits'\\]"):
        open_fake(tmp_path, engine)


def test_describe_engine_and_dtypes():
    trt = fake_trt(None)
    infos = describe_engine(FakeEngine(nms=True), trt)
    assert [(t.name, t.is_input, t.dtype) for t in infos] == [
        ("images", True, np.float32), ("num_dets", False, np.int32), ("det_boxes", False, np.float32),
        ("det_scores", False, np.float32), ("det_classes", False, np.int32)]
    assert infos[0].profile == ((1, 3, H, W), (4, 3, H, W), (8, 3, H, W))
    with pytest.raises(S2Error, match="tensor type bf16"):
        numpy_dtype(trt, DataType.BF16)


def test_cuda_index():
    assert cuda_index("auto") == 0 and cuda_index("cuda") == 0 and cuda_index("cuda:1") == 1
    assert cuda_index("2") == 2
    with pytest.raises(S2Error, match="GPU only"):
        cuda_index("cpu")
    with pytest.raises(S2Error, match="expected auto"):
        cuda_index("tpu")


def test_missing_engine_file(tmp_path):
    with pytest.raises(S2Error, match="engine not found"):
        TrtBackend(tmp_path / "nope.engine", trt=fake_trt(None), cuda=FakeCuda())


def test_cuda_python_memory_calls_and_errors():
    from s2trt.trt.cuda_mem import CudaPythonMemory

    rt = FakeCudart()
    mem = CudaPythonMemory(rt)
    host = mem.host_array((2, 3), np.float32)
    host[:] = 5  # writable pinned memory of the right size
    assert host.shape == (2, 3) and host.dtype == np.float32
    dev = mem.malloc(24)
    mem.h2d(dev, host)
    mem.d2h(host, dev)
    assert rt.calls[1] == ("memcpy", dev, host.ctypes.data, 24, 1, 99)
    assert rt.calls[2] == ("memcpy", host.ctypes.data, dev, 24, 2, 99)
    assert mem.stream_handle == 99
    mem.close()
    assert [c[0] for c in rt.calls[3:]] == ["free", "freehost", "destroy"]
    with pytest.raises(S2Error, match=r"CUDA error in cudaMalloc\(64 bytes\): out of memory"):
        CudaPythonMemory(FakeCudart(fail_malloc=True)).malloc(64)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_real_engine_matches_onnxruntime(tmp_path):
    """On a GPU machine with TensorRT: a dynamic-batch engine of the tiny model vs ONNX Runtime."""
    pytest.importorskip("tensorrt", reason="TensorRT's Python module is not installed")
    from runtime_support import IMGSZ, scene, tiny_models

    from s2trt.detect.letterbox import preprocess
    from s2trt.export.engine import EngineOptions, build_engine
    from s2trt.runtime.backends.ort import OrtBackend

    onnx_path = tiny_models()["onnx"]
    engine = tmp_path / "tiny.engine"
    build_engine(onnx_path, engine, EngineOptions(min_shape=(1, 3, *IMGSZ), opt_shape=(2, 3, *IMGSZ),
                                                  max_shape=(4, 3, *IMGSZ), use_plugin=False))
    trt_backend = TrtBackend(engine)
    assert (trt_backend.spec.min, trt_backend.spec.max) == (1, 4)
    x, _ = preprocess([scene(i * 11) for i in range(5)], IMGSZ)  # 4 + 1: both profile ends
    got = trt_backend.infer(x)["output0"]
    want = OrtBackend(onnx_path, device="cpu").infer(x)["output0"]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)  # TF32 convolutions on Ampere+
    trt_backend.close()
