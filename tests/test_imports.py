"""No import circle inside recutils: no two modules import each other, directly or through a chain.

The graph is read statically (ast over recutils/*.py), without importing anything. Every import
statement counts, wherever it stands: at module level, inside a function, under ``if
TYPE_CHECKING``. An import inside a function only defers the circle to the first call; the two
modules still cannot be read, tested or moved apart, which is what the rule is for.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "recutils"


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """The recutils modules that ``path`` imports anywhere in its source (names without "recutils.")."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .x import y
                base = node.module or ""
                names = [base] if base else [alias.name for alias in node.names]
                names = [f"recutils.{name}" for name in names]
            elif node.module == "recutils":  # from recutils import x (x a module)
                names = [f"recutils.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "recutils" and len(parts) > 1 and parts[1] in modules:
                found.add(parts[1])
    found.discard(path.stem)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name -> the recutils modules it imports (``__init__`` is the package, not a module)."""
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    return {name: module_imports(package / f"{name}.py", modules) for name in sorted(modules)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules, as a path that returns to its start.

    Tarjan's algorithm finds the groups; within each, a breadth-first search from its first
    module (alphabetically) back to itself names the shortest circle through it.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    found = []
    for group in sorted(groups):
        start, inside = group[0], set(group)
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:
            following = []
            for node in frontier:
                for target in sorted(graph[node] & inside):
                    if target not in came_from:
                        came_from[target] = node
                        following.append(target)
            frontier = following
        path = [start]
        while came_from[path[-1]] != start:
            path.append(came_from[path[-1]])
        found.append([start, *reversed(path[1:]), start])
    return found


def test_no_module_imports_itself_through_others():
    found = cycles(import_graph())
    assert not found, "import circles in recutils (function-level imports count): " + "; ".join(
        " -> ".join(f"recutils.{m}" for m in circle) for circle in found
    )


def test_the_graph_reads_every_kind_of_import(tmp_path):
    package = tmp_path / "recutils"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from recutils.b import g\n")
    (package / "b.py").write_text("import recutils.c\n")
    (package / "c.py").write_text("from recutils import a\nfrom . import d\nfrom .e import x\n")
    (package / "d.py").write_text("import os\nfrom typing import TYPE_CHECKING\n")
    (package / "e.py").write_text("from recutils.e import y  # itself: not an edge\n")
    assert import_graph(package) == {"a": {"b"}, "b": {"c"}, "c": {"a", "d", "e"}, "d": set(), "e": set()}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b", "a"], ["c", "d", "c"]]),
    ],
)
def test_cycles_names_each_circle(graph, expected):
    assert cycles(graph) == expected
