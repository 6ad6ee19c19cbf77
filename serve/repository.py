"""Write a Triton model repository for an s2trt model (docs/DESIGN.md §7).

Always: `s2trt_detector`, a Python-backend model running s2trt's own runtime (ONNX Runtime for a
.onnx, TensorRT for an .engine) with the shared letterbox and NMS. Inputs: `IMAGE` (an encoded image
file as a uint8 vector) or `FRAME` (uint8 BGR frames, (h, w, 3)); outputs: docs/DESIGN.md §3's NMS layout in
frame pixels, and for a segmentation model what its masks are made from (docs/DESIGN.md §7).

With `ensemble=True` also: `s2trt_preprocess` -> `s2trt_engine` -> `s2trt_postprocess` wrapped in the
`s2trt_ensemble` model. For an engine the middle step is Triton's own TensorRT backend
(`tensorrt_plan`), which needs the plugin library loaded into the server (see `plugin_hint`); for a
.onnx it is a Python-backend step on ONNX Runtime, so the ensemble runs on any Triton.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import site
from dataclasses import dataclass, field, replace
from pathlib import Path

from s2trt.detect.boxes import PROTO_OUTPUT, RAW_OUTPUT
from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS
from s2trt.detect.masks import COEFFICIENTS_OUTPUT
from s2trt.errors import S2Error
from s2trt.meta import (
    ModelMeta,
    check_writable,
    read_onnx_meta,
    read_sidecar,
    sidecar_path,
)
from s2trt.publish import write_bytes_atomic
from s2trt.runtime.backends.triton import INPUT_BOXES, LETTERBOX, OUTPUTS, PROTOTYPES
from s2trt.text import first_line

log = logging.getLogger(__name__)

DETECTOR = "s2trt_detector"
PREPROCESS, ENGINE, POSTPROCESS, ENSEMBLE = ("s2trt_preprocess", "s2trt_engine", "s2trt_postprocess",
                                             "s2trt_ensemble")
PLUGIN_LIB_NAME = "libs2trt_plugins.so"
_HERE = Path(__file__).resolve().parent


@dataclass
class RepoOptions:
    max_batch_size: int = 8  # per scheduler batch; clients may send fewer images per request
    instances: int | None = None  # model instances per device; None: from the cores (see cpu_layout)
    kind: str | None = None  # "cpu" or "gpu"; None: gpu for an engine, cpu for an ONNX model
    gpus: list[int] = field(default_factory=list)  # GPU ids for kind "gpu"; empty: all of them
    queue_delay_us: int = 2000  # how long the dynamic batcher waits to fill a batch
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300
    agnostic: bool = False
    cpu_threads: int | None = None  # ONNX Runtime threads per instance; 0: its own default (every
    # core); None: from the cores (see cpu_layout)
    python_path: list[str] | None = None  # site folders the Python stub adds; None: this environment's
    plugin_lib: str | None = None  # libs2trt_plugins.so for an engine that needs it
    ensemble: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS  # an encoded image declaring more is refused before decoding

    def check(self) -> None:
        if self.kind not in (None, "cpu", "gpu"):
            raise S2Error(f"instance kind must be 'cpu' or 'gpu', not {self.kind!r}")
        if (self.max_batch_size < 1 or (self.instances is not None and self.instances < 1)
                or (self.cpu_threads is not None and self.cpu_threads < 0)
                or self.max_det < 1 or self.queue_delay_us < 0):
            raise S2Error("max batch size, instances and max_det must be >= 1, the queue delay and CPU "
                          "threads >= 0")
        if self.max_pixels < 1:
            raise S2Error("max_pixels must be >= 1")
        if not (0 <= self.conf_thres <= 1 and 0 <= self.iou_thres <= 1):
            raise S2Error("conf and iou thresholds must be within 0..1")


MAX_CPU_INSTANCES = 8  # each is a Python process with its own copy of the model and runtime


def usable_cores() -> int:
    """The cores this process may run on (its affinity: taskset, a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_layout(cores: int, instances: int | None = None) -> tuple[int, int]:
    """(instances, ONNX Runtime threads each) for CPU instances on `cores` cores, sharing out the
    cores among `instances` when it is given.

    One instance using every core leaves nothing for a second server on the machine to gain (26 vs 26
    req/s at 320, issue 28), and ONNX Runtime's threads help little on one small image at a time: the
    server's dynamic batcher keeps several single-threaded instances busier (1.55x with one thread
    each). Past MAX_CPU_INSTANCES the cores are shared out as threads instead, to bound the memory."""
    instances = instances or max(1, min(cores, MAX_CPU_INSTANCES))
    return instances, max(1, cores // instances)


def with_core_defaults(o: RepoOptions) -> RepoOptions:
    """`o` with instances and threads chosen from this machine's cores where not given (CPU
    instances; a GPU instance gets 1 per GPU, its threads left to ONNX Runtime), said in the log."""
    if o.instances is not None and o.cpu_threads is not None:
        return o
    if o.kind == "gpu":
        return replace(o, instances=o.instances or 1, cpu_threads=o.cpu_threads or 0)
    cores = usable_cores()
    instances, threads = cpu_layout(cores, o.instances)
    o = replace(o, instances=instances, cpu_threads=threads if o.cpu_threads is None else o.cpu_threads)
    log.info("CPU instances: %d x %s ONNX Runtime thread(s), from the %d cores here (--instances and "
             "--cpu-threads choose others, e.g. for a server with other cores)", o.instances,
             o.cpu_threads or "default", cores)
    return o


def model_meta(model: Path) -> ModelMeta:
    if not model.is_file():
        raise S2Error(f"model not found: {model}")
    if model.suffix == ".onnx":
        return read_onnx_meta(model)
    if model.suffix in (".engine", ".plan"):
        sidecar = read_sidecar(model)
        if sidecar is None:
            raise S2Error(f"{model} has no sidecar {sidecar_path(model).name}, which holds its class names "
                          "and image size: keep the files s2export wrote together")
        return ModelMeta.from_dict(sidecar, str(model))
    raise S2Error(f"{model}: serve a .onnx or a TensorRT .engine written by s2export")


def _q(s: str) -> str:
    # A protobuf text-format string literal: JSON's escapes of quotes and backslashes are the same.
    return json.dumps(s, ensure_ascii=False)


def _params(values: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: {_q(k)} value: {{ string_value: {_q(v)} }} }}\n'
                   for k, v in values.items())


