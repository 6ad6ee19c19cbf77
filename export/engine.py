"""Build a TensorRT engine from an s2trt ONNX export, on TensorRT 10 (Jetson) and 11 (docs/DESIGN.md §4-§5).

TensorRT is imported lazily and every version difference goes through s2trt.trt.versions.
Without TensorRT, manual_build_hint() gives the commands that build the engine on the target.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s2trt.errors import MissingDependencyError, S2Error
from s2trt.meta import (
    ModelMeta,
    read_onnx_meta,
    read_sidecar,
    sidecar_path,
    write_bytes_atomic,
    write_json_atomic,
)
from s2trt.text import first_line, printable
from s2trt.trt import gpu, versions
from s2trt.trt.plugin_lib import (
    PLUGIN_LIB_NAME,
    PLUGIN_NAME,
    ensure_plugin,
    plugin_library_sha256,
)
from s2trt.trt.sidecar import engine_sidecar

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 16
INPUT_NAME = "images"  # the ONNX contract's input (docs/DESIGN.md §3)
Shape = tuple[int, int, int, int]


@dataclass
class EngineOptions:
    precision: str = "fp32"  # "fp32" | "fp16" | "int8"
    workspace_gib: float | None = None  # None: TensorRT's default (the device memory)
    min_shape: Shape | None = None  # NCHW; only for an ONNX exported with a dynamic batch
    opt_shape: Shape | None = None
    max_shape: Shape | None = None
    timing_cache: Path | None = None  # read when present, written after the build
    device: int = 0
    verbose: bool = False
    plugin_lib: Path | None = None  # default: s2trt.trt.plugin_lib.default_plugin_library()
    calibrator: object | None = None  # TensorRT ≤ 10 INT8 calibrator (s2trt.calib)
    use_plugin: bool = True


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def resolve_profile(name: str, dims: Sequence[int], opts: EngineOptions) -> tuple[Shape, Shape, Shape] | None:
    """min/opt/max shapes for an input with dynamic (-1) dimensions; None for a static input.

    Defaults cover the usual dynamic-batch export: batch 1 to 16, tuned for half the maximum.
    """
    dims = tuple(int(d) for d in dims)
    given = {"min": opts.min_shape, "opt": opts.opt_shape, "max": opts.max_shape}
    if all(d >= 0 for d in dims):
        if any(given.values()):
            log.warning("input %s has the fixed shape %s: --min/--opt/--max are ignored (export with "
                        "--dynamic for a dynamic batch)", name, fmt_shape(dims))
        return None
    if len(dims) != 4:
        raise S2Error(f"input {name} has {len(dims)} dimensions; s2trt engines take NCHW images")
    if any(d < 0 for d in dims[1:]) and not all(given.values()):
        raise S2Error(f"input {name} ({fmt_shape(dims)}) has dynamic dimensions besides the batch: "
                      "give all of --min, --opt and --max shapes")
    rest = dims[1:]
    batches = [s[0] for s in given.values() if s]
    max_b = given["max"][0] if given["max"] else max([DEFAULT_MAX_BATCH, *batches])
    min_b = given["min"][0] if given["min"] else 1
    opt_b = given["opt"][0] if given["opt"] else max(min_b, max_b // 2)
    shapes = {k: tuple(int(d) for d in (s or (b, *rest)))
              for (k, s), b in zip(given.items(), (min_b, opt_b, max_b), strict=True)}
    for k, s in shapes.items():
        if len(s) != 4 or min(s) < 1 or any(d >= 0 and d != v for d, v in zip(dims, s, strict=True)):
            raise S2Error(f"--{k} {fmt_shape(s)} does not fit input {name} ({fmt_shape(dims)}, -1 = "
                          "dynamic): give N x C x H x W with the fixed dimensions unchanged")
    mn, op, mx = shapes["min"], shapes["opt"], shapes["max"]
    if not all(a <= b <= c for a, b, c in zip(mn, op, mx, strict=True)):
        raise S2Error(f"shapes must satisfy min ≤ opt ≤ max in every dimension: --min {fmt_shape(mn)}, "
                      f"--opt {fmt_shape(op)}, --max {fmt_shape(mx)}")
    return mn, op, mx  # type: ignore[return-value]


def _source_metadata(onnx_path: Path, required: bool) -> dict[str, Any]:
    """The ONNX's own metadata_props over its sidecar JSON (which adds the export's reports).

    On a Jetson without the onnx package the sidecar alone is enough.
    """
    side = read_sidecar(onnx_path) or {}  # a JSON object: read_sidecar refuses anything else
    try:
        try:
            meta = read_onnx_meta(onnx_path)
        except ImportError:
            if not side:
                raise MissingDependencyError(
                    f"reading the metadata of {onnx_path.name} needs the Python package 'onnx' or the "
                    f"sidecar {sidecar_path(onnx_path).name}: pip install onnx, or copy the sidecar "
                    "with the ONNX") from None
            meta = ModelMeta.from_dict(side, str(sidecar_path(onnx_path)))
    except S2Error:
        if required:
            raise
        return side
    return {**side, **asdict(meta)}


def _prepare_plugin(trt: Any, meta: dict[str, Any], opts: EngineOptions, onnx_path: Path) -> Path | None:
    plugin_op = meta.get("plugin")
    if not plugin_op:
        return None
    if not opts.use_plugin:
        raise S2Error(f"{onnx_path.name} contains the {printable(plugin_op, 60)} plugin node, so "
                      "--no-plugin cannot build it: use the portable ONNX of the same export (flavour "
                      "'portable')")
    return ensure_plugin(trt, opts.plugin_lib, required=True)


def _parse_network(trt: Any, builder: Any, logger: Any, onnx_path: Path,
                   strongly_typed: bool) -> tuple[Any, Any]:
    """(network, parser); the parser owns weights the network uses, so it lives as long."""
    network = versions.create_network(trt, builder, strongly_typed)
    parser = trt.OnnxParser(network, logger)
    log.info("parsing %s", onnx_path)
    _parse(trt, parser, onnx_path)
    return network, parser


def _parse(trt: Any, parser: Any, onnx_path: Path) -> None:
    if parser.parse_from_file(str(onnx_path)):
        return
    # The parser quotes node names: text of the ONNX file.
    errors = [printable(" ".join(str(parser.get_error(i)).split())) for i in range(parser.num_errors)]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    hint = ""
    if any(PLUGIN_NAME in e for e in errors):
        hint = "; load the plugin library with --plugin-lib or build the portable ONNX with --no-plugin"
    raise S2Error(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: "
                  f"{' | '.join(errors[:3]) or 'no parser error reported'}{more}{hint}")


def _add_profile(builder: Any, config: Any, network: Any, opts: EngineOptions) -> tuple[Any, dict]:
    profile, shapes = None, {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        resolved = resolve_profile(tensor.name, tuple(tensor.shape), opts)
        if resolved is None:
            continue
        profile = profile or builder.create_optimization_profile()
        profile.set_shape(tensor.name, *resolved)
        shapes[tensor.name] = dict(zip(("min", "opt", "max"), (list(s) for s in resolved), strict=True))
        log.info("optimization profile for %s: min %s, opt %s, max %s", tensor.name,
                 *(fmt_shape(s) for s in resolved))
    if profile is not None:
        config.add_optimization_profile(profile)
    return profile, shapes


def graph_precision(trt: Any, network: Any) -> str:
    """What the parsed graph itself asks for: Q/DQ layers mean int8, FP16 tensors mean fp16."""
    half = False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE):
            return "int8"
        half = half or any(layer.get_output(j).dtype == trt.DataType.HALF for j in range(layer.num_outputs))
    return "fp16" if half else "fp32"


@dataclass(frozen=True)
class BuildPlan:
    """How TensorRT builds one graph. build_engine applies it and manual_build_hint prints it as
    trtexec options, so `s2export model.onnx` and the printed trtexec line build the same network."""

    precision: str  # of the engine
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED  | trtexec --stronglyTyped
    fp16: bool  # BuilderFlag.FP16                                       | --fp16
    int8: bool  # BuilderFlag.INT8 with a calibrator                     | --int8 --calib=<cache>
    # BuilderFlag.OBEY_PRECISION_CONSTRAINTS and the island layers in FP32 | --precisionConstraints=obey
    # --layerPrecisions=<island>:fp32,... --layerOutputTypes=<island>:fp32,...
    pin_islands: bool


def plan_build(graph: str, requested: str, strongly_typed_only: bool, onnx_name: str,
               trt_name: str = "TensorRT") -> BuildPlan:
    """A graph that carries its own types (FP16 tensors or Q/DQ) is built strongly typed on every
    version, so its FP32 islands hold as exported; only an FP32 graph on TensorRT ≤ 10 takes builder
    precision flags, with the FP32 islands pinned by precision constraints."""
    if strongly_typed_only or graph != "fp32":
        if requested not in ("fp32", graph):
            raise S2Error(f"{trt_name} builds {onnx_name} as a strongly typed network, so the precision "
                          f"comes from the ONNX graph, and {onnx_name} is {graph}: export an {requested} "
                          f"graph with `s2export model.pt --{requested}` and build it")
        return BuildPlan(graph, True, False, False, False)
    return BuildPlan(requested, False, requested != "fp32", requested == "int8", requested != "fp32")


def _configure_precision(trt: Any, config: Any, network: Any, opts: EngineOptions, profile: Any,
                         onnx_path: Path, mode: BuildPlan) -> tuple[str, list[str]]:
    """Apply the plan's builder flags; (how the precision was chosen, the FP32 layer patterns pinned)."""
    name = onnx_path.name
    if mode.strongly_typed:
        if opts.calibrator is not None:
            if mode.precision != "int8":
                raise S2Error(f"TensorRT {trt.__version__} builds {name} strongly typed, where an INT8 "
                              "calibrator has no say: build the Q/DQ ONNX that `s2export model.pt --int8 "
                              "--calib <images>` writes")
            log.warning("%s is a Q/DQ graph: its own scales are used, the calibrator is not", name)
        return "strongly typed network (precision from the ONNX graph)", []
    if mode.int8 and opts.calibrator is None:
        raise S2Error(f"INT8 needs calibration: give calibration images (--calib) or build the Q/DQ "
                      f"ONNX of `s2export model.pt --int8`; {name} has no Q/DQ nodes")
    calibrator = opts.calibrator if mode.int8 else None
    versions.set_precision_flags(trt, config, mode.precision, calibrator)
    if calibrator is not None and profile is not None:
        versions.set_calibration_profile(config, profile)
    patterns: list[str] = []
    if mode.pin_islands:
        patterns = fp32_island_patterns(onnx_path, required=True)
        pinned = versions.pin_fp32_layers(trt, config, network, patterns)
        log.info("FP32 islands: %d layers pinned to FP32 (precision constraints obeyed)", len(pinned))
    how = "INT8 calibrator" if calibrator is not None else "builder"
    return f"builder flags ({how}{', FP32 islands pinned' if patterns else ''})", patterns


