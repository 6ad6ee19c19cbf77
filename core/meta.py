"""The metadata contract between export, engine builder, runtime and serving (DESIGN §3).

An export stores it twice: as ONNX `metadata_props` (string values; lists and dicts JSON-encoded)
and in a sidecar `<name>.json` beside the file (the same keys plus reports such as parity). An
engine's sidecar `<name>.engine.json` adds the TensorRT fields.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from s2trt.errors import S2Error

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

    def preprocess_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of s2trt.runtime.preprocess.preprocess that this export implies."""
        lb = self.letterbox or {}
        return {"stride": int(self.stride), "pad_value": int(lb.get("pad_value", 114)),
                "scaleup": bool(lb.get("scaleup", True))}

    def to_props(self) -> dict[str, str]:
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMeta:
        if props.get("producer") != PRODUCER:
            raise S2Error(f"{source} was not exported by s2trt (its metadata has no "
                          "producer=s2trt): export it with s2export")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in props:
                continue
            raw = props[f.name]
            if f.name in ("producer", "flavour", "precision") or (f.name == "plugin" and raw != "null"):
                kw[f.name] = raw
            else:
                try:
                    kw[f.name] = json.loads(raw) if isinstance(raw, str) else raw
                except json.JSONDecodeError:
                    kw[f.name] = raw
        try:
            return cls(**kw)
        except TypeError as e:
            raise S2Error(f"{source}: incomplete s2trt metadata ({e})") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model") -> ModelMeta:
        return cls.from_props({k: v if isinstance(v, str) else json.dumps(v) for k, v in d.items()
                               if k in {f.name for f in fields(cls)}}, source)


def sidecar_path(path: str | Path) -> Path:
    """model.onnx -> model.json; model.engine -> model.engine.json."""
    p = Path(path)
    return p.with_suffix(".json") if p.suffix == ".onnx" else p.with_name(p.name + ".json")


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; published outputs get the permissions a plain open() would give.
FILE_MODE = 0o666 & ~_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: no half-written outputs."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise S2Error(f"cannot write to {path.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    p = sidecar_path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise S2Error(f"cannot read {p}: {e}") from None


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The s2trt metadata of an ONNX file, without loading its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise S2Error(f"{path} is not a readable ONNX file ({reason})") from None
    return ModelMeta.from_props({p.key: p.value for p in model.metadata_props}, str(path))
