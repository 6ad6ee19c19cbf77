"""Which detections to keep: the one options type of s2infer, the Python API, the Triton model and
s2export's in-graph NMS, checked here and nowhere else.

The messages name the command-line options (`--conf-thres`, ...) because the CLIs and the Python API
show the same one-line errors; the keyword arguments of `s2trt.Detector` carry the same names with
underscores.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from s2trt.errors import S2Error


@dataclass(frozen=True)
class DetectOptions:
    """Confidence and IoU thresholds, class filter, class-agnostic NMS and detections per image.

    Frozen and validated on construction, so one instance may be shared by any number of threads;
    `replace` returns a changed, validated copy."""

    conf_thres: float = 0.25
    iou_thres: float = 0.45
    classes: tuple[int, ...] | None = None  # keep only these class ids; None keeps all
    agnostic: bool = False  # NMS across classes
    max_det: int = 300

    def __post_init__(self) -> None:
        conf, iou = _number(self.conf_thres), _number(self.iou_thres)
        # NaN fails every comparison, so the range check refuses it too.
        if not (conf is not None and iou is not None and 0 <= conf <= 1 and 0 <= iou <= 1):
            raise S2Error(f"--conf-thres {self.conf_thres} and --iou-thres {self.iou_thres} must be "
                          "within 0..1")
        max_det = _integer(self.max_det)
        if max_det is None or max_det < 1:
            raise S2Error(f"--max-det {self.max_det} must be an integer, 1 or more")
        # Frozen: the checked, normalised values are set once, here.
        set_ = object.__setattr__
        set_(self, "conf_thres", conf)
        set_(self, "iou_thres", iou)
        set_(self, "max_det", max_det)
        set_(self, "agnostic", bool(self.agnostic))
        if self.classes is not None:
            set_(self, "classes", _class_ids(self.classes))

    def replace(self, **changes: Any) -> DetectOptions:
        return dataclasses.replace(self, **changes)

    def check_classes(self, names: Sequence[str]) -> None:
        """Every id of `classes` must be one of the model's classes (a model without names: any)."""
        if self.classes and names and max(self.classes) >= len(names):
            raise S2Error(f"--classes {max(self.classes)}: the model has {len(names)} classes "
                          f"(0..{len(names) - 1})")


def _number(value: Any) -> float | None:
    """value as a float when it is a real number (not a bool or a string), else None."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(value: Any) -> int | None:
    """value as an int when it is one (Python's or NumPy's; not a bool or a float), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _class_ids(classes: Iterable[Any]) -> tuple[int, ...]:
    if isinstance(classes, (str, bytes)):
        raise S2Error(f"--classes {classes!r}: give class ids (integers), not a name")
    ids = []
    for c in classes:
        i = _integer(c)
        if i is None or i < 0:
            raise S2Error(f"--classes {c!r}: class ids are integers, 0 or more")
        ids.append(i)
    return tuple(ids)
