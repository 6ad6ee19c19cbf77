"""The served model's batch logic without a server: requests of one scheduler batch share the network
call, and whatever one request's content breaks fails that request alone (issue 15, item 1)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import serve_fixtures as F

from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.serve import detector as D


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return F.export_demo_model(tmp_path_factory.mktemp("model") / "demo.onnx")


@pytest.fixture
def det(model):
    from s2trt.runtime.backends.ort import OrtBackend

    backend = OrtBackend(model, "cpu", threads=1)
    yield D.Detector(backend, DetectOptions(max_det=100))
    backend.close()


def test_a_request_whose_letterbox_fails_fails_alone(det, monkeypatch):
    """Any exception of the letterbox (cv2 threw on a 1x5000 frame before the runtime kept sides >= 1)
    belongs to the request that caused it, not to its batch-mates."""
    real = D.preprocess

    def picky(frames, *a, **k):
        if any(f.shape[1] == 5000 for f in frames):
            raise cv2.error("OpenCV(4.x) resize.cpp: error: (-215:Assertion failed) !dsize.empty()")
        return real(frames, *a, **k)

    monkeypatch.setattr(D, "preprocess", picky)
    good = F.sample_images(4)
    alone = [det.run_requests([(None, g[None], {})])[0] for g in good]
    bad = np.zeros((1, 1, 5000, 3), np.uint8)
    mixed = det.run_requests([(None, good[0][None], {}), (None, bad, {}), (None, good[1][None], {}),
                              (None, good[2][None], {}),
                              (None, bad, {}), (None, good[3][None], {})])
    assert isinstance(mixed[1], S2Error) and isinstance(mixed[4], S2Error)
    assert "could not be letterboxed" in str(mixed[1]) and "error" in str(mixed[1])
    for got, want in zip([mixed[0], mixed[2], mixed[3], mixed[5]], alone, strict=True):
        assert not isinstance(got, Exception)
        assert got["num_dets"][0, 0] == want["num_dets"][0, 0]
        np.testing.assert_allclose(got["det_boxes"], want["det_boxes"], atol=1e-2)


def test_one_network_call_for_the_good_requests_of_a_batch(det, monkeypatch):
    calls = []
    infer = det.backend.infer
    monkeypatch.setattr(det.backend, "infer", lambda x: calls.append(len(x)) or infer(x))
    good = F.sample_images(3)
    out = det.run_requests([(None, good[0][None], {}), (np.frombuffer(b"junk", np.uint8)[None], None, {}),
                            (None, np.stack([good[1][:100, :100], good[2][:100, :100]]), {})])
    assert calls == [3]
    assert isinstance(out[1], S2Error) and out[2]["num_dets"].shape == (2, 1)


@pytest.mark.parametrize("shape", [(1, 5000, 3), (5000, 1, 3), (1, 1, 3)])
def test_ensemble_preprocess_fails_a_bad_image_alone(model, shape, monkeypatch):
    import onnx

    from s2trt.meta import ModelMeta
    from s2trt.serve import stages

    meta = ModelMeta.from_props({p.key: p.value for p in onnx.load(str(model)).metadata_props}, "m")
    real = stages.preprocess

    def picky(frames, *a, **k):
        if any(min(f.shape[:2]) == 1 for f in frames):
            raise cv2.error("resize: (-215:Assertion failed) !dsize.empty()")
        return real(frames, *a, **k)

    monkeypatch.setattr(stages, "preprocess", picky)
    _, png = cv2.imencode(".png", np.full(shape, 200, np.uint8))
    good = np.frombuffer(F.encode_jpeg(F.sample_images(1)[0]), np.uint8)[None]
    out = stages.Preprocess(meta)([{"IMAGE": good}, {"IMAGE": png.reshape(1, -1)}, {"IMAGE": good}])
    assert isinstance(out[1], S2Error) and "could not be letterboxed" in str(out[1])
    assert out[0]["images"].shape[0] == 1 and np.array_equal(out[0]["images"], out[2]["images"])


def png_claiming(w: int, h: int) -> bytes:
    """A real 1x1 PNG whose header then claims w x h: what a decompression bomb's header says, without
    the bomb (the header is all the check may read)."""
    import struct

    data = bytearray(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", w, h)
    return bytes(data)


def test_image_bombs_refused_from_the_header_before_decoding(det, monkeypatch):
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(D.cv2, "imdecode", lambda *a: decoded.append(1) or real(*a))
    good = np.frombuffer(F.encode_jpeg(F.sample_images(1)[0]), np.uint8)
    bomb = np.frombuffer(png_claiming(20000, 20000), np.uint8)
    width = max(len(good), len(bomb))
    rows = np.zeros((2, width), np.uint8)  # one request of two images, zero-padded like the client does
    rows[0, :len(bomb)], rows[1, :len(good)] = bomb, good
    out = det.run_requests([(rows, None, {}), (good[None], None, {})])
    assert isinstance(out[0], S2Error)
    assert "image 0 of the request: 20000x20000 is 400.0 megapixels, above the limit of 120" in str(out[0])
    assert "--max-pixels" in str(out[0])
    assert out[1]["num_dets"].shape == (1, 1)
    assert len(decoded) == 1  # only the good request's image was decoded


def test_the_pixel_limit_comes_from_the_model_config(model):
    from s2trt.runtime.backends.ort import OrtBackend

    img = F.sample_images(1)[0]  # 240 x 320 = 76,800 pixels
    data = np.frombuffer(F.encode_jpeg(img), np.uint8)[None]
    with OrtBackend(model, "cpu", threads=1) as backend:
        det = D.Detector(backend, DetectOptions(), max_pixels=76_799)
        assert "above the limit" in str(det.run_requests([(data, None, {})])[0])
        det = D.Detector(backend, DetectOptions(), max_pixels=76_800)
        assert not isinstance(det.run_requests([(data, None, {})])[0], Exception)


def test_ensemble_preprocess_refuses_bombs(model):
    import onnx

    from s2trt.meta import ModelMeta
    from s2trt.serve import stages

    meta = ModelMeta.from_props({p.key: p.value for p in onnx.load(str(model)).metadata_props}, "m")
    out = stages.Preprocess(meta)([{"IMAGE": np.frombuffer(png_claiming(30000, 30000), np.uint8)[None]}])
    assert isinstance(out[0], S2Error) and "megapixels" in str(out[0])


def test_repository_writes_the_limit_and_s2serve_export_takes_it(model, tmp_path):
    from s2trt.serve import cli
    from s2trt.serve import repository as R

    assert cli.main(["export", str(model), str(tmp_path / "r"), "--max-pixels", "5000000", "-q"]) == 0
    config = (tmp_path / "r" / R.DETECTOR / "config.pbtxt").read_text()
    assert 'key: "max_pixels" value: { string_value: "5000000" }' in config


@pytest.mark.parametrize("params", [{"max_det": float("inf")}, {"max_det": "many"}, {"conf_thres": [0.5]},
                                    {"iou_thres": float("nan")}])
def test_a_request_with_unusable_parameters_fails_alone(det, params):
    """Request parameters are the client's content like its image: a value the NMS settings cannot
    take (int(inf) raises OverflowError, which is neither ValueError nor TypeError) fails that request
    only, not its scheduler batch (triton_model.execute fails every request on an exception)."""
    good = F.sample_images(2)
    out = det.run_requests([(None, good[0][None], {}), (None, good[1][None], params)])
    assert not isinstance(out[0], Exception) and out[0]["num_dets"].shape == (1, 1)
    assert isinstance(out[1], S2Error), out[1]
