"""The metadata contract between export, engine builder, runtime and serving (docs/DESIGN.md §3).

An export stores it twice: as ONNX `metadata_props` (string values; lists and dicts JSON-encoded)
and in a sidecar `<name>.json` beside the file (the same keys plus reports such as parity). An
engine's sidecar `<name>.engine.json` adds the TensorRT fields.
"""

from __future__ import annotations

import json
import os
import reprlib
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from s2trt.errors import S2Error
from s2trt.publish import FILE_MODE as FILE_MODE  # where callers of this module have found it
from s2trt.publish import write_bytes_atomic
from s2trt.text import first_line

PRODUCER = "s2trt"


@dataclass
class ModelMeta:
    names: list[str]
    imgsz: list[int]  # [h, w] of the network input
    stride: int = 32  # the largest stride; input sizes are multiples of it
    batch: int | str = 1  # a fixed batch size, or "dynamic"
    flavour: str = "portable"  # "portable" (standard ops) or "tensorrt" (S2SplitAttention node)
    precision: str = "fp32"  # "fp32" | "fp16" | "int8"
    nms: dict[str, Any] | None = None  # in-graph NMS settings, None when the graph ends in output0
    letterbox: dict[str, Any] = field(default_factory=lambda: {"pad_value": 114, "auto": False,
                                                               "scaleup": True})
    plugin: str | None = None  # op type of the plugin node, when the graph has one
    producer: str = PRODUCER
    versions: dict[str, str] = field(default_factory=dict)
    # "segment": output0 rows end in nm mask coefficients and output1 holds the prototypes
    task: str = "detect"
    nm: int = 0

    def preprocess_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of s2trt.detect.letterbox.preprocess that this export implies."""
        lb = self.letterbox or {}
        return {"stride": int(self.stride), "pad_value": int(lb.get("pad_value", 114)),
                "scaleup": bool(lb.get("scaleup", True))}

    def to_props(self) -> dict[str, str]:
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMeta:
        """Parse metadata written by s2export; forged or damaged values are one S2Error."""
        if not isinstance(props, dict):
            raise S2Error(f"{source}: its s2trt metadata is {_brief(props)}, not a set of fields")
        if props.get("producer") != PRODUCER:
            raise S2Error(f"{source} was not exported by s2trt (its metadata has no "
                          "producer=s2trt): export it with s2export")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in props:
                continue
            raw = props[f.name]
            if f.name in ("producer", "flavour", "precision", "task") \
                    or (f.name == "plugin" and raw != "null"):
                kw[f.name] = raw
            else:
                try:
                    kw[f.name] = json.loads(raw) if isinstance(raw, str) else raw
                except (ValueError, RecursionError):  # bad JSON, too many digits, too deep
                    kw[f.name] = raw
        missing = [f.name for f in fields(cls) if f.name not in kw
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise S2Error(f"{source}: incomplete s2trt metadata (no {', '.join(missing)})")
        for name, value in kw.items():
            problem = _FIELD_CHECKS[name](value)
            if problem:
                raise S2Error(f"{source}: s2trt metadata field '{name}' is {_brief(value)}: "
                              f"{problem}")
        if (kw.get("task") == "segment") != bool(kw.get("nm")):
            raise S2Error(f"{source}: s2trt metadata fields 'task' and 'nm' disagree: a segment "
                          "model has mask coefficients (nm > 0), a detect model none")
        return cls(**kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model") -> ModelMeta:
        """From a sidecar as read_sidecar returns it (a JSON object: it refuses anything else)."""
        return cls.from_props({k: v if isinstance(v, str) else json.dumps(v) for k, v in d.items()
                               if k in {f.name for f in fields(cls)}}, source)


# Bounds of what s2export writes; anything else is a damaged or forged file.
MAX_CLASSES = 100_000
MAX_NAME = 1000  # characters
MAX_IMGSZ = 16384
MAX_BATCH = 4096
MAX_DET = 100_000
MAX_NM = 1024  # mask coefficients; YOLOv5's Segment has 32
MAX_SIDECAR_BYTES = 16 << 20

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxdict, _repr.maxstring, _repr.maxother = 2, 4, 4, 40, 40


def _brief(x: Any) -> str:
    return _repr.repr(x)


def _int(x: Any, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _unit(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1


def _names(v: Any) -> str | None:
    if not (isinstance(v, list) and 1 <= len(v) <= MAX_CLASSES):
        return f"expected a list of 1..{MAX_CLASSES} class names"
    if not all(isinstance(n, str) and len(n) <= MAX_NAME for n in v):
        return f"every class name must be text of at most {MAX_NAME} characters"
    return None


def _nms(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        return "expected the in-graph NMS settings or null"
    checks = {"conf_thres": _unit, "iou_thres": _unit, "max_det": lambda x: _int(x, 1, MAX_DET),
              "topk": lambda x: _int(x, 1, MAX_DET),
              "outputs": lambda x: isinstance(x, list) and all(isinstance(o, str) for o in x)}
    bad = [k for k, ok in checks.items() if k in v and not ok(v[k])]
    return f"bad {', '.join(bad)}" if bad else None


def _letterbox(v: Any) -> str | None:
    if not isinstance(v, dict):
        return "expected the letterbox settings"
    bad = [k for k, ok in (("pad_value", lambda x: _int(x, 0, 255)),
                           ("auto", lambda x: isinstance(x, bool)),
                           ("scaleup", lambda x: isinstance(x, bool))) if k in v and not ok(v[k])]
    return f"bad {', '.join(bad)}" if bad else None


def _one_of(*values: str) -> Any:
    return lambda v: None if v in values else f"expected one of {', '.join(values)}"


_FIELD_CHECKS: dict[str, Any] = {
    "names": _names,
    "imgsz": lambda v: None if isinstance(v, list) and len(v) == 2
    and all(_int(x, 1, MAX_IMGSZ) for x in v) else f"expected [height, width] in 1..{MAX_IMGSZ}",
    "stride": lambda v: None if _int(v, 1, 256) else "expected a stride in 1..256",
    "batch": lambda v: None if v == "dynamic" or _int(v, 1, MAX_BATCH)
    else f"expected a batch size in 1..{MAX_BATCH} or \"dynamic\"",
    "flavour": _one_of("portable", "tensorrt"),
    "precision": _one_of("fp32", "fp16", "int8"),
    "nms": _nms,
    "letterbox": _letterbox,
    "plugin": lambda v: None if v is None or (isinstance(v, str) and len(v) <= 128)
    else "expected an op name or null",
    "producer": _one_of(PRODUCER),
    "task": _one_of("detect", "segment"),
    "nm": lambda v: None if _int(v, 0, MAX_NM) else f"expected a mask coefficient count in 0..{MAX_NM}",
    "versions": lambda v: None if isinstance(v, dict) and len(v) <= 64
    and all(isinstance(x, str) and len(x) <= 200 for x in (*v, *v.values()))
    else "expected package names and versions",
}


def sidecar_path(path: str | Path) -> Path:
    """model.onnx -> model.json; model.engine -> model.engine.json."""
    p = Path(path)
    return p.with_suffix(".json") if p.suffix == ".onnx" else p.with_name(p.name + ".json")


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return path


def check_writable(folder: Path) -> None:
    """Fail early, before minutes of work, when the output folder cannot take files.

    A missing folder is made at commit time (like `runs/` in YOLOv5), so a failed export leaves no
    empty folder behind; here its nearest existing parent must be a writable folder.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise S2Error(f"output folder {folder} is not a folder ({existing} is a file)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise S2Error(f"cannot write to output folder {folder}: {e.strerror or e}") from None


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar JSON object of a model file, or None when there is none."""
    p = sidecar_path(path)
    if not p.is_file():
        return None
    try:
        if p.stat().st_size > MAX_SIDECAR_BYTES:
            raise S2Error(f"{p} is {p.stat().st_size} bytes; an s2trt sidecar is a few KB")
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # bad JSON or UTF-8, nesting, digits
        reason = first_line(e, 200)
        raise S2Error(f"cannot read {p}: {reason}") from None
    if not isinstance(data, dict):
        raise S2Error(f"{p} holds a JSON {type(data).__name__}, not the object s2trt writes")
    return data


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The s2trt metadata of an ONNX file, without loading its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        reason = first_line(e, 200)
        raise S2Error(f"{path} is not a readable ONNX file ({reason})") from None
    return ModelMeta.from_props({p.key: p.value for p in model.metadata_props}, str(path))


MAX_NAMES_FILE_BYTES = 16 << 20  # a data yaml may carry a download script; COCO's is 3 KB


def read_names(spec: str | Path | list[str] | tuple[str, ...], source: str = "--names") -> list[str]:
    """Class names given by the user: a YOLOv5 data yaml (`names:` a list or {index: name}, with
    an optional `nc:` that must agree), a text file with one name per line, a comma-separated
    list, or a list of strings. Every name is non-empty text."""
    if isinstance(spec, (list, tuple)):
        return _checked_names(list(spec), source)
    text = str(spec)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if not path.is_file():
        if suffix in (".yaml", ".yml", ".txt", ".names") or os.sep in text:
            raise S2Error(f"{source}: file not found: {text}")
        return _checked_names([n.strip() for n in text.split(",")], source)
    try:
        if path.stat().st_size > MAX_NAMES_FILE_BYTES:
            raise S2Error(f"{source}: {path} is larger than {MAX_NAMES_FILE_BYTES >> 20} MB")
        content = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:
        raise S2Error(f"{source}: cannot read {path}: {e}") from None
    if suffix not in (".yaml", ".yml"):
        return _checked_names([line.strip() for line in content.splitlines() if line.strip()],
                              f"{source} {path}")
    return _names_from_data_yaml(content, f"{source} {path}")


def _names_from_data_yaml(content: str, source: str) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(content)
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        reason = first_line(e, 200)
        raise S2Error(f"{source} is not valid YAML ({reason})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise S2Error(f"{source} has no 'names:' entry (a YOLOv5 data yaml lists its classes "
                      "there)")
    names = data["names"]
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: (not isinstance(k, int), str(k)))
        if keys != list(range(len(keys))):
            raise S2Error(f"{source}: 'names' must be indexed 0..{len(keys) - 1}, found "
                          f"{_brief(keys)}")
        names = [names[k] for k in keys]
    if not isinstance(names, list):
        raise S2Error(f"{source}: 'names' is {_brief(names)}, not a list of class names")
    # A class named 7 is read as a number: it is text to YOLOv5 too. One named `no` is read as
    # False, and str() would rename it, so it is refused below with the rest.
    names = [str(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else n for n in names]
    out = _checked_names(names, source)
    nc = data.get("nc")
    if nc is not None and nc != len(out):
        raise S2Error(f"{source} says nc: {_brief(nc)} but lists {len(out)} names")
    return out


def _checked_names(names: list[Any], source: str) -> list[str]:
    if not names or len(names) > MAX_CLASSES:
        raise S2Error(f"{source}: expected 1..{MAX_CLASSES} class names, found {len(names)}")
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip() or len(n) > MAX_NAME:
            hint = " (quote it in the yaml)" if isinstance(n, bool) or n is None else ""
            raise S2Error(f"{source}: class {i} is {_brief(n)}{hint}; class names are non-empty "
                          f"text of at most {MAX_NAME} characters")
    return list(names)
