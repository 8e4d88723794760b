"""Plans through the CLI: a bad plan exits 2 and runs nothing; `nearmetal schema` prints the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import BAD_PLAN, write_plan


def test_cli_bad_plan_exits_2_and_runs_nothing(tmp_path: Path, run_cli) -> None:
    plan = write_plan(tmp_path, BAD_PLAN)
    proc = run_cli("run", str(plan))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "plan.yaml:9 variants.limited[0].cpus: must be > 0" in lines
    assert not (tmp_path / "results.db").exists()
    assert not (tmp_path / "nearmetal-runs").exists()


def test_schema_command_prints_json_schema(run_cli) -> None:
    proc = run_cli("schema", check=True)
    schema = json.loads(proc.stdout)
    assert schema["type"] == "object"
    assert {"name", "workloads", "variants"} <= set(schema["required"])
    text = proc.stdout
    assert "cpu-quota" in text and "lammps" in text and "stress-ng" in text