def _tensor(name: str, dtype: str, dims: list[int], optional: bool = False, ragged: bool = False) -> str:
    opt = (" optional: true" if optional else "") + (" allow_ragged_batch: true" if ragged else "")
    return f'  {{ name: {_q(name)} data_type: {dtype} dims: [ {", ".join(map(str, dims))} ]{opt} }}'


def image_input(optional: bool) -> str:
    """Encoded images as uint8 vectors (not BYTES: see pb_io); ragged, so files of different sizes
    still share a scheduler batch."""
    return _tensor("IMAGE", "TYPE_UINT8", [-1], optional=optional, ragged=True)


def _io(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _instances(o: RepoOptions) -> str:
    if o.kind == "gpu":
        gpus = f" gpus: [ {', '.join(map(str, o.gpus))} ]" if o.gpus else ""
        return f"instance_group [ {{ count: {o.instances} kind: KIND_GPU{gpus} }} ]\n"
    return f"instance_group [ {{ count: {o.instances} kind: KIND_CPU }} ]\n"


def _batching(o: RepoOptions) -> str:
    return f"dynamic_batching {{ max_queue_delay_microseconds: {o.queue_delay_us} }}\n"


def nms_outputs(k: int) -> list[str]:
    return [_tensor("num_dets", "TYPE_INT32", [1]), _tensor("det_boxes", "TYPE_FP32", [k, 4]),
            _tensor("det_scores", "TYPE_FP32", [k]), _tensor("det_classes", "TYPE_INT32", [k])]


@dataclass(frozen=True)
class NetworkOutputs:
    """The network's own outputs past the batch: output0 (rows, 5 + nc + nm), and a segmentation
    model's prototypes output1 (nm, h, w); -1 for a dim the graph does not size."""

    raw: list[int]
    proto: list[int] | None

    def per_detection(self, k: int) -> list[str]:
        """The NMS layout padded to k rows, and a segmentation model's rows beside it."""
        rows = nms_outputs(k)
        if self.proto:
            rows += [_tensor(COEFFICIENTS_OUTPUT, "TYPE_FP32", [k, self.proto[0]]),
                     _tensor(INPUT_BOXES, "TYPE_FP32", [k, 4])]
        return rows

    def per_image(self) -> list[str]:
        """A segmentation model's prototypes and letterbox (s2trt.runtime.backends.triton)."""
        return [_tensor(PROTOTYPES, "TYPE_FP32", self.proto), _tensor(LETTERBOX, "TYPE_FP32", [5])] \
            if self.proto else []


def _graph_outputs(onnx_path: Path) -> dict[str, list[int]]:
    """Each graph output's dims past the batch, -1 where the graph names a dim instead of sizing it."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:
        raise S2Error(f"{onnx_path} is not a readable ONNX file ({first_line(e, 200)})") from None
    return {o.name: [d.dim_value if d.HasField("dim_value") else -1 for d in o.type.tensor_type.shape.dim][1:]
            for o in model.graph.output}


def _built_from(engine: Path, meta: ModelMeta) -> Path | None:
    """The ONNX an engine was built from (its sidecar's onnx_file, as given or beside the engine),
    when it is still there and is the same model."""
    name = (read_sidecar(engine) or {}).get("onnx_file")
    if not isinstance(name, str) or not name:
        return None
    for candidate in (Path(name), engine.parent / Path(name).name):
        try:
            if not candidate.is_file():
                continue
            m = read_onnx_meta(candidate)
        except (S2Error, OSError, ImportError):
            continue
        if (m.names, m.imgsz, m.nm, m.nms) == (meta.names, meta.imgsz, meta.nm, meta.nms):
            return candidate
    return None


def network_outputs(model: Path, meta: ModelMeta) -> NetworkOutputs:
    """output0's rows are the anchors of every grid (three per cell on strides 8-32 for most YOLOv5s,
    8-64 for P6, 4-32 for P2, other counts in a user's yaml), and the prototypes are at half the stride
    of the head's first level (Proto upsamples that level x2: H/4 for most, H/2 for a P2 head). The
    metadata says neither (it records the largest stride only); the graph's static output shapes do (a
    dim it only names stays -1). An engine's are read from the ONNX it was built from; without that,
    the rows and the prototypes' height and width are left to the engine (-1: Triton's TensorRT
    backend sizes outputs from the engine and compares a -1 config dim with anything,
    tensorrt_backend's InitializeConfigExecuteOutputBindings)."""
    nc, nm = len(meta.names), meta.nm
    raw, proto = [-1, 5 + nc + nm], [nm, -1, -1] if nm else None
    if meta.nms:  # the graph ends in the NMS layout, whose shapes the metadata gives
        return NetworkOutputs(raw, None)
    graph = model if model.suffix == ".onnx" else _built_from(model, meta)
    if graph is None:
        return NetworkOutputs(raw, proto)
    dims = _graph_outputs(graph)
    got_raw = _agreeing(dims.get(RAW_OUTPUT), raw)
    if got_raw is None:
        raise S2Error(f"{graph}: output0 is {dims.get(RAW_OUTPUT)} past the batch, not (rows, 5 + {nc} "
                      f"classes + {nm} mask coefficients) as its metadata says: re-export it with s2export")
    got_proto = _agreeing(dims.get(PROTO_OUTPUT), proto) if proto else None
    if proto and got_proto is None:
        raise S2Error(f"{graph}: a segmentation model's output1 is {dims.get(PROTO_OUTPUT)} past the batch, "
                      f"not ({nm}, h, w): re-export it with s2export")
    return NetworkOutputs(got_raw, got_proto)


def _agreeing(got: list[int] | None, want: list[int]) -> list[int] | None:
    """The graph's dims where it sizes them, the expected ones where it only names them; None when
    they disagree (a different rank, or a size other than the metadata's)."""
    if got is None or len(got) != len(want):
        return None
    if any(g != -1 and w != -1 and g != w for g, w in zip(got, want, strict=True)):
        return None
    return [w if g == -1 else g for g, w in zip(got, want, strict=True)]


def engine_outputs(meta: ModelMeta, net: NetworkOutputs) -> list[str]:
    if meta.nms:
        return nms_outputs(int(meta.nms.get("max_det", 300)))
    return [_tensor(RAW_OUTPUT, "TYPE_FP32", net.raw)] + ([_tensor(PROTO_OUTPUT, "TYPE_FP32", net.proto)]
                                                          if net.proto else [])


def python_model_params(o: RepoOptions, meta: ModelMeta, model_file: str | None) -> dict[str, str]:
    paths = o.python_path if o.python_path is not None else site.getsitepackages()
    params = {"python_path": ":".join(paths), "s2trt_meta": json.dumps(meta.to_props()),
              "conf_thres": str(o.conf_thres), "iou_thres": str(o.iou_thres), "max_det": str(o.max_det),
              "agnostic": "true" if o.agnostic else "false", "cpu_threads": str(o.cpu_threads),
              "max_pixels": str(o.max_pixels)}
    if model_file is not None:
        params["model_file"] = model_file
    if o.plugin_lib:
        params["plugin_lib"] = o.plugin_lib
    return params


def detector_config(o: RepoOptions, meta: ModelMeta, model_file: str, net: NetworkOutputs) -> str:
    return (f'name: "{DETECTOR}"\nbackend: "python"\nmax_batch_size: {o.max_batch_size}\n'
            + _io("input", [image_input(optional=True),
                            _tensor("FRAME", "TYPE_UINT8", [-1, -1, 3], optional=True)])
            + _io("output", net.per_detection(o.max_det) + net.per_image()) + _batching(o)
            + _instances(o)
            + _params(python_model_params(o, meta, model_file)))


def _stage_config(name: str, o: RepoOptions, meta: ModelMeta, stage: str, inputs: list[str],
                  outputs: list[str], model_file: str | None = None) -> str:
    params = python_model_params(o, meta, model_file)
    params["stage"] = stage
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {o.max_batch_size}\n'
            + _io("input", inputs) + _io("output", outputs) + _batching(o) + _instances(o)
            + _params(params))


