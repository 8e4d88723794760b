"""Real fio trials: a plan with fio runs, parses and removes its files, oversized jobs are refused, and
`nearmetal parse` reads fio output made elsewhere (the parser itself: tests/unit/test_fio.py)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import needs_tool
from helpers import write_plan
from paths import DATA

from nearmetal.workloads.base import TrialOutput, WorkloadContext
from nearmetal.workloads.fio import (
    FioParams,
    FioWorkload,
)


@needs_tool("fio")
def test_real_fio_trial_parses_and_removes_its_files(tmp_path: Path) -> None:
    import subprocess

    wl = FioWorkload()
    params = FioParams(rw="randwrite", numjobs=2, size="4m", bs="4k", runtime=1, drop_caches=False)
    ctx = WorkloadContext(trial_dir=tmp_path, is_root=True)
    wl.prepare(params, ctx)
    spec = wl.processes(params, ctx)[0]
    proc = subprocess.run(spec.argv, cwd=spec.cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = tmp_path / "fio-data"
    assert sorted(p.name for p in data.iterdir()) == ["job0.dat", "job1.dat"]
    files = {p.name: p for p in tmp_path.iterdir() if p.is_file()}
    metrics = {m.name: m.value for m in wl.parse(TrialOutput(proc.stdout, proc.stderr, files), params)}
    assert metrics["bw_MiBps"] > 0 and metrics["clat_p99_us"] >= metrics["clat_p50_us"] > 0
    assert "caches_dropped" in metrics
    wl.cleanup(params, ctx)
    assert not data.exists()


@needs_tool("fio")
def test_plan_with_fio_runs_and_refuses_oversized_jobs(tmp_path: Path, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: fio-small
        workloads:
          fio: {kind: fio, params: {rw: read, size: 4m, runtime: 1, numjobs: 1}}
        variants: {bare: []}
        repeats: 1
        timeout: 60s
        """,
    )
    proc = run_cli("run", str(plan), "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.splitlines()[-1])["rows"]
    assert rows[0]["metric"] == "bw_MiBps" and rows[0]["mean"] > 0
    big = write_plan(
        tmp_path,
        """
        name: fio-big
        workloads:
          fio: {kind: fio, params: {rw: read, size: 900t, numjobs: 64}}
        variants: {bare: []}
        repeats: 1
        """,
        name="big.yaml",
    )
    proc = run_cli("run", str(big), timeout=60)
    assert proc.returncode == 1
    assert "nothing was run" in proc.stderr and "lower fio size or numjobs" in proc.stderr


def test_parse_command_reads_files_from_other_machines(run_cli) -> None:
    proc = run_cli("parse", "fio", str(DATA / "fio-2.2.10-randread-group-json.json"), "--json", check=True)
    metrics = {m["name"]: m for m in next(iter(json.loads(proc.stdout).values()))}
    assert metrics["clat_p99_9_us"]["unit"] == "µs" and metrics["bw_MiBps"]["direction"] == "higher"
