"""gRPC client of the `s2trt_detector` Triton model, and the `s2infer --triton` backend built on it.

Every image goes out as its own request, all in flight at once (up to `max_in_flight`), so the
server's dynamic batcher, not the client, forms the batches. Several servers share the requests with
failover (see s2trt.runtime.backends.triton_pool). Errors arrive as one S2Error: the first failure of
a call, phrased for the user (no server left to answer, request rejected).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from s2trt.detect.boxes import PROTO_OUTPUT, to_layout
from s2trt.detect.letterbox import LetterboxInfo
from s2trt.detect.masks import COEFFICIENTS_OUTPUT, InstanceMask, process_masks
from s2trt.errors import S2Error, missing
from s2trt.meta import ModelMeta
from s2trt.runtime.backends.triton_pool import (
    CHANNEL_ARGS,
    NoServerLeft,
    ServerPool,
    Unreachable,
    message,
    parse_urls,
    server_fault,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "s2trt_detector"
# The model's inputs (s2trt.serve.detector): encoded images, or uint8 BGR frames.
INPUT_IMAGE, INPUT_FRAME = "IMAGE", "FRAME"
OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
# What a segmentation model answers besides (docs/DESIGN.md §7), row for row with det_*: each
# detection's mask coefficients (K, nm) and its box in the letterboxed network input (K, 4); the
# image's prototypes (nm, h, w) and letterbox (ratio, pad w, pad h, frame h, frame w). From these
# detect/masks.py's process_masks rebuilds the masks s2infer makes locally, number for number.
INPUT_BOXES, PROTOTYPES, LETTERBOX = "det_input_boxes", "prototypes", "letterbox"
MASK_OUTPUTS = (COEFFICIENTS_OUTPUT, INPUT_BOXES, PROTOTYPES, LETTERBOX)


def geometry(infos: Sequence[LetterboxInfo]) -> np.ndarray:
    """(n, 5) float32 (ratio, pad w, pad h, frame h, frame w): the `letterbox` of each image."""
    return np.array([[i.ratio, *i.pad, *i.orig_shape] for i in infos], dtype=np.float32).reshape(-1, 5)


def letterboxes(rows: np.ndarray) -> list[LetterboxInfo]:
    """`geometry` read back."""
    return [LetterboxInfo(float(r), (float(dw), float(dh)), (round(h), round(w))) for r, dw, dh, h, w in rows]


def padded(parts: Sequence[np.ndarray], k: int, width: int) -> np.ndarray:
    """Per-image (n, width) rows -> (B, k, width) float32, zero past each image's n rows and cut to k:
    row for row with the NMS layout's det_* (detect/boxes.py's to_layout), e.g. `det_coefficients`."""
    out = np.zeros((len(parts), k, width), dtype=np.float32)
    for i, rows in enumerate(parts):
        n = min(len(rows), k)
        out[i, :n] = rows[:n]
    return out


@dataclass(frozen=True)
class Answer:
    """One image's answer: (n, 6) detections in its pixels and, from a segmentation model, what their
    masks are made from: `rows` (n, 6 + nm) [input box, score, class, coefficients] in the letterboxed
    network input, the image's `prototypes` (nm, h, w) and its `letterbox`."""

    dets: np.ndarray
    rows: np.ndarray | None = None
    prototypes: np.ndarray | None = None
    letterbox: LetterboxInfo | None = None

    def masks(self, input_hw: tuple[int, int]) -> list[InstanceMask] | None:
        """The detections' masks in the image, as s2infer makes them (None for a detection model)."""
        if self.rows is None or self.prototypes is None or self.letterbox is None:
            return None
        return process_masks(self.prototypes, self.rows, input_hw, self.letterbox)


def _answer(result: Any, masks: bool) -> Answer:
    """An InferResult of one image -> its Answer."""
    dets = _dets(result)[0]
    if not masks:
        return Answer(dets)
    n = len(dets)
    rows = np.concatenate([result.as_numpy(INPUT_BOXES)[0, :n], dets[:, 4:6],
                           result.as_numpy(COEFFICIENTS_OUTPUT)[0, :n]], axis=1).astype(np.float32)
    return Answer(dets, rows, result.as_numpy(PROTOTYPES)[0], letterboxes(result.as_numpy(LETTERBOX))[0])


def _grpc() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise missing("tritonclient[grpc]", "triton", "Talking to Triton Inference Server") from None
    return grpcclient


def _dets(result: Any) -> list[np.ndarray]:
    """An InferResult in the NMS layout -> per image (n, 6) [x1, y1, x2, y2, score, class]."""
    from s2trt.detect.boxes import from_nms_outputs

    return from_nms_outputs(*(result.as_numpy(k) for k in OUTPUTS))


def _meta_json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except ValueError as e:
        raise S2Error(f"{where}: the model's s2trt_meta parameter is not JSON ({e}): serve a model "
                      "repository written by `s2serve export`") from None