def _images_tensor(meta: ModelMeta) -> str:
    h, w = (int(v) for v in meta.imgsz)
    return _tensor("images", "TYPE_FP32", [3, h, w])


def ensemble_configs(o: RepoOptions, meta: ModelMeta, engine_file: str, tensorrt: bool,
                     net: NetworkOutputs) -> dict[str, str]:
    """config.pbtxt text per model name for preprocess -> engine -> postprocess and the ensemble.

    A segmentation model's prototypes and letterbox are ensemble outputs straight from the step that
    makes them (the engine, preprocess), which postprocess reads as well: no step passes them on."""
    lb = _tensor(LETTERBOX, "TYPE_FP32", [5])
    net_out = engine_outputs(meta, net)
    net_names = list(OUTPUTS) if meta.nms else [RAW_OUTPUT] + ([PROTO_OUTPUT] if net.proto else [])
    per_detection = net.per_detection(o.max_det)
    configs = {
        PREPROCESS: _stage_config(PREPROCESS, o, meta, "preprocess", [image_input(optional=False)],
                                  [_images_tensor(meta), lb]),
        POSTPROCESS: _stage_config(POSTPROCESS, o, meta, "postprocess", [*net_out, lb], per_detection),
    }
    if tensorrt:
        configs[ENGINE] = (f'name: "{ENGINE}"\nplatform: "tensorrt_plan"\n'
                           f"max_batch_size: {o.max_batch_size}\n" + _io("input", [_images_tensor(meta)])
                           + _io("output", net_out) + _batching(o) + _instances(o))
    else:
        configs[ENGINE] = _stage_config(ENGINE, o, meta, "network", [_images_tensor(meta)], net_out,
                                        engine_file)

    def step(model: str, maps_in: dict[str, str], maps_out: dict[str, str]) -> str:
        ins = "".join(f"    input_map {{ key: {_q(k)} value: {_q(v)} }}\n" for k, v in maps_in.items())
        outs = "".join(f"    output_map {{ key: {_q(k)} value: {_q(v)} }}\n" for k, v in maps_out.items())
        return f"  step [ {{\n    model_name: {_q(model)}\n    model_version: -1\n{ins}{outs}  }} ]\n"

    # Ensemble tensor names: the outputs by their own names, the rest with a leading underscore.
    tensor = {n: f"_{n}" for n in net_names} | {LETTERBOX: "_letterbox"}
    if net.proto:
        tensor |= {PROTO_OUTPUT: PROTOTYPES, LETTERBOX: LETTERBOX}
    final = [*OUTPUTS, *([COEFFICIENTS_OUTPUT, INPUT_BOXES] if net.proto else [])]
    configs[ENSEMBLE] = (
        f'name: "{ENSEMBLE}"\nplatform: "ensemble"\nmax_batch_size: {o.max_batch_size}\n'
        + _io("input", [image_input(optional=False)])
        + _io("output", per_detection + net.per_image())
        + "ensemble_scheduling {\n"
        + step(PREPROCESS, {"IMAGE": "IMAGE"}, {"images": "_images", LETTERBOX: tensor[LETTERBOX]})
        + step(ENGINE, {"images": "_images"}, {n: tensor[n] for n in net_names})
        + step(POSTPROCESS, {**{n: tensor[n] for n in net_names}, LETTERBOX: tensor[LETTERBOX]},
               {n: n for n in final})
        + "}\n" + _params({"s2trt_meta": json.dumps(meta.to_props()), "max_det": str(o.max_det)}))
    return configs


