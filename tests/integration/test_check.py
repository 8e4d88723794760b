"""``nearmetal check PLAN``: every problem a run would refuse at once (plan, store limits, paths, backend,
tools, sizes), nothing run, the cells, their tools and an estimate of the duration."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import write_plan

from nearmetal.store import Store
from nearmetal.store.schema import MetricRow

PY = sys.executable
NAME_MAX = MetricRow.__table__.c.name.type.length
UNIT_MAX = MetricRow.__table__.c.unit.type.length


def _metric_plan(tmp_path: Path, name: str = "rate", unit: str = "ops/s") -> Path:
    return write_plan(
        tmp_path,
        f"""
        name: lengths
        workloads:
          count:
            kind: command
            params:
              argv: ["{PY}", "-c", "print('rate=5')"]
              metrics: [{{name: {name}, regex: 'rate=([0-9]+)', unit: "{unit}", direction: higher}}]
        variants: {{a: []}}
        repeats: 1
        """,
    )


@pytest.mark.parametrize(
    ("field", "name", "unit"),
    [("name", "m" * (NAME_MAX + 1), "ops/s"), ("unit", "rate", "u" * (UNIT_MAX + 1))],
)
def test_what_the_store_would_refuse_is_a_plan_problem(
    tmp_path: Path, run_cli, db_url: str, field: str, name: str, unit: str
) -> None:
    """The store keeps metric names up to 128 characters and units up to 32; longer ones used to be found
    only when the first trial was stored, after it ran."""
    plan = _metric_plan(tmp_path, name, unit)
    proc = run_cli("check", str(plan))
    assert proc.returncode == 2
    limit = NAME_MAX if field == "name" else UNIT_MAX
    assert f"plan.yaml:7 workloads.count.params.metrics[0].{field}" in proc.stderr
    assert f"at most {limit} characters" in proc.stderr
    # the run refuses it the same way, before any trial
    proc = run_cli("run", str(plan), "--no-html")
    assert proc.returncode == 2 and f"metrics[0].{field}" in proc.stderr
    assert Store(db_url).list_runs(10) == []
    # one character less is fine
    ok = _metric_plan(tmp_path, name[:NAME_MAX], unit[:UNIT_MAX])
    assert run_cli("check", str(ok)).returncode == 0


def test_every_problem_at_once(tmp_path: Path, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: many-problems
        workloads:
          tool:
            kind: command
            params: {argv: [no-such-program-nearmetal, "1"]}
          io:
            kind: fio
            params: {directory: /etc/nearmetal-check, size: 50t, runtime: 2}
          cpu:
            kind: stress-ng
            params: {workers: 4000, seconds: 3}
        variants:
          bare: []
          pod: [{layer: pod, cpu: 1}]
        repeats: 3
        """,
    )
    proc = run_cli("check", str(plan), "--json")
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    kinds = {p["kind"]: p for p in report["problems"]}
    assert set(kinds) >= {"paths", "backend", "tools", "sizes"}, report["problems"]
    assert "workloads.io.params.directory" in kinds["paths"]["message"]
    assert "layer pod cannot run on the local backend" in kinds["backend"]["message"]
    assert "no-such-program-nearmetal is not installed" in kinds["tools"]["message"]
    assert "fio needs" in kinds["sizes"]["message"] and "stress-ng workers=4000" in kinds["sizes"]["message"]
    assert not Path("/etc/nearmetal-check").exists()  # nothing was run or created
    assert not (tmp_path / "nearmetal-runs").exists()
    # the expanded cells with the tools each needs, whether here or not
    cells = {c["key"]: c for c in report["cells"]}
    assert len(cells) == 6 and report["trials"] == {"min": 18, "max": 18}
    tool = {t["tool"]: t for t in cells["tool/bare"]["tools"]}
    assert tool["no-such-program-nearmetal"]["available"] is False
    assert cells["io/pod"]["layers"] == ["pod"]
    # the same in words, on the terminal; the path and size problems are both listed
    proc = run_cli("check", str(plan))
    assert proc.returncode == 2
    assert "4 problem(s)" in proc.stderr or "5 problem(s)" in proc.stderr
    assert "paths:" in proc.stderr and "sizes:" in proc.stderr and "tools:" in proc.stderr


def test_a_plan_that_does_not_validate_lists_every_line(tmp_path: Path, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: broken
        workloads:
          w: {kind: stress-ng, params: {workers: -1, seconds: 1}}
        variants:
          a: [{layer: cpu-quota, cpus: 0}]
        repeats: 0
        """,
    )
    proc = run_cli("check", str(plan), "--json")
    assert proc.returncode == 2
    problems = json.loads(proc.stdout)["problems"]
    assert {p["kind"] for p in problems} == {"plan"}
    assert len(problems) >= 3, problems  # workers, cpus, repeats: all of them, with their lines
    assert all(p["message"].startswith("plan.yaml:") for p in problems)


@pytest.mark.skipif(os.geteuid() != 0, reason="the plan's cpu-quota layer needs root")
def test_a_fine_plan_and_its_estimate_from_the_store(tmp_path: Path, run_cli, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: estimate-me
        workloads:
          nap:
            kind: command
            params: {{argv: ["{PY}", "-c", "import time; time.sleep(0.4)"]}}
          io:
            kind: fio
            params: {{runtime: 1, size: 4m}}
        variants:
          a: []
          quota: [{{layer: cpu-quota, cpus: 1.5}}]
        repeats: {{min: 2, max: 4, target: "±50%"}}
        warmup: 1
        timeout: 60s
        """,
    )
    before = run_cli("check", str(plan), "--json")
    assert before.returncode == 0, before.stdout + before.stderr
    report = json.loads(before.stdout)
    assert report["ok"] and report["problems"] == []
    assert report["trials"] == {"min": 4 * 3, "max": 4 * 5}
    cells = {c["key"]: c for c in report["cells"]}
    assert cells["nap/a"]["trial_s_from"] == "unknown"  # no time parameter, nothing stored yet
    assert cells["io/a"]["trial_s_from"] == "parameters" and cells["io/a"]["trial_s"] == 2.0
    duration = report["duration"]
    assert duration["unknown_trials"] == 2 * 5
    assert duration["at_most_s"] == 4 * 5 * 60
    # after a run, the store's trials of the same cells give their durations
    run_cli("run", str(plan), "--no-html", "-q", check=True)
    after = json.loads(run_cli("check", str(plan), "--json", check=True).stdout)
    cells = {c["key"]: c for c in after["cells"]}
    assert cells["nap/a"]["trial_s_from"] == "store"
    assert 0.4 <= cells["nap/a"]["trial_s"] < 10
    assert after["duration"]["unknown_trials"] == 0
    assert after["duration"]["low_s"] <= after["duration"]["high_s"] <= after["duration"]["at_most_s"]
    # and the terminal form names the cells, their tools and the estimate
    text = run_cli("check", str(plan), check=True).stdout
    assert "io/quota" in text and "fio" in text and "estimated duration" in text and "no problems" in text


def test_a_shipped_study_by_name(run_cli) -> None:
    proc = run_cli("check", "cpu-quota", "--json")
    report = json.loads(proc.stdout)
    assert {c["workload"] for c in report["cells"]} == {"lammps", "stress-ng"}
    assert report["trials"]["min"] == len(report["cells"]) * 6