class TritonClient:
    """Detections from one or several servers running s2trt's model repository (s2trt.serve.repository).

    `urls` is "host:port", "host1:port,host2:port,..." or a list; with several, requests are spread
    over them with failover (s2trt.runtime.backends.triton_pool). All servers must serve the same model.
    """

    def __init__(self, urls: str | Sequence[str], model: str = DEFAULT_MODEL, *, timeout: float = 60.0,
                 max_in_flight: int = 16, params: Mapping[str, Any] | None = None,
                 probe_backoff: tuple[float, float] = (0.5, 30.0)):
        self._grpc = _grpc()
        self.urls = parse_urls(urls)
        self.url = ",".join(self.urls)
        self.model, self.timeout = model, timeout
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self._meta_props: str | None = None
        self._serves_masks: bool | None = None  # whether the model answers MASK_OUTPUTS
        self._meta_lock = threading.Lock()
        # Start-up checks in parallel, so an unreachable server costs one timeout, not one each.
        with ThreadPoolExecutor(len(self.urls)) as ex:
            found = dict(zip(self.urls, ex.map(self._try_connect, self.urls), strict=True))
        try:
            fatal = [e for e in found.values() if isinstance(e, S2Error) and not isinstance(e, Unreachable)]
            if fatal:
                raise fatal[0]
            if all(isinstance(c, Exception) for c in found.values()):
                raise self._unreachable([(u, str(e)) for u, e in found.items()])
            assert self._meta_props is not None
            self.meta = ModelMeta.from_props(_meta_json(self._meta_props, f"{self.url}/{model}"),
                                             f"{self.url}/{model}")
            self.masks = bool(self._serves_masks) and self.meta.task == "segment"
            if self.meta.task == "segment" and not self.masks:
                log.warning("%s/%s serves a segmentation model without its masks (a model repository "
                            "written before s2trt served them): boxes only; `s2serve export` it again",
                            self.url, model)
        except BaseException:
            for c in found.values():
                if not isinstance(c, Exception):
                    c.close()
            raise
        for u, c in found.items():
            if isinstance(c, Exception):
                log.warning("Triton server %s is not answering (%s): starting without it, it joins when "
                            "it answers", u, c)
        self.pool = ServerPool(self.urls, self._rejoin, self._unreachable, max_in_flight=max_in_flight,
                               probe_backoff=probe_backoff)
        self.pool.start(found)
        log.info("Triton %s model %s: %d classes, imgsz %s", self.url, model, len(self.meta.names),
                 self.meta.imgsz)

    def _try_connect(self, url: str) -> Any:
        try:
            return self._connect(url, min(self.timeout, 10.0))
        except S2Error as e:
            return e

    def _connect(self, url: str, timeout: float | None = None) -> Any:
        """A client of a server that serves an s2trt detector as `model`, the same as the others."""
        from tritonclient.utils import InferenceServerException

        timeout = timeout or min(self.timeout, 10.0)
        try:
            client = self._grpc.InferenceServerClient(url, channel_args=CHANNEL_ARGS)
        except Exception as e:  # a malformed URL fails here already
            raise S2Error(f"cannot connect to Triton at {url}: {e}") from None
        try:
            if not client.is_model_ready(self.model, client_timeout=timeout):
                raise S2Error(f"Triton at {url} has no ready model {self.model!r} (is it in the repository, "
                              "and did it load? see the server log)")
            config = client.get_model_config(self.model, as_json=True, client_timeout=timeout)["config"]
            params_cfg = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
            outputs = {o["name"] for o in config.get("output", [])}
            if "s2trt_meta" not in params_cfg or not outputs >= set(OUTPUTS):
                raise S2Error(f"model {self.model!r} at {url} is not an s2trt detector (it needs the "
                              f"s2trt_meta parameter and the outputs {', '.join(OUTPUTS)}): serve "
                              "s2trt_detector or s2trt_ensemble from `s2serve export`")
            with self._meta_lock:
                if self._meta_props is None:
                    self._meta_props = params_cfg["s2trt_meta"]
                    self._serves_masks = outputs >= set(MASK_OUTPUTS)
                elif (_meta_json(params_cfg["s2trt_meta"], f"{url}/{self.model}")
                      != _meta_json(self._meta_props, f"{url}/{self.model}")
                      or self._serves_masks != (outputs >= set(MASK_OUTPUTS))):
                    raise S2Error(f"Triton at {url} serves a different {self.model!r} than the other "
                                  "server(s) (its s2trt_meta or outputs differ): give servers of one model "
                                  "only")
        except InferenceServerException as e:
            client.close()
            if server_fault(e):
                raise Unreachable(message(e)) from None
            raise S2Error(f"Triton server at {url} rejected the request: {message(e)}") from None
        except S2Error:
            client.close()
            raise
        return client

    def _rejoin(self, url: str) -> Any:
        """A server taken out comes back only when it can run the model: Triton says the model is
        ready even when its model process died, so one small image is inferred first."""
        import cv2
        from tritonclient.utils import InferenceServerException

        client = self._connect(url)
        try:
            inp = self._inputs(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())[0]
            client.infer(self.model, [inp], client_timeout=min(self.timeout, 10.0))
        except InferenceServerException as e:
            client.close()
            if server_fault(e):
                raise Unreachable(message(e)) from None
            raise S2Error(f"Triton server at {url} rejected the request: {message(e)}") from None
        return client

    def _unreachable(self, errors: list[tuple[str, str]]) -> S2Error:
        if len(errors) == 1:
            url, msg = errors[0]
            return NoServerLeft(f"Triton server at {url} is unreachable or stopped answering ({msg}); "
                                "check that it runs (s2serve) and the address")
        return NoServerLeft(f"all {len(errors)} Triton servers are unreachable or stopped answering ("
                            + "; ".join(f"{u}: {m}" for u, m in errors)
                            + "); check that they run (s2serve) and the addresses")

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

    def _send(self, item: np.ndarray | bytes, names: Sequence[str], convert: Any) -> Future[Any]:
        inputs = self._inputs(item)
        outputs = [self._grpc.InferRequestedOutput(k) for k in names]

        def send(client: Any, callback: Any) -> Any:
            return client.async_infer(self.model, inputs, callback, outputs=outputs,
                                      client_timeout=self.timeout, parameters=self.params or None)

        def checked(result: Any) -> Any:
            try:
                return convert(result)
            except Exception as e:  # an answer not in the NMS layout: not an s2trt model
                raise S2Error(f"unexpected answer from {self.url}/{self.model}: {e}") from None

        return self.pool.submit(send, checked)

    def submit(self, item: np.ndarray | bytes) -> Future[np.ndarray]:
        """Send one image (a BGR uint8 frame or encoded bytes); the future gives its (n, 6) detections.

        Blocks while `max_in_flight` requests are outstanding, which bounds memory under load.
        """
        return self._send(item, OUTPUTS, lambda result: _dets(result)[0])

    def submit_answer(self, item: np.ndarray | bytes) -> Future[Answer]:
        """Like `submit`, with what a segmentation model's masks are made from (`Answer.masks`)."""
        return self._send(item, OUTPUTS + MASK_OUTPUTS if self.masks else OUTPUTS,
                          lambda result: _answer(result, self.masks))

    def detect(self, items: Sequence[np.ndarray | bytes]) -> list[np.ndarray]:
        """Detections for each image, all requests in flight together; the first failure is raised."""
        return self._gather([self.submit(item) for item in items])

    def answers(self, items: Sequence[np.ndarray | bytes]) -> list[Answer]:
        """`detect` with the masks' data of a segmentation model."""
        return self._gather([self.submit_answer(item) for item in items])

    def _gather(self, futures: list[Future[Any]]) -> list[Any]:
        results, first = [], None
        for f in futures:
            try:
                results.append(f.result())
            except Exception as e:
                first = first or self._as_error(e)
        if first is not None:
            raise first
        return results

    def _as_error(self, e: Exception) -> S2Error:
        if isinstance(e, S2Error):
            return e
        return S2Error(f"Triton server at {self.url} rejected the request: {message(e)}")

    def table(self) -> str:
        """Per server: requests answered, latency p50/p99, times taken out, requests re-sent, rejoins."""
        return self.pool.table()

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TritonBackend:
    """The runtime's Backend on a Triton server: `infer` takes the letterboxed float batch the pipeline
    made and returns the NMS layout in network-input pixels, like an engine with in-graph NMS; for a
    segmentation model with each row's mask coefficients (`det_coefficients`) and the prototypes
    (`output1`), which detect/masks.py turns into the same masks as a local model's.

    The batch is turned back into exact uint8 frames (it is uint8 / 255) and sent as FRAME requests,
    a quarter of the bytes of float32; the server's letterbox of a frame already at the model's size
    is the identity, so its boxes are in network-input pixels (for masks, the unclipped input boxes).
    """

    def __init__(self, url: str | Sequence[str], model: str = DEFAULT_MODEL, *,
                 conf_thres: float | None = None, iou_thres: float | None = None,
                 agnostic: bool | None = None, max_det: int | None = None, max_in_flight: int = 16,
                 timeout: float = 60.0):
        params = {"conf_thres": conf_thres, "iou_thres": iou_thres, "agnostic": agnostic, "max_det": max_det}
        self.client = TritonClient(url, model, timeout=timeout, max_in_flight=max_in_flight, params=params)
        self.meta = self.client.meta
        self.name = f"triton {self.client.url}/{model}"

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
        answers = self.client.answers(list(frames))
        k = max([len(a.dets) for a in answers] + [1])
        if not self.client.masks:
            return to_layout([a.dets for a in answers], k)
        rows = [a.rows for a in answers]
        return {**to_layout(rows, k), COEFFICIENTS_OUTPUT: padded([r[:, 6:] for r in rows], k, self.meta.nm),
                PROTO_OUTPUT: np.stack([a.prototypes for a in answers])}

    def close(self) -> None:
        """Ends the run: the per-server table goes to the log after the run's own summary."""
        self.client.close()
        if self.client.pool.submitted:  # a run that sent nothing has no table to show
            log.info("%s", self.client.table())