def plugin_hint(plugin_lib: str | None) -> str:
    lib = plugin_lib or f"/path/to/{PLUGIN_LIB_NAME}"
    return (f"The engine uses the S2SplitAttention plugin: start Triton with the plugin library loaded,\n"
            f"  tritonserver --model-repository=REPO --backend-config=tensorrt,plugins=\"{lib}\"\n"
            f"or LD_PRELOAD={lib} tritonserver --model-repository=REPO\n"
            "The library must be built against the TensorRT of that Triton release (same as the engine).\n")


# A file name the runtime can look up beside the engine and that no file of a model folder has.
_PLUGIN_FILE = re.compile(r"lib[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\.so(\.[0-9]+)*")


def engine_plugin_copy(engine: Path, plugin_lib: str | None) -> tuple[str, bytes] | None:
    """(file name, its bytes) to write beside a served engine that uses the plugin: the library
    whose SHA-256 the engine's sidecar records, found beside the engine, at --plugin-lib, at
    $S2TRT_PLUGIN_LIB or in this s2trt's build, under the name the sidecar records. The served
    detector's runtime then finds it beside model.plan by that digest (s2trt.trt.plugin_lib's
    engine_plugin_library). None, with a warning, when no local library has that digest."""
    from s2trt.text import printable
    from s2trt.trt.plugin_lib import PLUGIN_ENV, shipped_plugin_library

    side = read_sidecar(engine) or {}
    name, digest = side.get("plugin_library"), side.get("plugin_sha256")
    if not side.get("plugin") or not isinstance(name, str) or not isinstance(digest, str):
        return None
    target = Path(name).name
    if not _PLUGIN_FILE.fullmatch(target):
        log.warning("%s records the plugin library as %s, not a library file name: not copied into the "
                    "model repository", printable(sidecar_path(engine).name), printable(name))
        return None
    candidates = [engine.parent / target]
    candidates += [Path(p).expanduser() for p in (plugin_lib, os.environ.get(PLUGIN_ENV)) if p]
    shipped = shipped_plugin_library()
    if shipped is not None:
        candidates.append(shipped)
    for lib in candidates:
        # The bytes that are written are the ones hashed: a rebuild meanwhile cannot slip in.
        data = lib.read_bytes() if lib.is_file() else None
        if data is not None and hashlib.sha256(data).hexdigest() == digest:
            return target, data
    log.warning("no %s here has the SHA-256 that %s records (looked at %s): the model repository has no "
                "plugin library, so the server needs --plugin-lib, $%s or the library the engine was "
                "built with", printable(target), printable(sidecar_path(engine).name),
                ", ".join(printable(str(c)) for c in candidates), PLUGIN_ENV)
    return None


