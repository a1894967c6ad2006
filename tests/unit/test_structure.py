"""The package's shape: no import cycle among its modules (imports made only for type checking,
or inside functions, count too) and no module too long to read as one piece."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import prefork_wasm

PACKAGE = Path(prefork_wasm.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")
MAX_LINES = 800


def imported(module: str) -> set[str]:
    """The package's modules that `module` imports anywhere in its text (an `if TYPE_CHECKING:`
    block or a function body included), relative or absolute."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            absolute = node.level == 0 and node.module is not None and node.module.startswith("prefork_wasm")
            if not (node.level == 1 or absolute):
                continue
            base = (node.module or "").removeprefix("prefork_wasm").lstrip(".")
            found.update([base] if base else (alias.name for alias in node.names))
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("prefork_wasm."))
    return {name.split(".")[0] for name in found} & set(MODULES)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing
    itself), each sorted: every module in one reaches every other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


GRAPH = {module: imported(module) for module in MODULES}
CYCLES = cycles(GRAPH)


def test_cycles_are_the_circular_components() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("module", MODULES)
def test_module_is_in_no_import_cycle(module: str) -> None:
    circle = next((cycle for cycle in CYCLES if module in cycle), None)
    assert circle is None, f"{module} is in an import cycle with {', '.join(m for m in circle if m != module)}"


@pytest.mark.parametrize("module", MODULES)
def test_module_is_at_most_800_lines(module: str) -> None:
    lines = len((PACKAGE / f"{module}.py").read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}.py has {lines} lines; split it by responsibility (at most {MAX_LINES})"
