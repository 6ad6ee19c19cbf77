"""Print the attribute tree of the real TensorRT module as JSON.

Run by provision.dump_api() with a `tensorrt-cuXX-bindings` wheel on PYTHONPATH and the stub
libraries on LD_LIBRARY_PATH; any call into TensorRT would abort, so only names are read.
"""

from __future__ import annotations

import json
import sys

MAX_DEPTH = 3  # trt.ILogger.Severity.WARNING is the deepest chain the sources use


def attribute_paths(module: object) -> dict[str, bool]:
    """'BuilderFlag.FP16' -> whether its own attributes are listed too (classes only)."""
    paths: dict[str, bool] = {}

    def walk(obj: object, prefix: str, depth: int) -> None:
        for name in dir(obj):
            if name.startswith("_"):
                continue
            value = getattr(obj, name, None)
            expand = isinstance(value, type) and depth < MAX_DEPTH
            paths[prefix + name] = expand
            if expand:
                walk(value, f"{prefix}{name}.", depth + 1)

    walk(module, "", 1)
    return paths


def main() -> None:
    import tensorrt_bindings as trt

    sys.modules.setdefault("tensorrt", trt)
    from s2trt.runtime.trt_compat import is_strongly_typed_only, trt_version

    json.dump({"version": trt.__version__, "trt_version": list(trt_version(trt)),
               "strongly_typed_only": is_strongly_typed_only(trt), "paths": attribute_paths(trt)},
              sys.stdout)


if __name__ == "__main__":
    main()