def _write_model(repo: Path, name: str, config: str, files: dict[str, Path | bytes]) -> None:
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    for dst, src in files.items():
        write_bytes_atomic(version / dst, src if isinstance(src, bytes) else src.read_bytes())
    write_bytes_atomic(repo / name / "config.pbtxt", config.encode())


def export_repository(model: str | Path, repo: str | Path, options: RepoOptions | None = None) -> list[str]:
    """Write the model repository; returns the names of the models written."""
    o = options or RepoOptions()
    o.check()
    model, repo = Path(model), Path(repo)
    meta = model_meta(model)
    if meta.flavour == "tensorrt" and model.suffix == ".onnx":
        raise S2Error(f"{model} is the TensorRT flavour (it has the plugin node, which ONNX Runtime cannot "
                      "run): serve the portable .onnx, or the .engine built from this one")
    is_engine = model.suffix != ".onnx"
    if o.kind is None:
        o = replace(o, kind="gpu" if is_engine else "cpu")
    o = with_core_defaults(o)
    model_file = "model.plan" if is_engine else "model.onnx"
    if o.ensemble and is_engine and meta.batch != "dynamic":
        # Triton's TensorRT backend batches on the first dimension, which must be dynamic in the plan.
        raise S2Error(f"{model} has a fixed batch of {meta.batch}: the tensorrt_plan ensemble needs an "
                      f"engine built with --dynamic (its profile's max batch >= --max-batch "
                      f"{o.max_batch_size})")
    check_writable(repo)
    net = network_outputs(model, meta)
    files: dict[str, Path | bytes] = {model_file: model}
    # The plugin library is read and hashed only once the export can go ahead.
    plugin = engine_plugin_copy(model, o.plugin_lib) if is_engine else None
    if is_engine:
        files[model_file + ".json"] = sidecar_path(model)  # TrtBackend reads names from it
    if plugin is not None:
        files[plugin[0]] = plugin[1]
    made = repo  # the outermost folder this export creates, removed again if it fails
    while not made.parent.exists():
        made = made.parent
    existed = made.exists()
    try:
        return _write_repository(repo, o, meta, net, model_file, files, plugin, is_engine)
    except OSError as e:  # read-only file system, disk full: one line, and no half-written repository
        if not existed:
            shutil.rmtree(made, ignore_errors=True)
        raise S2Error(f"cannot write the model repository {repo}: {e.strerror or e}") from None


