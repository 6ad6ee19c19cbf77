"""Collect every TensorRT attribute the package uses, with the TensorRT versions that run it.

Source conventions (see s2trt.trt.versions):
- the tensorrt module is the name `trt` (or `tensorrt`): `trt.BuilderFlag.FP16` -> BuilderFlag.FP16;
- TensorRT objects are typed by what made them (`builder.create_builder_config()` is an
  IBuilderConfig, `trt.Builder(...)` a Builder), by assignment, or by the names in OBJECT_CLASSES
  (`config.set_flag` -> IBuilderConfig.set_flag, also as `self._config`);
- `@for_trt(min_major=.., max_major=..)` on a function or class, and the two branches of
  `if is_strongly_typed_only(trt):` (and of the same conditional expression), limit the
  versions that their code is checked against; all other code must work on every version.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MODULE_NAMES = frozenset({"trt", "tensorrt"})
OBJECT_CLASSES = {
    "builder": "Builder", "config": "IBuilderConfig", "builder_config": "IBuilderConfig",
    "network": "INetworkDefinition", "parser": "OnnxParser", "runtime": "Runtime",
    "engine": "ICudaEngine", "context": "IExecutionContext", "exec_context": "IExecutionContext",
    "profile": "IOptimizationProfile", "registry": "IPluginRegistry", "timing_cache": "ITimingCache",
    "layer": "ILayer", "tensor": "ITensor", "plan": "IHostMemory",
}
# Methods (on a TensorRT object or the module) whose result is a known TensorRT class.
FACTORIES = {
    "create_builder_config": "IBuilderConfig", "create_network": "INetworkDefinition",
    "create_optimization_profile": "IOptimizationProfile", "build_serialized_network": "IHostMemory",
    "deserialize_cuda_engine": "ICudaEngine", "create_execution_context": "IExecutionContext",
    "get_plugin_registry": "IPluginRegistry", "create_timing_cache": "ITimingCache",
    "get_timing_cache": "ITimingCache", "get_layer": "ILayer", "get_input": "ITensor",
    "get_output": "ITensor", "create_engine_inspector": "EngineInspector", "serialize": "IHostMemory",
}
Majors = tuple[int | None, int | None]  # inclusive; None = unbounded
ALL: Majors = (None, None)


@dataclass(frozen=True)
class Use:
    path: str  # "BuilderFlag.FP16", "IBuilderConfig.set_flag"
    majors: Majors
    where: str  # "export/engine.py:123"
    keywords: tuple[str, ...] = ()  # keyword arguments when the attribute is called

    def applies_to(self, major: int) -> bool:
        lo, hi = self.majors
        return (lo is None or major >= lo) and (hi is None or major <= hi)


def _intersect(a: Majors, b: Majors) -> Majors:
    lo = max((x for x in (a[0], b[0]) if x is not None), default=None)
    hi = min((x for x in (a[1], b[1]) if x is not None), default=None)
    return lo, hi


def _callee_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def _decorator_majors(node: ast.expr) -> Majors | None:
    if _callee_name(node) != "for_trt":
        return None
    kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}  # type: ignore[union-attr]
    return kw.get("min_major"), kw.get("max_major")


def _branch_majors(test: ast.expr) -> tuple[Majors, Majors] | None:
    """(majors of the true branch, of the false branch) for `[not] is_strongly_typed_only(trt)`."""
    negate = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
    if _callee_name(test.operand if negate else test) != "is_strongly_typed_only":  # type: ignore[attr-defined]
        return None
    new, old = (11, None), (None, 10)
    return (old, new) if negate else (new, old)


class _Collector(ast.NodeVisitor):
    def __init__(self, where: str) -> None:
        self.where = where
        self.majors: Majors = ALL
        self.scopes: list[dict[str, str | None]] = [{}]
        self.uses: list[Use] = []

    # --- what an expression is: ("module", "") / ("path", "BuilderFlag") / ("inst", "Builder")
    def _lookup(self, key: str) -> tuple[bool, str | None]:
        for scope in reversed(self.scopes):
            if key in scope:
                return True, scope[key]
        return False, None

    def _kind(self, node: ast.expr) -> tuple[str, str] | None:
        if isinstance(node, ast.Name):
            if node.id in MODULE_NAMES:
                return "module", ""
            known, cls = self._lookup(node.id)
            cls = cls if known else OBJECT_CLASSES.get(node.id.lstrip("_"))
            return ("inst", cls) if cls else None
        if isinstance(node, ast.Attribute):
            base = self._kind(node.value)
            if base and base[0] == "module":
                return "path", node.attr
            if base and base[0] == "path":
                return "path", f"{base[1]}.{node.attr}"
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                known, cls = self._lookup(f"self.{node.attr}")
                cls = cls if known else OBJECT_CLASSES.get(node.attr.lstrip("_"))
                return ("inst", cls) if cls else None
            return None
        if isinstance(node, ast.BoolOp):  # `profile or builder.create_optimization_profile()`
            return next((k for k in map(self._kind, node.values) if k and k[0] == "inst"), None)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = self._kind(node.func)
            if func and func[0] == "path" and "." not in func[1]:
                name = func[1]
                if name[:1].isupper():  # a class of the module: its constructor
                    return "inst", name
                return ("inst", FACTORIES[name]) if name in FACTORIES else None
            receiver = self._kind(node.func.value)
            if receiver and receiver[0] == "inst" and node.func.attr in FACTORIES:
                return "inst", FACTORIES[node.func.attr]
        return None

    # --- recording
    def _record(self, node: ast.Attribute, keywords: tuple[str, ...]) -> None:
        base = self._kind(node.value)
        if base is not None:
            path = node.attr if base[0] == "module" else f"{base[1]}.{node.attr}"
            self.uses.append(Use(path, self.majors, f"{self.where}:{node.lineno}", keywords))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._record(node, ())
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute):
            self._record(node.func, tuple(k.arg for k in node.keywords if k.arg))
            self.visit(node.func.value)
        else:
            self.visit(node.func)
        for child in [*node.args, *(k.value for k in node.keywords)]:
            self.visit(child)

    def _bind(self, target: ast.expr, value: ast.expr | None) -> None:
        """Type a variable by what it is assigned; unknown values leave the name table in charge."""
        kind = self._kind(value) if value is not None else None
        if not kind or kind[0] != "inst":
            return
        cls = kind[1]
        if isinstance(target, ast.Name):
            self.scopes[-1][target.id] = cls
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                and target.value.id == "self":
            self.scopes[0][f"self.{target.attr}"] = cls

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        for target in node.targets:
            self._bind(target, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.generic_visit(node)
        self._bind(node.target, node.value)

    # --- version paths
    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for dec in node.decorator_list:
            self.visit(dec)
        saved = self.majors
        for dec in node.decorator_list:
            majors = _decorator_majors(dec)
            if majors is not None:
                self.majors = _intersect(self.majors, majors)
        if isinstance(node, ast.ClassDef):
            for base in [*node.bases, *node.keywords]:
                self.visit(base)
        scope: dict[str, str | None] = {}
        if not isinstance(node, ast.ClassDef):
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                hint = ast.unparse(arg.annotation) if arg.annotation is not None else "Any"
                if hint not in ("Any", "object") and arg.arg not in MODULE_NAMES:
                    scope[arg.arg] = None  # `engine: Path` is not a TensorRT engine
        self.scopes.append(scope)
        if not isinstance(node, ast.ClassDef):
            self.visit(node.args)
            if node.returns is not None:
                self.visit(node.returns)
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        self.majors = saved

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped  # type: ignore[assignment]

    def _branches(self, node: ast.If | ast.IfExp) -> None:
        split = _branch_majors(node.test)
        if split is None:
            self.generic_visit(node)
            return
        self.visit(node.test)
        saved = self.majors
        for body, majors in ((node.body, split[0]), (node.orelse, split[1])):
            self.majors = _intersect(saved, majors)
            for child in body if isinstance(body, list) else [body]:
                self.visit(child)
        self.majors = saved

    visit_If = visit_IfExp = _branches  # type: ignore[assignment]


def collect_source(source: str, where: str) -> list[Use]:
    tree = ast.parse(source, filename=where)
    collector = _Collector(where)
    collector.visit(tree)
    return collector.uses


def mentions_tensorrt(source: str) -> bool:
    tree = ast.parse(source)
    return any(isinstance(n, ast.Name) and n.id in MODULE_NAMES for n in ast.walk(tree))


def collect_files(root: Path, folders: Iterable[str]) -> list[Use]:
    """Uses in every module under the folders that handles the tensorrt module at all, so that
    `config` or `engine` in unrelated code is never mistaken for a TensorRT object."""
    uses: list[Use] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            if mentions_tensorrt(source):
                uses += collect_source(source, str(path.relative_to(root)))
    return uses


def missing(uses: Iterable[Use], api: dict, major: int) -> Iterator[str]:
    """'where: trt.X.y (why)' for each use on this major version that the module's API lacks.

    `api` is dump_api.py's output: "paths" (name -> whether its attributes are listed) and
    "params" (callable -> parameter names, from pybind11's signatures).
    """
    paths, params = api["paths"], api.get("params", {})
    for use in uses:
        if not use.applies_to(major):
            continue
        parts = use.path.split(".")
        for i in range(1, len(parts) + 1):
            if parts[i - 1].startswith("_"):
                break  # dunders and private names are Python's, not TensorRT's API
            prefix = ".".join(parts[:i])
            if prefix not in paths:
                yield f"{use.where}: trt.{use.path} ({prefix} does not exist)"
                break
            if not paths[prefix]:
                break  # an enum member, method or property: its own attributes are not listed
        known = params.get(use.path)
        for kw in use.keywords:
            if known is not None and kw not in known:
                yield f"{use.where}: trt.{use.path}(..., {kw}=...) (its parameters are {', '.join(known)})"
