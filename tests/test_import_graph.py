"""The house's shape, checked from the imports: no circles, no module importing a layer above it.

Layers, lowest first (DESIGN.md; docs/guide.md "Where the code lives"); a module may import its
own layer or below, and no two modules may reach each other:

    contract (errors, hookspecs, components, precision, progress, files, plotstyle) <- plugins, config, rundir
    <- physics <- ntk
    <- distill, tasks <- train <- fabrication, estimate <- pipeline <- report <- compare <- cli, testing, scaffold

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import is
still an arrow. Plugins sit beside the core: no circles inside a plugin, and a plugin imports
the core and never another plugin.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE_LAYERS: tuple[tuple[str, ...], ...] = (
    ("onnx_run", "onnx_run.errors", "onnx_run.hookspecs", "onnx_run.components", "onnx_run.precision",
     "onnx_run.progress", "onnx_run.files", "onnx_run.plotstyle", "onnx_run.lazy"),
    ("onnx_run.plugins", "onnx_run.config", "onnx_run.rundir"),
    ("onnx_run.physics",),
    ("onnx_run.ntk",),
    ("onnx_run.distill", "onnx_run.tasks"),
    ("onnx_run.train",),
    ("onnx_run.fabrication", "onnx_run.estimate"),
    ("onnx_run.pipeline",),
    ("onnx_run.report",),
    ("onnx_run.compare",),
    ("onnx_run.cli", "onnx_run.__main__", "onnx_run.testing", "onnx_run.scaffold"),
)

PLUGIN_PACKAGES = {
    "onnx_run_optics_4f": ROOT / "plugins/optics_4f",
    "onnx_run_optics_diffractive": ROOT / "plugins/optics_diffractive",
    "onnx_run_optics_metasurface": ROOT / "plugins/optics_metasurface",
    "onnx_run_tasks_segmentation": ROOT / "plugins/tasks_segmentation",
    "onnx_run_hello": ROOT / "examples/onnx-run-hello",
}


def module_names(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports anywhere in its file.

    ``from a.b import c`` is an arrow to ``a.b.c`` when that is a module, else to ``a.b``
    (importing a submodule through its package is not an arrow to the package's own code)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    return {m for m in found if m in known and m != name}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return list(err.args[1])
    return None


def layer_of(module: str, layers=CORE_LAYERS) -> int:
    """Index of the layer holding ``module`` (by its longest listed prefix)."""
    best, best_len = None, -1
    for i, layer in enumerate(layers):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to CORE_LAYERS (and to DESIGN's order in the docs)")
    return best


def upward_imports(graph: dict[str, set[str]], layers=CORE_LAYERS) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a, layers)}) imports {b} (layer {layer_of(b, layers)})"
                  for a, targets in graph.items() for b in targets if layer_of(b, layers) > layer_of(a, layers))


@pytest.fixture(scope="module")
def core_graph() -> dict[str, set[str]]:
    return import_graph(module_names(ROOT / "core", "onnx_run"))


def test_core_has_no_import_circle(core_graph):
    cycle = find_cycle(core_graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_core_imports_only_its_own_layer_or_below(core_graph):
    assert upward_imports(core_graph) == []


def test_every_core_module_has_a_layer(core_graph):
    for module in core_graph:
        layer_of(module)


@pytest.mark.parametrize("package", sorted(PLUGIN_PACKAGES))
def test_plugin_has_no_circle_and_imports_no_other_plugin(package):
    modules = module_names(PLUGIN_PACKAGES[package], package)
    assert modules, f"{package}: no modules found"
    graph = import_graph(modules)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)
    others = {p for p in PLUGIN_PACKAGES if p != package}
    for name, path in modules.items():
        tops = {m.split(".")[0] for m in imported_modules(name, path, _all_modules(others) | set(others))}
        assert not tops & others, f"{name} imports another plugin: {sorted(tops & others)}"


def _all_modules(packages) -> set[str]:
    return {m for p in packages for m in module_names(PLUGIN_PACKAGES[p], p)}


def test_optics_export_reads_the_frontend_never_the_reverse():
    for package in ("onnx_run_optics_diffractive", "onnx_run_optics_metasurface"):
        graph = import_graph(module_names(PLUGIN_PACKAGES[package], package))
        assert f"{package}.export" not in graph[f"{package}.frontend"]


# -- the checker itself catches what it must --------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_names(tmp_path, "pkg")


def test_checker_finds_a_lazy_circle_and_an_upward_import(tmp_path):
    modules = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg.high import g\n",
        "pkg/high.py": "from . import low\n",
        "pkg/sub/__init__.py": "from pkg.sub.leaf import x\n",
        "pkg/sub/leaf.py": "from pkg.sub import other\nx = 1\n",
        "pkg/sub/other.py": "",
    })
    graph = import_graph(modules)
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.high"] == {"pkg.low"}
    assert set(find_cycle(graph)) == {"pkg.low", "pkg.high"}
    # a submodule importing a sibling through its package is no arrow to the package
    assert graph["pkg.sub.leaf"] == {"pkg.sub.other"}
    layers = (("pkg", "pkg.low", "pkg.sub"), ("pkg.high",))
    assert upward_imports({"pkg.low": {"pkg.high"}}, layers) == ["pkg.low (layer 0) imports pkg.high (layer 1)"]
    assert upward_imports({"pkg.high": {"pkg.low"}}, layers) == []


def test_checker_counts_type_checking_imports(tmp_path):
    modules = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
        "pkg/b.py": "import pkg.a\n",
    })
    assert find_cycle(import_graph(modules)) is not None