def fp32_island_patterns(onnx_path: Path, required: bool) -> list[str] | None:
    """Layer names, in trtexec's --layerPrecisions syntax (at most one '*'), of the FP32 islands of
    an FP32 graph: the Detect decode and the split attention's weight path (export/fp16.py).

    onnx-tensorrt names each layer after its ONNX node, and the further layers of one node
    `<node>_<n>`: `<node>*` takes them all where every node whose name starts that way is in the
    island, else the exact name. Only nodes with float outputs, and a wildcard rather than an exact
    name where possible: trtexec (and pin_fp32_layers) leave a wildcard's shape and integer layers
    alone, so precision constraints cannot fail on them. None (or an S2Error when `required`)
    without the onnx packages.
    """
    try:
        import onnx

        from s2trt.export.fp16 import elem_types, fp32_islands
    except ImportError:
        if not required:
            return None
        raise S2Error(f"building {onnx_path.name} with FP16 builder flags keeps its FP32 islands by naming "
                      "their layers, which needs the Python packages onnx and onnx-graphsurgeon: pip "
                      "install onnx onnx-graphsurgeon, or build the FP16 graph of `s2export model.pt "
                      "--fp16`") from None
    try:
        model = onnx.load(str(onnx_path))
    except Exception as e:  # onnx raises protobuf's and OS errors alike
        if not required:
            return None
        reason = first_line(e)
        raise S2Error(f"{onnx_path} is not a readable ONNX file ({printable(reason, 200)})") from None
    island = fp32_islands(model)
    types = elem_types(model)
    names = [n.name for n in model.graph.node]
    patterns = []
    for node in sorted(model.graph.node, key=lambda n: n.name):
        # trtexec's spec separates pairs at ',' and values at ':', and reads "'" as quoting: a name
        # with those is left unpinned by both rather than pinned differently.
        if node.name not in island or not node.name or any(c in node.name for c in ",:*'"):
            continue
        if not all(types.get(o) == onnx.TensorProto.FLOAT for o in node.output if o):
            continue
        alone = all(m in island for m in names if m.startswith(node.name))
        patterns.append(node.name + "*" if alone else node.name)
    return patterns


