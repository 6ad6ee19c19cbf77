"""What a client did wrong is a client error (issue 28 item 5), against a real tritonserver: the
served models refuse a bad frame or bad parameters with Triton's INVALID_ARG (HTTP 400, gRPC
INVALID_ARGUMENT), which s2infer's client never re-sends, while a fault of the server (INTERNAL)
stays a server error, which it does."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import serve_fixtures as F

from s2trt.errors import S2Error

pytestmark = pytest.mark.skipif(not F.have_tritonserver(), reason=F.NO_SERVER)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from s2trt.serve.server import TritonServer

    model = F.export_demo_model(tmp_path_factory.mktemp("model") / "demo.onnx")
    repo = F.small_repository(model, tmp_path_factory.mktemp("repo"), ensemble=True, max_pixels=400 * 400)
    with TritonServer(repo) as s:
        yield s


def infer_http(server, model: str, name: str, data: np.ndarray, params: dict | None = None
               ) -> tuple[int, str]:
    body = {"inputs": [{"name": name, "shape": list(data.shape), "datatype": "UINT8",
                        "data": data.reshape(-1).tolist()}]}
    if params:
        body["parameters"] = params
    req = urllib.request.Request(f"{server.endpoints.http_url}/v2/models/{model}/infer",
                                 data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def image_row(img: np.ndarray) -> np.ndarray:
    return np.frombuffer(F.encode_jpeg(img), dtype=np.uint8)[None]


def test_a_good_request_is_200(server):
    img = F.sample_images(1)[0]
    for model in ("s2trt_detector", "s2trt_ensemble"):
        assert infer_http(server, model, "IMAGE", image_row(img))[0] == 200
    assert infer_http(server, "s2trt_detector", "FRAME", img[None])[0] == 200


@pytest.mark.parametrize("model", ["s2trt_detector", "s2trt_ensemble"])
def test_an_undecodable_image_is_400(server, model):
    status, text = infer_http(server, model, "IMAGE", np.arange(64, dtype=np.uint8)[None])
    assert status == 400 and "image 0 of the request" in text, (status, text)


def test_an_image_over_the_pixel_limit_is_400(server):
    status, text = infer_http(server, "s2trt_detector", "IMAGE", image_row(np.zeros((500, 500, 3), np.uint8)))
    assert status == 400 and "pixels" in text, (status, text)


def test_a_frame_over_the_pixel_limit_is_400(server):
    status, text = infer_http(server, "s2trt_detector", "FRAME", np.zeros((1, 400, 401, 3), np.uint8))
    assert status == 400 and "401x400 = 160,400 pixels is over the server's limit" in text, (status, text)
    assert infer_http(server, "s2trt_detector", "FRAME", np.zeros((1, 400, 400, 3), np.uint8))[0] == 200


@pytest.mark.parametrize("params", [{"conf_thres": 5}, {"iou_thres": -1}, {"max_det": "many"}])
def test_bad_parameters_are_400(server, params):
    img = F.sample_images(1)[0]
    status, text = infer_http(server, "s2trt_detector", "FRAME", img[None], params)
    assert status == 400, (status, text)


def test_grpc_client_gets_invalid_argument_and_does_not_resend(server):
    import tritonclient.grpc as g

    from s2trt.runtime.backends.triton import TritonClient

    c = g.InferenceServerClient(server.endpoints.grpc_url)
    try:
        inp = g.InferInput("IMAGE", [1, 64], "UINT8")
        inp.set_data_from_numpy(np.arange(64, dtype=np.uint8)[None])
        with pytest.raises(g.InferenceServerException) as e:
            c.infer("s2trt_detector", [inp])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        c.close()
    with TritonClient(server.endpoints.grpc_url) as client:
        with pytest.raises(S2Error, match=r"rejected the request: image 0 of the request"):
            client.detect([bytes(range(64))])
        [s] = client.pool.servers
        assert s.up and s.failures == 0 and s.moved == 0
