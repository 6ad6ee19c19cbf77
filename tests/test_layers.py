"""The layers of docs/ARCHITECTURE.md, checked on every import of every module (function-level ones too).

A module may import its own package and the packages of lower layers, never a sibling in its own layer
or anything above. The command-line faces sit on top of everything; nothing else may import them.
The graph is built from the source with `ast` (import-linter's grimp walks the folder of
`s2trt.__file__`, core/, and would miss the sibling folders that pyproject.toml's package-dir maps
into the package).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. Each entry: the packages of one layer (a package holds its subpackages).
LAYERS: list[tuple[str, ...]] = [
    ("s2trt",),  # core/: errors, exit codes, CLI plumbing, metadata, safe text
    ("s2trt.trt", "s2trt.detect"),  # TensorRT/CUDA support; the NumPy/OpenCV detection core
    ("s2trt.models",),
    ("s2trt.demo",),  # the bundled model, data and its tools; export's parity check reads its images
    ("s2trt.export",),
    ("s2trt.calib",),  # INT8 on top of export's FP16 pass and engine profiles
    ("s2trt.runtime",),
    ("s2trt.serve",),
]
# The command lines: s2export drives export and INT8 calibration, so it is above calib; and
# s2trt.export_model, a face over s2export's own parser and run.
FACES = frozenset({"s2trt.export.cli", "s2trt.calib.cli", "s2trt.calib.__main__", "s2trt.runtime.cli",
                   "s2trt.runtime.evaluate", "s2trt.serve.cli", "s2trt.export.api"})
FACE_LAYER = len(LAYERS)
# `import s2trt` re-exports the Python API lazily (a module __getattr__ in core/__init__.py): the
# only imports that may run from the bottom layer up, and only from the package module itself.
LAZY_API = frozenset({("s2trt", "s2trt.runtime.api"), ("s2trt", "s2trt.runtime.results"),
                      ("s2trt", "s2trt.export.api")})


def package_dirs() -> dict[str, Path]:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {pkg: ROOT / folder for pkg, folder in setup["package-dir"].items()}
    for pkg in setup["packages"]:  # subpackages live under their parent's folder
        if pkg not in dirs:
            parent, _, leaf = pkg.rpartition(".")
            dirs[pkg] = dirs[parent] / leaf
    return dirs


def module_files() -> dict[str, Path]:
    """Every module of the installed packages, by dotted name."""
    modules = {}
    for pkg, folder in package_dirs().items():
        for path in folder.glob("*.py"):
            modules[pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"] = path
    return modules


def imports_of(name: str, path: Path, known: set[str], extra: str = "") -> set[str]:
    """The s2trt modules (or packages) that the module `name` in `path` (plus the lines `extra`)
    imports anywhere in its body."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    source = path.read_text(encoding="utf-8") + extra
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:  # `from pkg import module` imports the module
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m == "s2trt" or m.startswith("s2trt.")}


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, package) of a module: the deepest package of the table that holds it."""
    if module in FACES:
        return FACE_LAYER, module
    best = None
    for i, packages in enumerate(LAYERS):
        for pkg in packages:
            if (module == pkg or module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best[1])):
                best = (i, pkg)
    if best is None:
        raise KeyError(f"{module} is in no layer of tests/test_layers.py")
    if best[1] == "s2trt" and module.count(".") > 1:
        raise KeyError(f"{module}: a package of its own that the layers table does not place")
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that goes up a layer or sideways into a sibling package of the same layer."""
    bad = []
    for importer, imported in sorted(graph.items()):
        i_layer, i_pkg = layer_of(importer)
        for target in sorted(imported):
            if (importer, target) in LAZY_API:
                continue
            t_layer, t_pkg = layer_of(target)
            if t_layer > i_layer or (t_layer == i_layer < FACE_LAYER and t_pkg != i_pkg):
                bad.append(f"{importer} imports {target} ({t_pkg} is not below {i_pkg})")
    return bad


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def test_every_package_is_placed_in_a_layer() -> None:
    placed = {pkg for layer in LAYERS for pkg in layer}
    top_level = {pkg for pkg in package_dirs() if pkg.count(".") <= 1}
    assert top_level == placed
    assert set(module_files()) >= FACES


def test_no_import_goes_up_or_sideways() -> None:
    graph = import_graph()
    # the graph resolves `from pkg import module`, lazy imports and packages as they are written
    assert graph["s2trt.runtime.cli"] >= {"s2trt.runtime.model", "s2trt.runtime.run", "s2trt.cli"}
    assert graph["s2trt.runtime.model"] >= {"s2trt.runtime.backends.triton"}
    assert graph["s2trt.runtime.backends.trt"] >= {"s2trt.trt.sidecar", "s2trt.detect.letterbox"}
    assert not violations(graph), "\n".join(violations(graph))


@pytest.mark.parametrize(("module", "line"), [
    ("s2trt.runtime.pipeline", "from s2trt.serve.server import free_port"),
    ("s2trt.runtime.backends.trt", "def f():\n    from s2trt.serve import repository"),  # lazy: counts
    ("s2trt.trt.sidecar", "import s2trt.detect.boxes"),  # siblings of one layer
    ("s2trt.calib.pipeline", "from s2trt.export.cli import main"),  # a face, from below
    ("s2trt.detect.boxes", "from ..runtime.backends import base"),  # relative
    ("s2trt", "from s2trt.runtime.pipeline import Runner"),  # the lazy API exemption is this narrow
    ("s2trt.errors", "from s2trt.runtime.api import Detector"),  # ... and only for the package module
])
def test_the_check_refuses_a_forbidden_import(module: str, line: str) -> None:
    files = module_files()
    graph = import_graph()
    graph[module] = imports_of(module, files[module], set(files), "\n" + line + "\n")
    assert violations(graph)
