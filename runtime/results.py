"""One frame's detections as the pipeline hands them to Python code: `s2trt.Detector`'s results.

A Result holds the frame it came from, its detections in the frame's pixels, how the frame was
letterboxed and the time it spent in each stage. `to_json()` is the line s2infer's `--save-json`
writes for the frame (the sinks' own `record`, serialised as the sink does; tests/api/test_api.py
compares them byte for byte), `plot()` the frame s2infer's `--save` draws (the sinks' `annotate`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from s2trt.detect.letterbox import LetterboxInfo
from s2trt.detect.masks import InstanceMask, full_masks
from s2trt.runtime.inputs.sources import Frame
from s2trt.runtime.outputs.sinks import annotate, class_name, record


@dataclass(frozen=True, eq=False)
class Result:
    """Detections of one image or frame. Immutable once made, so it may be read from any thread.

    - `boxes` (n, 4) float32 x1 y1 x2 y2 in the original frame's pixels, `scores` (n,) float32,
      `class_ids` (n,) int64 and `names` (n class names), best score first;
    - `masks`: instance masks (n, h, w) bool over the whole frame for segmentation models (made on
      first use from `instance_masks`, each mask's window as s2infer keeps it); None for detection
      models;
    - `letterbox`: how the frame was fitted into the network input (ratio, padding, original size);
    - `timing`: milliseconds this frame spent in each stage: `decode` (reading it), `preprocess`
      (letterbox), `infer`, `postprocess` (NMS, boxes back to the frame); a batch's time is shared
      by its frames;
    - `image` (the BGR frame), `source`, `index` (frame number in its source), `kind` ("image",
      "video", "camera", "stream"), `pts` (seconds into its video or stream, or None).
    """

    frame: Frame
    detections: np.ndarray  # (n, 6) [x1, y1, x2, y2, score, class]
    class_names: Sequence[str]  # the model's, by class id
    letterbox: LetterboxInfo
    timing: Mapping[str, float] = field(default_factory=dict)
    instance_masks: Sequence[InstanceMask] | None = None

    @cached_property
    def masks(self) -> np.ndarray | None:
        if self.instance_masks is None:
            return None
        return full_masks(self.instance_masks, self.frame.image.shape[:2])

    @property
    def boxes(self) -> np.ndarray:
        return self.detections[:, :4]

    @property
    def scores(self) -> np.ndarray:
        return self.detections[:, 4]

    @property
    def class_ids(self) -> np.ndarray:
        return self.detections[:, 5].astype(np.int64)

    @property
    def names(self) -> list[str]:
        return [class_name(self.class_names, int(c)) for c in self.detections[:, 5]]

    @property
    def image(self) -> np.ndarray:
        return self.frame.image

    @property
    def source(self) -> str:
        return self.frame.source

    @property
    def index(self) -> int:
        return self.frame.index

    @property
    def kind(self) -> str:
        return self.frame.kind

    @property
    def pts(self) -> float | None:
        return self.frame.pts

    def __len__(self) -> int:
        return len(self.detections)

    def plot(self, line_width: int | None = None, labels: bool = True, conf: bool = True) -> np.ndarray:
        """A copy of the frame with the boxes (and masks) drawn as s2infer --save draws them (BGR uint8)."""
        return annotate(self.frame.image, self.detections, self.class_names, line_width, labels, conf,
                        masks=self.instance_masks)

    def to_json(self) -> str:
        """The JSON Lines record s2infer --save-json writes for this frame (without the newline)."""
        return json_line(self.frame, self.detections, self.class_names, self.instance_masks)

    def __repr__(self) -> str:
        h, w = self.frame.image.shape[:2]
        return (f"Result({self.frame.source!r}, frame {self.frame.index}, {w}x{h}, "
                f"{len(self.detections)} detections)")


def json_line(frame: Frame, dets: np.ndarray, names: Sequence[str],
              masks: Sequence[InstanceMask] | None = None) -> str:
    """A frame's JSON Lines record as s2infer's JsonlSink writes it, without the newline."""
    return json.dumps(record(frame, dets, names, masks), separators=(",", ":"))
