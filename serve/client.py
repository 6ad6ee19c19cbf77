"""gRPC client of the `s2trt_detector` Triton model, and the `s2infer --triton` backend built on it.

Every image goes out as its own request, all in flight at once (up to `max_in_flight`), so the
server's dynamic batcher, not the client, forms the batches. Errors arrive as one S2Error: the first
failure of a call, phrased for the user (server unreachable, request rejected).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from s2trt.errors import S2Error, missing
from s2trt.meta import ModelMeta
from s2trt.serve.detector import INPUT_FRAME, INPUT_IMAGE, to_layout

log = logging.getLogger(__name__)

DEFAULT_MODEL = "s2trt_detector"
OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")


def _grpc() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise missing("tritonclient[grpc]", "triton", "Talking to Triton Inference Server") from None
    return grpcclient


def _dets(result: Any) -> list[np.ndarray]:
    """An InferResult in the NMS layout -> per image (n, 6) [x1, y1, x2, y2, score, class]."""
    from s2trt.runtime.postprocess import from_nms_outputs

    return from_nms_outputs(*(result.as_numpy(k) for k in OUTPUTS))


class TritonClient:
    """Detections from a server running s2trt's model repository (see s2trt.serve.repository)."""

    def __init__(self, url: str, model: str = DEFAULT_MODEL, *, timeout: float = 60.0,
                 max_in_flight: int = 16, params: Mapping[str, Any] | None = None):
        grpcclient = _grpc()
        from tritonclient.utils import InferenceServerException

        self._grpc = grpcclient
        self.url, self.model, self.timeout = url, model, timeout
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self._slots = threading.BoundedSemaphore(max_in_flight)
        try:
            self.client = grpcclient.InferenceServerClient(url)
        except Exception as e:  # a malformed URL fails here already
            raise S2Error(f"cannot connect to Triton at {url}: {e}") from None
        try:
            if not self.client.is_model_ready(model, client_timeout=timeout):
                raise S2Error(f"Triton at {url} has no ready model {model!r} (is it in the repository, and "
                              "did it load? see the server log)")
            config = self.client.get_model_config(model, as_json=True, client_timeout=timeout)["config"]
        except InferenceServerException as e:
            raise self._error(e) from None
        params_cfg = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        outputs = {o["name"] for o in config.get("output", [])}
        if "s2trt_meta" not in params_cfg or not outputs >= set(OUTPUTS):
            raise S2Error(f"model {model!r} at {url} is not an s2trt detector (it needs the s2trt_meta "
                          f"parameter and the outputs {', '.join(OUTPUTS)}): serve s2trt_detector or "
                          "s2trt_ensemble from `s2serve export`")
        self.meta = ModelMeta.from_props(json.loads(params_cfg["s2trt_meta"]), f"{url}/{model}")
        log.info("Triton %s model %s: %d classes, imgsz %s", url, model, len(self.meta.names),
                 self.meta.imgsz)

    def _error(self, e: Exception) -> S2Error:
        status = str(getattr(e, "status", lambda: "")() or "")
        msg = getattr(e, "message", lambda: str(e))() or str(e)
        if "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status or "failed to connect" in msg.lower():
            return S2Error(f"Triton server at {self.url} is unreachable or stopped answering "
                           f"({msg.strip()}); check that it runs (s2serve) and the address")
        return S2Error(f"Triton server at {self.url} rejected the request: {msg.strip()}")

    def _inputs(self, item: np.ndarray | bytes) -> list[Any]:
        if isinstance(item, bytes | bytearray | memoryview):
            data = np.frombuffer(bytes(item), dtype=np.uint8)[None]
            inp = self._grpc.InferInput(INPUT_IMAGE, list(data.shape), "UINT8")
        else:
            data = np.ascontiguousarray(item)[None]
            inp = self._grpc.InferInput(INPUT_FRAME, list(data.shape), "UINT8")
            if data.dtype != np.uint8:
                raise S2Error(f"frames must be uint8 BGR images, got {data.dtype}")
        inp.set_data_from_numpy(data)
        return [inp]

    def submit(self, item: np.ndarray | bytes) -> Future[np.ndarray]:
        """Send one image (a BGR uint8 frame or encoded bytes); the future gives its (n, 6) detections.

        Blocks while `max_in_flight` requests are outstanding, which bounds memory under load.
        """
        future: Future[np.ndarray] = Future()
        inputs = self._inputs(item)
        self._slots.acquire()

        def done(result: Any, error: Exception | None) -> None:
            self._slots.release()
            if error is not None:
                future.set_exception(self._error(error))
            else:
                try:
                    future.set_result(_dets(result)[0])
                except Exception as e:  # an answer not in the NMS layout: not an s2trt model
                    future.set_exception(S2Error(f"unexpected answer from {self.url}/{self.model}: {e}"))

        try:
            self.client.async_infer(self.model, inputs, done, outputs=[
                self._grpc.InferRequestedOutput(k) for k in OUTPUTS], client_timeout=self.timeout,
                parameters=self.params or None)
        except Exception as e:
            self._slots.release()
            raise self._error(e) from None
        return future

    def detect(self, items: Sequence[np.ndarray | bytes]) -> list[np.ndarray]:
        """Detections for each image, all requests in flight together; the first failure is raised."""
        futures = [self.submit(item) for item in items]
        results, first = [], None
        for f in futures:
            try:
                results.append(f.result())
            except S2Error as e:
                first = first or e
        if first is not None:
            raise first
        return results

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TritonBackend:
    """The runtime's Backend on a Triton server: `infer` takes the letterboxed float batch the pipeline
    made and returns the NMS layout in network-input pixels, like an engine with in-graph NMS.

    The batch is turned back into exact uint8 frames (it is uint8 / 255) and sent as FRAME requests,
    a quarter of the bytes of float32; the server's letterbox of a frame already at the model's size
    is the identity, so its boxes are in network-input pixels.
    """

    def __init__(self, url: str, model: str = DEFAULT_MODEL, *, conf_thres: float | None = None,
                 iou_thres: float | None = None, agnostic: bool | None = None, max_det: int | None = None,
                 max_in_flight: int = 16, timeout: float = 60.0):
        params = {"conf_thres": conf_thres, "iou_thres": iou_thres, "agnostic": agnostic, "max_det": max_det}
        self.client = TritonClient(url, model, timeout=timeout, max_in_flight=max_in_flight, params=params)
        self.meta = self.client.meta
        self.name = f"triton {url}/{model}"

    @property
    def imgsz(self) -> tuple[int, int]:
        h, w = self.meta.imgsz
        return int(h), int(w)

    @property
    def max_batch(self) -> int:
        return 64  # any: each frame is its own request and the server batches them

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.ndim != 4 or batch.shape[1:] != (3, *self.imgsz):
            raise S2Error(f"{self.name}: input of shape {tuple(batch.shape)} does not fit the model, which "
                          f"takes (batch, 3, {self.imgsz[0]}, {self.imgsz[1]})")
        frames = np.rint(batch[:, ::-1].transpose(0, 2, 3, 1) * 255).clip(0, 255).astype(np.uint8)
        dets = self.client.detect(list(frames))
        return to_layout(dets, max([len(d) for d in dets] + [1]))

    def close(self) -> None:
        self.client.close()
