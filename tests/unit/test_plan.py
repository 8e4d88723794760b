"""Plan loading: validation with file:line field-path errors, expansion into cells and trials."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import BAD_PLAN

from nearmetal.errors import PlanError
from nearmetal.plan import load_plan, parse_duration, parse_plan_text, parse_target
from nearmetal.run.runner import schedule

GOOD = """
name: demo
workloads:
  lammps:
    kind: lammps
    params: {ranks: 2, atoms: 4000, steps: 50}
  load:
    kind: stress-ng
    params: {workers: 1, ops: 100}
variants:
  bare-metal: []
  limit-1.2: [{layer: cpu-quota, cpus: 1.2}]
  one-rank:
    layers: [{layer: cpu-quota, cpus: 1.0}]
    params: {lammps.ranks: 1}
    only: [lammps]
baseline: bare-metal
matrix:
  lammps.steps: [50, 100]
repeats: 3
warmup: 1
timeout: 5m
"""


def test_good_plan_expands_to_cells() -> None:
    loaded = parse_plan_text(GOOD, "demo.yaml")
    # lammps: 2 matrix points × 3 variants; stress-ng: 1 point × 2 variants (one-rank is lammps only)
    assert len(loaded.cells) == 8
    one_rank = [c for c in loaded.cells if c.variant == "one-rank"]
    assert {c.params.ranks for c in one_rank} == {1}
    assert {c.params.steps for c in one_rank} == {50, 100}
    assert loaded.plan.timeout == 300
    assert loaded.plan.repeats.min == loaded.plan.repeats.max == 3
    baseline_cells = [c for c in loaded.cells if c.is_baseline]
    assert {c.variant for c in baseline_cells} == {"bare-metal"}
    # cells compared with each other share workload and matrix point, not the variant's overrides
    by_key = {}
    for c in loaded.cells:
        by_key.setdefault(c.comparison_key, set()).add(c.variant)
    assert {frozenset(v) for v in by_key.values()} == {
        frozenset({"bare-metal", "limit-1.2", "one-rank"}),
        frozenset({"bare-metal", "limit-1.2"}),
    }


def test_ids_are_deterministic_and_distinct() -> None:
    a = parse_plan_text(GOOD).cells
    b = parse_plan_text(GOOD).cells
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    assert len({c.cell_id for c in a}) == len(a)
    trials = schedule(a, "interleaved", warmup=1, first_block=0, blocks=3, seed=7)
    assert len(trials) == len(a) * 4
    assert len({t.key for t in trials}) == len(trials)
    again = schedule(a, "interleaved", warmup=1, first_block=0, blocks=3, seed=7)
    assert [t.key for t in trials] == [t.key for t in again]


def test_interleaved_blocks_hold_every_cell_once() -> None:
    cells = parse_plan_text(GOOD).cells
    trials = schedule(cells, "interleaved", warmup=0, first_block=0, blocks=4, seed=1)
    for block in range(4):
        in_block = [t.cell.cell_id for t in trials[block * len(cells) : (block + 1) * len(cells)]]
        assert sorted(in_block) == sorted(c.cell_id for c in cells)
    orders = {tuple(t.cell.cell_id for t in trials[b * len(cells) : (b + 1) * len(cells)]) for b in range(4)}
    assert len(orders) > 1, "blocks should be shuffled differently"


def test_sequential_order_runs_cell_after_cell() -> None:
    cells = parse_plan_text(GOOD).cells
    trials = schedule(cells, "sequential", warmup=0, first_block=0, blocks=3, seed=1)
    assert [t.cell.cell_id for t in trials] == [c.cell_id for c in cells for _ in range(3)]


def test_bad_values_are_reported_with_line_and_path() -> None:
    with pytest.raises(PlanError) as info:
        parse_plan_text(BAD_PLAN.lstrip(), "plan.yaml")
    problems = info.value.problems
    assert "plan.yaml:5 workloads.lammps.params.ranks: must be ≥ 0" in problems
    assert "plan.yaml:9 variants.limited[0].cpus: must be > 0" in problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nvariants: {a: []}\n", "plan.yaml:1 workloads: required"),
        ("name: x\nworkloads: {w: {kind: nope}}\nvariants: {a: []}\n", "plan.yaml:2 workloads.w"),
        (
            "name: x\nworkloads:\n  w: {kind: stress-ng}\nvariants: {a: []}\nmatrix:\n  w.nope: [1]\n",
            "plan.yaml:6 matrix.w.nope: workload 'w' (stress-ng) has no parameter 'nope'",
        ),
        (
            "name: x\nworkloads:\n  w: {kind: stress-ng}\nvariants: {a: []}\nbaseline: zz\n",
            "plan.yaml:5 baseline: 'zz' is not a variant",
        ),
        (
            "name: x\nworkloads:\n  w: {kind: stress-ng}\nvariants: {a: []}\nmatrix:\n  workers: [1, -3]\n",
            "plan.yaml:6 matrix.workers[1]: must be ≥ 0",
        ),
        (
            "name: x\nworkloads:\n  w: {kind: stress-ng}\nvariants: {a: []}\ntimeout: soon\n",
            "plan.yaml:5 timeout: 'soon' is not a duration",
        ),
        ("name: x\nworkloads: [1, 2\n", "plan.yaml:3: YAML syntax error"),
        ("- just\n- a list\n", "plan.yaml:1 (plan): must be a mapping"),
        (
            "name: x\nworkloads:\n  w: {kind: stress-ng}\nvariants: {a: []}\nrepeats: {min: 5, max: 2}\n",
            "plan.yaml:5 repeats: max (2) must be ≥ min (5)",
        ),
        (
            "name: x\nworkloads:\n  w: {kind: stress-ng}\nvariants: {a: []}\nunknown_key: 1\n",
            "plan.yaml:5 unknown_key: unknown field",
        ),
    ],
)
def test_each_problem_is_one_actionable_line(text: str, expected: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan_text(text, "plan.yaml")
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
    assert all("\n" not in p and "Traceback" not in p for p in info.value.problems)


def test_python_object_tags_are_refused() -> None:
    text = "name: !!python/object/apply:os.system ['echo pwned']\nworkloads: {}\nvariants: {}\n"
    with pytest.raises(PlanError) as info:
        parse_plan_text(text, "evil.yaml")
    assert "evil.yaml:1" in info.value.problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no such plan file"):
        load_plan(tmp_path / "absent.yaml")


def test_durations_and_targets() -> None:
    assert parse_duration("300s") == 300
    assert parse_duration("5m") == 300
    assert parse_duration("250ms") == 0.25
    assert parse_duration(12) == 12
    assert parse_target("±2%") == pytest.approx(0.02)
    assert parse_target("1.5%") == pytest.approx(0.015)
    with pytest.raises(ValueError):
        parse_duration("-3s")
    with pytest.raises(ValueError):
        parse_target("200%")


def test_a_matrix_value_given_twice_is_refused() -> None:
    # found by benchmarks/fuzz_plans.py: the repeated value made the same cell twice
    text = "name: x\nworkloads: {s: {kind: stress-ng}}\nvariants: {a: []}\nmatrix: {s.workers: [1, 2, 1]}\n"
    with pytest.raises(PlanError) as info:
        parse_plan_text(text, "m.yaml")
    assert info.value.problems == ["m.yaml:4 matrix.s.workers[2]: the value 1 appears twice"]