def _write_repository(repo: Path, o: RepoOptions, meta: ModelMeta, net: NetworkOutputs, model_file: str,
                      files: dict[str, Path | bytes], plugin: tuple[str, bytes] | None,
                      is_engine: bool) -> list[str]:
    repo.mkdir(parents=True, exist_ok=True)
    stage_py = {"model.py": _HERE / "triton_stage.py"}
    written = [DETECTOR]
    _write_model(repo, DETECTOR, detector_config(o, meta, model_file, net),
                 {"model.py": _HERE / "triton_model.py", **files})
    if o.ensemble:
        configs = ensemble_configs(o, meta, model_file, is_engine, net)
        _write_model(repo, PREPROCESS, configs[PREPROCESS], stage_py)
        _write_model(repo, POSTPROCESS, configs[POSTPROCESS], stage_py)
        _write_model(repo, ENGINE, configs[ENGINE], files if is_engine else {**stage_py, **files})
        _write_model(repo, ENSEMBLE, configs[ENSEMBLE], {})
        written += [PREPROCESS, ENGINE, POSTPROCESS, ENSEMBLE]
    notes = ("# s2trt model repository\n\nServe with `s2serve " + str(repo) + "` or any tritonserver "
             "that has the Python backend.\n")
    if is_engine and o.ensemble and meta.plugin:
        # Triton's TensorRT backend loads plugins for the whole server: point it at the copy.
        copied = str(repo / ENGINE / "1" / plugin[0]) if plugin else None
        notes += "\n" + plugin_hint(o.plugin_lib or copied)
    write_bytes_atomic(repo / "README.md", notes.encode())
    log.info("wrote Triton model repository %s: %s", repo, ", ".join(written))
    return written
