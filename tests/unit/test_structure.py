"""The package's shape: no import cycle among its modules (imports made only for type checking,
or inside functions, count too) and no module too long to read as one piece."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import prefork_wasm

PACKAGE = Path(prefork_wasm.__file__).parent
MAX_LINES = 800


def module_name(path: Path) -> str:
    """'config' for prefork_wasm/config.py, 'sub' for prefork_wasm/sub/__init__.py, 'sub.x' below it."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if path != PACKAGE / "__init__.py"}
MODULES = sorted(FILES)


def imports(source: str, package: list[str]) -> set[str]:
    """Every name under prefork_wasm that `source` (a module in `package`) may import, anywhere
    in its text (an `if TYPE_CHECKING:` block or a function body included), relative or absolute;
    'from .pkg import x' gives both 'pkg' and 'pkg.x', since x may be a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = [*package[: len(package) + 1 - node.level], *(node.module or "").split(".")]
            elif (node.module or "").split(".")[0] == "prefork_wasm":
                base = (node.module or "").split(".")[1:]
            else:
                continue
            stem = ".".join(part for part in base if part)
            found.update([stem, *(f"{stem}.{alias.name}".lstrip(".") for alias in node.names)])
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix("prefork_wasm.") for alias in node.names)
    return found


def imported(module: str) -> set[str]:
    """The package's modules that `module` imports."""
    path = FILES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    return imports(path.read_text(encoding="utf-8"), package) & set(MODULES)


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


def test_imports_count_type_checking_and_function_level_ones() -> None:
    source = """
from typing import TYPE_CHECKING
from . import a
from .b import name
from ..up import c
import prefork_wasm.d
if TYPE_CHECKING:
    from .e import Type
def f():
    from prefork_wasm.g import h
"""
    found = imports(source, ["sub"])
    assert {"sub.a", "sub.b", "up", "up.c", "d", "sub.e", "g", "g.h"} <= found
    assert "typing" not in found and "TYPE_CHECKING" not in found


def test_cycles_are_the_circular_components() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("module", MODULES)
def test_module_is_in_no_import_cycle(module: str) -> None:
    circle = next((cycle for cycle in CYCLES if module in cycle), None)
    assert circle is None, f"{module} is in an import cycle with {', '.join(m for m in circle if m != module)}"


@pytest.mark.parametrize("module", MODULES)
def test_module_is_at_most_800_lines(module: str) -> None:
    lines = len(FILES[module].read_text(encoding="utf-8").splitlines())
    name = FILES[module].relative_to(PACKAGE)
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by responsibility (at most {MAX_LINES})"
