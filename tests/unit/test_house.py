"""The house rules of the code base: one registration mechanism, every component registered and spelled
consistently, no import cycle (counting imports inside functions), the runner short."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import nearmetal
from nearmetal.backends.base import BACKENDS, Backend
from nearmetal.backends.podmaps import LAYER_MAPPINGS
from nearmetal.doctor.base import CHECK_INFO, CHECKS
from nearmetal.host.leftovers import FINDERS
from nearmetal.layers import LAYERS, Layer
from nearmetal.plan.backend_options import BACKEND_OPTIONS
from nearmetal.registry import Registry
from nearmetal.report.figures import FIGURES
from nearmetal.report.tables import STUDY_TABLES
from nearmetal.workloads import WORKLOADS, Workload

SRC = Path(nearmetal.__file__).parent


def _classes(package: str, base: type) -> list[type]:
    found = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, prefix=f"{package}."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, base) and cls.__module__ == module.__name__ and "kind" in cls.__dict__:
                found.append(cls)
    return found


def test_every_layer_class_is_registered_under_the_kind_its_config_spells() -> None:
    classes = _classes("nearmetal.layers", Layer)
    assert classes, "no layer classes found"
    for cls in classes:
        assert LAYERS[cls.kind] is cls, cls
        assert cls.Config.model_fields["layer"].default == cls.kind, cls
    assert len(LAYERS) == len(classes)


def test_every_workload_class_is_registered_under_its_kind() -> None:
    classes = _classes("nearmetal.workloads", Workload)
    assert classes
    for cls in classes:
        assert WORKLOADS[cls.kind] is cls, cls
    assert len(WORKLOADS) == len(classes)


def test_every_registry_finds_its_components_without_a_list() -> None:
    assert {"local", "slurm", "kubernetes"} <= set(BACKENDS)
    assert "cpu-quota" in CHECKS and set(CHECKS) == set(CHECK_INFO)
    assert {"values", "loss"} <= set(FIGURES)
    assert {"time_slicing", "partitions", "scaling", "failover", "severed_mount", "fs_layers"} <= set(
        STUDY_TABLES
    )
    # the Kubernetes backend's layer mappings: one module each in backends/podmaps, each for a real layer kind
    assert {"cpu-quota", "pod", "runtime-class"} <= set(LAYER_MAPPINGS) <= set(LAYERS)
    finder_modules = {name.partition(":")[0] for name in FINDERS}
    assert {
        "nearmetal.host.cleanup",
        "nearmetal.layers.mounts",
        "nearmetal.backends.slurm.queue",
    } <= finder_modules
    for name in BACKENDS:  # a backend is its class: its name, its options (the plan's section of that name)
        cls = BACKENDS[name]
        assert issubclass(cls, Backend) and cls.name == name, name
        assert cls.Options is None or BACKEND_OPTIONS[name] is cls.Options, name


def test_backends_implement_the_typed_interface() -> None:
    from nearmetal.backends.kubernetes import KubernetesBackend
    from nearmetal.backends.local import LocalBackend
    from nearmetal.backends.slurm import SlurmBackend

    for cls in (LocalBackend, SlurmBackend, KubernetesBackend):
        assert issubclass(cls, Backend)
        assert not inspect.isabstract(cls), cls
    assert not LocalBackend.remote and SlurmBackend.remote and KubernetesBackend.remote


def test_a_new_module_registers_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a component is one new module: the registry imports every module of its package."""
    package = tmp_path / "nm_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(
        "from nearmetal.registry import Registry\nTHINGS = Registry('thing', packages=('nm_plugins',))\n"
    )
    (package / "one.py").write_text("from nm_plugins.base import THINGS\nTHINGS.add('one', 1)\n")
    (package / "two.py").write_text("from nm_plugins.base import THINGS\nTHINGS.add('two', 2, order=10)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        things = importlib.import_module("nm_plugins.base").THINGS
        assert list(things) == ["two", "one"]  # order first, then registration
        assert things["one"] == 1 and "two" in things and len(things) == 2
        with pytest.raises(RuntimeError, match="registered twice"):
            things.add("one", 3)
        with pytest.raises(nearmetal.errors.NearmetalError, match=r"(?s)unknown thing 'three'.*one, two"):
            things.get_or_fail("three")
    finally:
        for name in [m for m in sys.modules if m.startswith("nm_plugins")]:
            del sys.modules[name]


def test_registry_by_name_orders_alphabetically() -> None:
    registry: Registry[int] = Registry("number", by_name=True)
    registry.add("b", 2)
    registry.add("a", 1)
    assert list(registry) == ["a", "b"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module → the nearmetal modules it imports anywhere (inside functions too), except under
    ``if TYPE_CHECKING:`` (which never runs)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(node)
            for branch in ast.walk(tree)
            if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
            for stmt in branch.body
            for node in ast.walk(stmt)
        }
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    graph = _import_graph()
    assert len(graph) > 100  # the whole package was read
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_write_side_does_not_import_the_read_side() -> None:
    graph = _import_graph()
    write_side = ["nearmetal.run.runner", *[m for m in graph if m.startswith("nearmetal.run.")]]
    read_side = {"nearmetal.api", "nearmetal.results.compare"} | {
        m for m in graph if m.startswith("nearmetal.report")
    }
    for module in write_side:
        assert not graph[module] & read_side, module


def test_the_runner_is_short_orchestration() -> None:
    assert len((SRC / "run" / "runner.py").read_text().splitlines()) < 350


def test_tests_find_the_repository_through_support_paths() -> None:
    """A test that computed the checkout from its own file broke when tests moved into tiers (the Kubernetes
    node tests looked for tests/scripts/…): tests name REPO, DATA and SHARED from tests/support/paths.py."""
    tests = SRC.parents[1] / "tests"
    offenders = [
        str(path.relative_to(tests))
        for path in sorted(tests.rglob("test_*.py"))
        if re.search(r"Path\(__file__\)(\.resolve\(\))?\.parents?\b", path.read_text())
    ]
    assert offenders == []
