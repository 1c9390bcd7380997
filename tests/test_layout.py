"""The package's layout: no import circles in src/ and no module reaching for another's private names.

Every import counts, wherever it stands (a function-level or TYPE_CHECKING import
still ties two modules together), so each module can be read after the ones it uses.
"""

from __future__ import annotations

import ast
from pathlib import Path

import moonxp

PACKAGE = Path(moonxp.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every import of moonxp's own modules in `path`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "moonxp"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source.split(".")[0] != "moonxp":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule, None) if submodule in known else (source, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {source for source, _ in _imports(name, path, set(modules)) if source != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_src_has_no_import_circles():
    graph = _graph()
    assert {"moonxp.app.cli", "moonxp.engine.training", "moonxp.app.model"} <= set(graph)
    assert "moonxp.app.model" in graph["moonxp.app.job"]  # the graph sees relative imports
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    private = [f"{name} imports {source}.{taken}" for name, path in modules.items()
               for source, taken in _imports(name, path, set(modules))
               if taken is not None and taken.startswith("_") and not taken.startswith("__") and source != name]
    assert private == []


def test_nothing_imports_the_entry_point():
    graph = _graph()
    assert [name for name, sources in graph.items() if "moonxp.__main__" in sources] == []
