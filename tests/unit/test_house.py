"""The house rules of the code base: one registration mechanism, every component registered and spelled
consistently, no import cycle (counting imports inside functions), the runner short."""

from __future__ import annotations

import importlib
import inspect
import itertools
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sourcetree import (
    Edge,
    import_edges,
    module_graph,
    modules,
    package_edges,
    strongly_connected,
    top_package,
)

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


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    graph = module_graph()
    assert len(graph) > 100  # the whole package was read
    assert strongly_connected(graph) == []


def _shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """start → … → start, fewest edges (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return []


def _cycle_report(
    component: list[str], graph: dict[str, set[str]], edges: dict[tuple[str, str], list[Edge]]
) -> str:
    """Each member's shortest cycle, every edge of it with the imports that make it (module:line)."""
    members = set(component)
    inner = {a: graph[a] & members for a in component}
    lines = [f"packages {', '.join(component)} import each other:"]
    seen: set[tuple[str, ...]] = set()
    for start in component:
        cycle = _shortest_cycle(inner, start)
        turn = cycle.index(min(cycle[:-1]))
        key = tuple(cycle[turn:-1] + cycle[:turn])
        if key in seen:
            continue
        seen.add(key)
        lines.append("  cycle " + " → ".join(cycle))
        for a, b in itertools.pairwise(cycle):
            sites = sorted({f"{e.source}:{e.line} imports {e.target}" for e in edges[(a, b)]})
            more = f" (+{len(sites) - 3} more)" if len(sites) > 3 else ""
            lines.append(f"    {a} → {b}: {'; '.join(sites[:3])}{more}")
    return "\n".join(lines)


def test_no_import_cycle_between_top_level_packages() -> None:
    """The packages (analysis, backends, layers, store …; a loose module is its own node) form a layered
    whole: each can be read, tested and replaced knowing only what is below it. Imports inside functions
    count; those under ``if TYPE_CHECKING:`` do not."""
    edges = package_edges()
    graph: dict[str, set[str]] = {top_package(m): set() for m in modules()}
    for a, b in edges:
        graph[a].add(b)
    assert {"analysis", "backends", "layers", "store", "workloads", "api"} <= set(graph)
    knots = strongly_connected(graph)
    assert not knots, "\n".join(_cycle_report(k, graph, edges) for k in knots)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set(), "c": {"c"}}) == []
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}}
    assert _shortest_cycle(graph, "c") == ["c", "a", "b", "c"]
    assert _shortest_cycle(graph, "a") == ["a", "b", "a"]


def test_the_import_graph_sees_imports_inside_functions_but_not_type_checking_ones() -> None:
    edges = {(e.source, e.target) for e in import_edges()}
    # api.py imports the tidy rows inside Results.to_pandas, and Results only for type checking in rows.py
    assert ("nearmetal.api", "nearmetal.rows") in edges
    assert ("nearmetal.rows", "nearmetal.api") not in edges


def test_the_write_side_does_not_import_the_read_side() -> None:
    graph = module_graph()
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


HEAVY = ("sqlalchemy", "scipy", "numpy", "pandas", "matplotlib", "plotly", "kubernetes", "torch")


def test_reading_the_layer_and_workload_registries_imports_no_heavy_library() -> None:
    """Reading ``LAYERS``/``WORKLOADS`` (names, metadata, config models: what plan loading, ``--help`` and
    the plan schema need) imports every module of both packages, so none may import the store, the
    statistics or a plotting library at top level (registry.py's rule); a fresh interpreter shows it."""
    code = f"""
import sys
from nearmetal.layers import LAYERS
from nearmetal.workloads import WORKLOADS
for name in LAYERS:
    LAYERS[name].Config.model_json_schema()
    LAYERS.info(name)
for name in WORKLOADS:
    WORKLOADS[name].Params.model_json_schema()
    WORKLOADS.info(name)
assert len(LAYERS) > 10 and len(WORKLOADS) > 10
print(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
