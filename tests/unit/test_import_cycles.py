"""No import circle anywhere in the repository: the daemon (daemon/ue_resync), bench, support and
tests. Every import counts, at module level or inside a function, under `if TYPE_CHECKING:` too
(a circle that type checking alone closes is still two modules that cannot be read apart); the
standard library's and third parties' modules are not ours and are left out.

`from package import name` is an edge to `package` and, when it is one of our modules, to
`package.name`. Importing `a.b.c` runs `a/__init__.py` too; that implicit edge is left out: our
package `__init__` files import nothing of their own package, so it cannot close a circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where each of our top-level packages lives: import name → directory holding it.
PACKAGES = {"ue_resync": ROOT / "daemon", "bench": ROOT, "support": ROOT, "tests": ROOT}


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    """Every module of ours, by dotted name."""
    found = {}
    for package, base in PACKAGES.items():
        for path in sorted((base / package).rglob("*.py")):
            found[module_name(path, base)] = path
    return found


def imported(tree: ast.Module, name: str, is_package: bool) -> Iterator[str]:
    """The dotted names `tree` (module `name`) imports, wherever the import statement stands."""
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y, from .. import z
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield from (f"{source}.{alias.name}" for alias in node.names)
            yield source


def graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports."""
    modules = our_modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for dotted in imported(tree, name, path.name == "__init__.py"):
            # Anything else is not ours, or a function or class imported from a module of ours.
            if dotted in modules:
                targets.add(dotted)
        targets.discard(name)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The shortest circle through each module that is on one, each circle once, as a path
    whose last module imports its first. The groups of modules that import each other are
    found first (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    found: list[list[str]] = []
    for group in groups:
        for start in sorted(group):
            circle = _circle_from(start, group, edges)
            first = circle.index(min(circle))
            circle = circle[first:] + circle[:first]  # one rotation of each circle
            if circle not in found:
                found.append(circle)
    return found


def _circle_from(start: str, group: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest circle from `start` back to itself, inside its group."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & group):
                if w == start:
                    return paths[v]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle through {start} in {sorted(group)}")


def test_the_scan_sees_the_tree():
    edges = graph()
    assert {"ue_resync.worker", "bench.common", "support.postgres", "tests.conftest"} <= set(edges)
    assert "support.env" in edges["support.processes"]


def test_a_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"], ["a", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    found = cycles(graph())
    assert not found, "import circles:\n" + "\n".join("  " + " -> ".join([*c, c[0]]) for c in found)
