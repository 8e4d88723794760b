"""nearmetal's own source as syntax trees, parsed once per test session and shared by the house tests (the
import graphs, the shell-string scan): each reads the trees, none parses a file again."""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nearmetal

SRC = Path(nearmetal.__file__).parent


@dataclass(frozen=True)
class Module:
    name: str  # nearmetal.layers.base
    path: Path
    tree: ast.Module


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line`` (of ``source``'s file)."""

    source: str
    target: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Module]:
    """Every module of the package, by dotted name, parsed once."""
    out: dict[str, Module] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = module_name(path)
        out[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return out


def _typing_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (which never runs)."""
    return {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for stmt in branch.body
        for node in ast.walk(stmt)
    }


@functools.cache
def import_edges() -> tuple[Edge, ...]:
    """Every import of one nearmetal module by another, anywhere in the file (inside functions too), except
    under ``if TYPE_CHECKING:``. ``from nearmetal.x import y`` names ``nearmetal.x.y`` when that is a module."""
    known = modules()
    edges: list[Edge] = []
    for name, module in known.items():
        skip = _typing_only(module.tree)
        package = name if module.path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(module.tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    targets.append(target if target in known else base)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            edges += [Edge(name, t, node.lineno) for t in targets if t in known and t != name]
    return tuple(edges)


def module_graph() -> dict[str, set[str]]:
    """Module → the nearmetal modules it imports."""
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for edge in import_edges():
        graph[edge.source].add(edge.target)
    return graph


def top_package(module: str) -> str:
    """``nearmetal.layers.base`` → ``layers``; a loose module (``nearmetal.api``) is its own node, and
    ``nearmetal`` itself (``__init__``) is ``nearmetal``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_edges() -> dict[tuple[str, str], list[Edge]]:
    """(importing package, imported package) → the module imports that make that edge."""
    out: dict[tuple[str, str], list[Edge]] = {}
    for edge in import_edges():
        a, b = top_package(edge.source), top_package(edge.target)
        if a != b:
            out.setdefault((a, b), []).append(edge)
    return out


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return sorted(found)
