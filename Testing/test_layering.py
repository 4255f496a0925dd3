"""The engine's layers, read from the source: no import cycle, no Slicer/Qt in the core.

Layers, lowest first: the core (every module outside ``mrml/``, ``cli/`` and ``web/``:
numpy, SimpleITK, vtk and the field's libraries), ``mrml/`` (scene nodes <-> stage data, on
slicer-core), then the front ends ``cli/`` and ``web/``. Imports inside functions count: a
function-level import that hides a cycle is a cycle. In the core and ``mrml/`` the engine's
own modules are imported at the top of files; the front ends may defer optional parts
(slicer-core for the scene, trame for the page) to the command that needs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "MESCCAnalyzer" / "MESCCAnalyzerLib"
FRONT_ENDS = ("cli", "web")
FORBIDDEN_IN_CORE = ("slicer", "qt", "ctk", "trame", "trame_slicer", "slicer_layer_dm")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("mrml", *FRONT_ENDS) else "core"


def imports_of(path: Path):
    """(imported module, line, at top level) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from . import x" may name a module: keep both candidates.
            names = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            found.append((name, node.lineno, id(node) in top_level))
    return found


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def internal_graph(*, top_level_only: bool = False) -> dict[str, set[str]]:
    modules = package_modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, top in imports_of(path):
            if target in modules and target != name and (top or not top_level_only):
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_engine_has_no_import_cycle_even_through_imports_inside_functions():
    # Package __init__ files that only name their submodules are not edges of a cycle.
    graph = internal_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_modules_import_neither_slicer_nor_qt_nor_the_upper_layers():
    offences = []
    for name, path in package_modules().items():
        if layer(name) != "core":
            continue
        for target, line, _ in imports_of(path):
            root = target.split(".")[0]
            upper = target.startswith("MESCCAnalyzerLib.") and layer(target) != "core"
            if root in FORBIDDEN_IN_CORE or upper:
                offences.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert offences == []


def test_mrml_does_not_reach_up_into_the_front_ends():
    offences = [
        f"{path.relative_to(PACKAGE)}:{line} imports {target}"
        for name, path in package_modules().items()
        if layer(name) == "mrml"
        for target, line, _ in imports_of(path)
        if target.startswith("MESCCAnalyzerLib.") and layer(target) in FRONT_ENDS
    ]
    assert offences == []


@pytest.mark.parametrize("which", ["core", "mrml"])
def test_engine_modules_import_each_other_at_the_top_of_the_file(which):
    modules = package_modules()
    offences = [
        f"{path.relative_to(PACKAGE)}:{line} imports {target} inside a function"
        for name, path in modules.items()
        if layer(name) == which
        for target, line, top in imports_of(path)
        if not top and target in modules
    ]
    assert offences == []
