"""``check`` and ``run`` show every problem of a plan in one pass (issue 30): field errors and the
cross-references (a wrong baseline, an override or ``only`` naming an unknown workload) together, each
mistyped name with the closest known one ("did you mean")."""

from __future__ import annotations

import textwrap

import pytest

from nearmetal.errors import PlanError
from nearmetal.plan import parse_plan_text
from nearmetal.plan.suggest import did_you_mean

TYPOS = textwrap.dedent(
    """\
    name: typos
    workloads:
      lammps: {kind: lammps, params: {ranks: 2, stpes: 100}}
    variants:
      bare-metal: []
      quota: [{layer: cpu-qouta, cpus: 0.8}]
      other:
        layers: [{layer: cpu-quota, cpu: 0.8}]
        params: {lamps.ranks: 1}
        only: [lamps]
    baseline: bare
    repaets: 3
    """
)


def problems(text: str) -> list[str]:
    with pytest.raises(PlanError) as caught:
        parse_plan_text(text, source="p.yaml")
    return caught.value.problems


def test_every_stage_in_one_pass_with_did_you_mean() -> None:
    found = problems(TYPOS)
    expected = [
        "p.yaml:3 workloads.lammps.params.stpes: unknown field; did you mean 'steps'?",
        "p.yaml:8 variants.other.layers[0].cpu: unknown field; did you mean 'cpus'?",
        "p.yaml:12 repaets: unknown field; did you mean 'repeats'?",
        # cross-references, found while field errors remain (before: only after they were all fixed)
        "p.yaml:11 baseline: 'bare' is not a variant (variants: bare-metal, quota, other); did you mean "
        "'bare-metal'?",
        "p.yaml:9 variants.other.params.lamps.ranks: no workload named 'lamps' (workloads: lammps); did you "
        "mean 'lammps'?",
        "p.yaml:10 variants.other.only: no workload named 'lamps'; did you mean 'lammps'?",
    ]
    for line in expected:
        assert line in found, "\n".join(found)
    layer = next(p for p in found if "cpu-qouta" in p)
    assert layer.startswith("p.yaml:6 variants.quota[0]: unknown layer 'cpu-qouta'; use one of")
    assert layer.endswith("did you mean 'cpu-quota'?")


def test_a_valid_plan_with_a_wrong_matrix_key_gets_a_suggestion() -> None:
    text = textwrap.dedent(
        """\
        name: m
        workloads:
          lammps: {kind: lammps}
        variants: {bare-metal: []}
        matrix:
          lammps.stepz: [100, 200]
        """
    )
    [problem] = problems(text)
    assert problem.startswith(
        "p.yaml:6 matrix.lammps.stepz: workload 'lammps' (lammps) has no parameter 'stepz'"
    )
    assert problem.endswith("did you mean 'steps'?")


def test_no_suggestion_when_nothing_is_close() -> None:
    assert did_you_mean("zzzz", ["repeats", "warmup"]) == ""
    assert did_you_mean("warmpu", ["repeats", "warmup"]) == "; did you mean 'warmup'?"
    assert did_you_mean(3, ["repeats"]) == ""


def test_check_reports_the_tools_of_the_valid_parts_with_the_field_errors(tmp_path) -> None:
    from nearmetal.run.check import check_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        textwrap.dedent(
            """\
            name: typos
            workloads:
              tool: {kind: command, params: {argv: [no-such-program-xyz]}}
              lammps: {kind: lammps, params: {ranks: 2, stpes: 100}}
            variants:
              bare-metal: []
            baseline: bare
            """
        )
    )
    report = check_plan(plan)
    plan_lines = [p.message for p in report.problems if p.kind == "plan"]
    assert any(m.startswith("plan.yaml:4 workloads.lammps.params.stpes: unknown field") for m in plan_lines)
    assert any(m.startswith("plan.yaml:7 baseline: 'bare' is not a variant") for m in plan_lines)
    tools = [p for p in report.problems if p.kind == "tools"]
    assert len(tools) == 1 and "no-such-program-xyz is not installed (needed by tool)" in tools[0].message
