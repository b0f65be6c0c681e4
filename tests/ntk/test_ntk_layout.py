"""The NTK package layout: one module per method, no import circles, old import paths intact."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import onnx_run.ntk

NTK_DIR = Path(onnx_run.ntk.__file__).parent
METHOD_MODULES = ("arguments", "factors", "exact", "structured", "estimators")
# names other code imported from onnx_run.ntk.kernels before the split, with their new homes
OLD_KERNELS_NAMES = {
    "NTK_METHODS": "kernels",
    "FactorSketch": "factors",
    "KernelFactors": "factors",
    "cross_kernel": "factors",
    "Reduce": "arguments",
    "check_samplewise": "arguments",
    "flatten_outputs": "arguments",
    "resolve_params": "arguments",
    "kernel_factors": "structured",
    "tangent_features": "estimators",
    "empirical_ntk_full": "exact",
    "empirical_ntk": "kernels",
    "empirical_ntk_with_outputs": "kernels",
    "ntk_factors": "kernels",
}
# besides torch, onnx_run.precision/errors and onnx_run.ntk.* (stdlib is always fine)
EXTRA_ALLOWED: dict[str, set[str]] = {}


def _imports(module: str) -> list[str]:
    """Every module imported anywhere in onnx_run/ntk/<module>.py, function bodies included."""
    tree = ast.parse((NTK_DIR / f"{module}.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}.py: use absolute imports"
            found.append(node.module or "")
    return found


def _modules() -> list[str]:
    return sorted(p.stem for p in NTK_DIR.glob("*.py") if p.stem != "__init__")


def test_old_kernels_import_paths_are_the_new_objects():
    kernels = importlib.import_module("onnx_run.ntk.kernels")
    for name, home in OLD_KERNELS_NAMES.items():
        new = getattr(importlib.import_module(f"onnx_run.ntk.{home}"), name)
        assert getattr(kernels, name) is new, name
    for name in onnx_run.ntk.__all__:
        assert hasattr(onnx_run.ntk, name)


def test_ntk_modules_import_only_torch_precision_errors_and_each_other():
    allowed_onnx = {"onnx_run.precision", "onnx_run.errors", "onnx_run.progress"}
    for mod in _modules():
        for name in _imports(mod):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or top == "torch":
                continue
            if top in EXTRA_ALLOWED.get(mod, set()):
                continue
            assert name in allowed_onnx or name.startswith("onnx_run.ntk."), f"{mod}.py imports {name}"
            assert name != "onnx_run.ntk", f"{mod}.py imports the package onnx_run.ntk itself"


def test_no_import_circles_and_kernels_on_top_of_the_methods():
    graph = {mod: {n.rsplit(".", 1)[1] for n in _imports(mod) if n.startswith("onnx_run.ntk.")} for mod in _modules()}
    for mod in METHOD_MODULES:
        assert "kernels" not in graph[mod], f"{mod}.py imports kernels.py"
    assert set(METHOD_MODULES) <= graph["kernels"]  # kernels.py dispatches over them all

    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        if state.get(mod) == 2:
            return
        assert state.get(mod) != 1, "import circle: " + " -> ".join([*path, mod])
        state[mod] = 1
        for dep in sorted(graph[mod]):
            visit(dep, [*path, mod])
        state[mod] = 2

    for mod in graph:
        visit(mod, [])
