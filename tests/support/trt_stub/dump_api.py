"""Print the attribute tree of the real TensorRT module as JSON.

Run by provision.dump_api() with a `tensorrt-cuXX-bindings` wheel on PYTHONPATH and the stub
libraries on LD_LIBRARY_PATH; any call into TensorRT would abort, so only names are read.
"""

from __future__ import annotations

import json
import re
import sys

MAX_DEPTH = 3  # trt.ILogger.Severity.WARNING is the deepest chain the sources use


def parameter_names(name: str, doc: str | None) -> list[str] | None:
    """Parameter names from pybind11's signature lines (`f(self: X, a: int, b: str = '') -> None`,
    one per overload); None when there is no signature or it takes **kwargs."""
    names: list[str] = []
    for m in re.finditer(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->", doc or "", re.MULTILINE):
        depth, start, params = 0, 0, []
        text = m.group(1)
        for i, ch in enumerate(text + ","):
            depth += (ch in "[(") - (ch in "])")
            if ch == "," and depth == 0:
                params.append(text[start:i].split(":")[0].split("=")[0].strip())
                start = i + 1
        if any(p.startswith("*") for p in params):
            return None
        names += [p for p in params if p and p != "self" and p not in names]
    return names or None


def attribute_paths(module: object) -> tuple[dict[str, bool], dict[str, list[str]]]:
    """'BuilderFlag.FP16' -> whether its own attributes are listed too (classes only), and
    'IBuilderConfig.set_timing_cache' -> its parameter names."""
    paths: dict[str, bool] = {}
    params: dict[str, list[str]] = {}

    def walk(obj: object, prefix: str, depth: int) -> None:
        for name in dir(obj):
            if name.startswith("_"):
                continue
            value = getattr(obj, name, None)
            expand = isinstance(value, type) and depth < MAX_DEPTH
            paths[prefix + name] = expand
            if expand:
                walk(value, f"{prefix}{name}.", depth + 1)
            elif callable(value):
                names = parameter_names(name, getattr(value, "__doc__", None))
                if names is not None:
                    params[prefix + name] = names

    walk(module, "", 1)
    return paths, params


# Enums whose numeric values the sources depend on (a creation flag is used as a bit position).
VALUED_ENUMS = ("NetworkDefinitionCreationFlag", "BuilderFlag")


def enum_values(module: object) -> dict[str, int]:
    """'BuilderFlag.FP16' -> 0: the values of pybind11 enums, as the C++ enumerators define them."""
    values = {}
    for enum in VALUED_ENUMS:
        for name, member in getattr(getattr(module, enum, None), "__members__", {}).items():
            values[f"{enum}.{name}"] = int(member)
    return values


def main() -> None:
    import tensorrt_bindings as trt

    sys.modules.setdefault("tensorrt", trt)
    from s2trt.trt.versions import is_strongly_typed_only, trt_version

    paths, params = attribute_paths(trt)
    json.dump({"version": trt.__version__, "trt_version": list(trt_version(trt)),
               "strongly_typed_only": is_strongly_typed_only(trt), "paths": paths, "params": params,
               "values": enum_values(trt)}, sys.stdout)


if __name__ == "__main__":
    main()