def _use_timing_cache(config: Any, path: Path) -> None:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s is unreadable or from another TensorRT/GPU: starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    elif data:
        log.info("timing cache: %s (%d kB)", path, len(data) // 1024)


def build_engine(onnx_path: Path, engine_path: Path, opts: EngineOptions) -> dict[str, Any]:
    """Build, write the engine atomically with its sidecar JSON, and return the sidecar."""
    trt = versions.import_tensorrt("building a TensorRT engine")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if opts.precision not in PRECISIONS:
        raise S2Error(f"unknown precision {opts.precision!r}: use one of {', '.join(PRECISIONS)}")
    if not onnx_path.is_file():
        raise S2Error(f"{onnx_path} does not exist")
    meta = _source_metadata(onnx_path, required=True)
    plugin_lib = _prepare_plugin(trt, meta, opts, onnx_path)
    plugin_sha256 = plugin_library_sha256(plugin_lib) if plugin_lib else None
    gpu.select_device(opts.device)
    use_device = getattr(opts.calibrator, "use_device", None)
    if use_device is not None:  # a calibrator made before --device was known holds device-0 memory
        use_device(opts.device)

    logger = trt.Logger(trt.Logger.VERBOSE if opts.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed_only = versions.is_strongly_typed_only(trt)
    if typed_only and opts.calibrator is not None:
        raise S2Error(f"TensorRT {trt.__version__} has no INT8 calibrator: build the Q/DQ ONNX that "
                      "`s2export model.pt --int8 --calib <images>` writes")
    strongly_typed = typed_only or meta.get("precision") in ("fp16", "int8")
    # The parser owns weights that the network uses: it lives until the build is done.
    network, _parser = _parse_network(trt, builder, logger, onnx_path, strongly_typed)
    graph = graph_precision(trt, network)
    if not typed_only and (graph != "fp32") != strongly_typed:
        # The metadata said otherwise; the graph's own types decide (the network is made anew,
        # as the creation flag cannot change after parsing).
        log.warning("%s is an %s graph although its metadata says %s", onnx_path.name, graph,
                    printable(meta.get("precision"), 20))
        network, _parser = _parse_network(trt, builder, logger, onnx_path, graph != "fp32")
    mode = plan_build(graph, opts.precision, typed_only, onnx_path.name, f"TensorRT {trt.__version__}")
    log.info("TensorRT %s: %s", trt.__version__, "strongly typed network, precision from the ONNX graph"
             if mode.strongly_typed else "FP32 graph, precision from builder flags")

    config = builder.create_builder_config()
    if opts.workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
    profile, profiles = _add_profile(builder, config, network, opts)
    path, fp32_layers = _configure_precision(trt, config, network, opts, profile, onnx_path, mode)
    precision = mode.precision
    if opts.timing_cache:
        _use_timing_cache(config, Path(opts.timing_cache))
    # The layer information that check_engine_precision reads after the build.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED

    log.info("building the %s engine with %s (minutes on a Jetson)", precision, path)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    # TensorRT reads a calibrator's None batch as "done": a failure inside get_batch would otherwise
    # give an engine calibrated on part of the data, without a word.
    calib_error = getattr(opts.calibrator, "error", None)
    if calib_error is not None:
        raise S2Error(f"INT8 calibration failed, no engine written: {calib_error}")
    if serialized is None:
        raise S2Error(f"TensorRT {trt.__version__} could not build an engine from {onnx_path.name}: "
                      "see its messages above (rerun with --verbose for all of them)")
    _check_built_engine(trt, logger, serialized, onnx_path, precision, fp32_layers)
    write_bytes_atomic(engine_path, bytes(serialized))
    if opts.timing_cache:
        write_bytes_atomic(Path(opts.timing_cache), bytes(config.get_timing_cache().serialize()))
    extra = {"onnx_file": str(onnx_path), "precision_path": path, "profiles": profiles,
             "workspace_gib": opts.workspace_gib, "fp32_layers": fp32_layers}
    sidecar = engine_sidecar(trt, precision, plugin_lib, plugin_sha256, {**meta, **extra}, opts.device)
    write_json_atomic(sidecar_path(engine_path), sidecar)
    log.info("wrote %s (%.1f MB, %s, TensorRT %s, %s) in %.0f s", engine_path,
             engine_path.stat().st_size / 1e6, precision, trt.__version__, path, time.perf_counter() - t0)
    return sidecar


def _check_built_engine(trt: Any, logger: Any, serialized: Any, onnx_path: Path, precision: str,
                        patterns: list[str]) -> None:
    """Reads the engine's layers back and refuses it, naming the layers, where the precision it
    runs in is not the one planned (check_engine_precision)."""
    islands = patterns or (fp32_island_patterns(onnx_path, required=False) if precision != "fp32" else [])
    if islands is None:
        log.warning("layer precisions of %s not checked: listing its FP32 islands needs the Python "
                    "packages onnx and onnx-graphsurgeon", onnx_path.name)
        return
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(bytes(serialized))
    if engine is None:
        raise S2Error(f"TensorRT {trt.__version__} cannot load the engine it built from {onnx_path.name} "
                      "(see its messages above): no engine written")
    problems = check_engine_precision(engine, islands, precision, trt)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise S2Error(f"TensorRT {trt.__version__} built {onnx_path.name} into an engine that does not run "
                      f"in the precision planned, so none was written: {'; '.join(problems[:5])}{more}")
    log.info("layer precisions checked: %s, FP32 islands in FP32", precision)
# ------------------------------------------------------------------ precision, checked after a build

# Words of IEngineInspector's "Format/Datatype" text ("Row major linear FP32", "Channel major FP16
# format where channel % 8 == 0", "Thirty-two wide channel vectorized row major Int8 format", and
# from TensorRT 10.9 on just "Float", "Half", "Int8") -> the type they name.
_FORMAT_TYPES = {"fp32": "FP32", "float": "FP32", "float32": "FP32", "fp16": "FP16", "half": "FP16",
                 "float16": "FP16", "int8": "INT8", "bf16": "BF16", "bfloat16": "BF16", "fp8": "FP8"}
# The FP16 pass's border Casts (export/fp16.py, calib/qdq.py): fused into an island layer, they make
# its input (`/to_fp32`) or output (`/to_fp16`) reduced precision while it computes in FP32; fused
# into an FP16 convolution, a `/to_fp16` makes its input FP32.
_CAST_IN, _CAST_OUT = "/to_fp32", "/to_fp16"
_FUSION_WORDS = frozenset({"PWN", "ForeignNode", "+"})  # TensorRT's wrappers around fused node names
_COMPUTE = ("convolution", "deconvolution", "matrixmultiply", "fullyconnected", "gemm")


def _format_type(text: str) -> str | None:
    """The float type an inspector tensor entry names; None for integer, unknown or N/A formats."""
    for word in re.findall(r"[a-z0-9]+", str(text).lower()):
        if word in _FORMAT_TYPES:
            return _FORMAT_TYPES[word]
    return None


def _layer_nodes(entry: dict[str, Any]) -> list[str]:
    """The ONNX node names a fused engine layer was made of: `a + PWN(b, c)`, `{ForeignNode[a...b]}`,
    and the parser's `[ONNX Layer: a]` metadata where TensorRT records it."""
    text = f"{entry.get('Name', '')} {entry.get('Metadata', '')}".replace("ONNX Layer:", " ")
    return [t for t in re.split(r"\s\+\s|[\s,()\[\]{}\x1f]+|\.\.\.", text) if t and t not in _FUSION_WORDS]


def engine_layers(engine: Any, trt: Any) -> list[dict[str, Any]]:
    """Every layer of a built engine as IEngineInspector reports it (JSON; detailed only when the
    engine was built with ProfilingVerbosity.DETAILED). A dynamic-shape engine reports its formats
    only for an execution context with shapes set (else "N/A due to dynamic shapes"): the first
    profile's opt shapes."""
    inspector = engine.create_engine_inspector()
    context = None
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dynamic = -1 in tuple(engine.get_tensor_shape(name))
        if dynamic and engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            context = context or engine.create_execution_context()
            context.set_input_shape(name, engine.get_tensor_profile_shape(name, 0)[1])
    if context is not None:
        inspector.execution_context = context
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    return [entry for entry in layers if isinstance(entry, dict)]


def check_engine_precision(engine: Any, islands: Sequence[str], precision: str,
                           trt: Any = None) -> list[str]:
    """What in a built engine does not run as planned, one line per layer (empty when it all does).

    `islands`: the FP32 islands as layer-name patterns (fp32_island_patterns); `precision`: fp32,
    fp16 or int8 as asked. An island layer (every node it was fused from is an island node) must
    read and write FP32, except on a side where it absorbed one of the FP16 pass's border Casts; a
    convolution or matrix multiply outside the islands must read FP16 or INT8 when fp16 or int8 was
    asked, and an int8 engine must run some layer in INT8. An fp32 engine has no FP16 or INT8 at all.
    Reformat layers only carry data across a border and are not judged.
    """
    trt = trt or versions.import_tensorrt("checking an engine's layer precisions")
    want = {"fp16": "FP16", "int8": "INT8 or FP16"}.get(precision)
    layers = engine_layers(engine, trt)
    if not layers:
        return ["the engine reports no layer information: it was built without ProfilingVerbosity.DETAILED"]
    problems: list[str] = []
    int8_seen = False
    for entry in layers:
        name = printable(str(entry.get("Name", "?")), 160)
        if entry.get("LayerType") == "Reformat" or name.startswith("Reformatting CopyNode"):
            continue
        ins, outs = ([t for x in entry.get(side, []) if (t := _format_type(x.get("Format/Datatype", "")))]
                     for side in ("Inputs", "Outputs"))
        int8_seen = int8_seen or "INT8" in ins + outs
        nodes = _layer_nodes(entry)
        core = [n for n in nodes if not n.endswith((_CAST_IN, _CAST_OUT))]
        in_island = [n for n in core if any(versions.layer_name_matches(n, p) for p in islands)]
        if precision == "fp32":
            if set(ins + outs) - {"FP32"}:
                problems.append(f"{name} runs in {'/'.join(sorted(set(ins + outs)))}, not FP32")
        elif core and len(in_island) == len(core):
            reduced = [t for t in ins if t != "FP32" and not any(n.endswith(_CAST_IN) for n in nodes)]
            reduced += [t for t in outs if t != "FP32" and not any(n.endswith(_CAST_OUT) for n in nodes)]
            if reduced:
                problems.append(f"{name} (FP32 island) runs in {'/'.join(sorted(set(reduced)))}")
        kind = f"{entry.get('ParameterType', '')} {entry.get('LayerType', '')}".lower()
        compute = any(c in kind for c in _COMPUTE)
        cast_in = any(n.endswith(_CAST_OUT) for n in nodes)  # it reads FP32 through a fused Cast(->FP16)
        if want and compute and not in_island and not cast_in and set(ins) == {"FP32"}:
            problems.append(f"{name} runs in FP32, not {want}")
    if precision == "int8" and not int8_seen:
        problems.append("no layer runs in INT8")
    return problems


def _hint_graph(meta: dict[str, Any], onnx_path: Path) -> tuple[str, tuple[int, ...]]:
    """(precision, input dims) from metadata that may be only a sidecar, checked like any file."""
    graph, imgsz, batch = meta.get("precision", "fp32"), meta.get("imgsz") or [640, 640], meta.get("batch", 1)
    def size(v: object) -> bool:
        return type(v) is int and 0 < v <= 1 << 16

    ok_imgsz = isinstance(imgsz, list) and len(imgsz) == 2 and all(map(size, imgsz))
    if graph not in PRECISIONS or not ok_imgsz or not (batch == "dynamic" or size(batch)):
        raise S2Error(f"the metadata of {printable(onnx_path.name)} is malformed (precision "
                      f"{printable(graph, 20)!r}, imgsz {printable(imgsz, 40)}, batch "
                      f"{printable(batch, 20)}): export the model again with s2export")
    return graph, (-1 if batch == "dynamic" else batch, 3, *imgsz)


def manual_build_hint(onnx_path: Path, opts: EngineOptions, engine_path: Path | None = None) -> str:
    """The s2export and equivalent trtexec commands that build this engine on the target.

    They run in the folder the files are copied to there, so they name files, not this machine's
    folders; a typed graph carries its precision, so they repeat no --fp16/--int8 for it.
    """
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else onnx_path.with_suffix(".engine")
    meta = _source_metadata(onnx_path, required=False)
    graph, dims = _hint_graph(meta, onnx_path)
    profile = resolve_profile(INPUT_NAME, dims, opts)

    mode = plan_build(graph, opts.precision, False, onnx_path.name)
    flag = [f"--{opts.precision}"] if opts.precision != "fp32" and graph == "fp32" else []
    s2 = ["s2export", onnx_path.name, *flag]
    trtexec = ["trtexec", f"--onnx={onnx_path.name}", f"--saveEngine={engine_path.name}"]
    notes = []
    if mode.strongly_typed:  # the graph carries its types: 10.x and 11.x build it alike
        trtexec.append("--stronglyTyped")
    if mode.fp16:
        trtexec.append("--fp16")
    if mode.int8:
        trtexec += ["--int8", "--calib=<calibration cache>"]
    if mode.pin_islands:
        patterns = fp32_island_patterns(onnx_path, required=False)
        if patterns:
            spec = ",".join(f"{p}:fp32" for p in patterns)
            trtexec += ["--precisionConstraints=obey", f"--layerPrecisions={spec}",
                        f"--layerOutputTypes={spec}"]
        else:
            notes.append("# trtexec would run the FP32 islands (Detect decode, attention weights) in FP16: "
                         "listing their layers for --layerPrecisions needs the Python packages onnx and "
                         "onnx-graphsurgeon here")
        notes.append(f"# trtexec --{opts.precision} exists up to TensorRT 10; TensorRT 11 needs the "
                     f"{opts.precision} ONNX from `s2export model.pt --{opts.precision}` and --stronglyTyped")
    if opts.precision == "int8" and graph != "int8":
        s2 += ["--calib", "<calibration images>"]
    if profile is not None:
        for key, shape in zip(("min", "opt", "max"), profile, strict=True):
            s2 += [f"--{key}", fmt_shape(shape)]
            trtexec.append(f"--{key}Shapes={INPUT_NAME}:{fmt_shape(shape)}")
    if meta.get("plugin") and opts.use_plugin:
        # Where a checkout on the target builds it (the library found here is this machine's).
        lib = opts.plugin_lib or Path("plugins/build") / PLUGIN_LIB_NAME
        if opts.plugin_lib:
            s2 += ["--plugin-lib", str(lib)]
        # --dynamicPlugins goes through IPluginRegistry::loadLibrary, which calls the library's
        # getCreators(); --staticPlugins only dlopens it, and the library registers nothing on load.
        trtexec.append(f"--dynamicPlugins={lib}")
    if not opts.use_plugin:
        s2.append("--no-plugin")
    if opts.workspace_gib:
        s2 += ["--workspace", f"{opts.workspace_gib:g}"]
        trtexec.append(f"--memPoolSize=workspace:{opts.workspace_gib:g}G")
    if opts.timing_cache:
        s2 += ["--timing-cache", str(opts.timing_cache)]
        trtexec.append(f"--timingCacheFile={opts.timing_cache}")
    if opts.device:
        s2 += ["--device", str(opts.device)]
        trtexec.append(f"--device={opts.device}")
    return "\n".join([shlex.join(s2), shlex.join(trtexec), *notes])
