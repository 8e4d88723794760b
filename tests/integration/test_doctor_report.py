"""``doctor --for RUN`` stores findings with a run, and the reports show them beside the loss they can
explain (a CPU quota under a time table; a memlock limit, which explains failures, in a section of its own)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from conftest import needs_cpu_cgroup
from helpers import write_plan

import nearmetal
from nearmetal.host import cgroups

PY = sys.executable


def _small_run(tmp_path: Path, db_url: str) -> str:
    plan = write_plan(
        tmp_path,
        f"""
        name: two-speeds
        workloads:
          sleeper: {{kind: command, params: {{argv: ["{PY}", "-c", "import time; time.sleep(0.05)"]}}}}
        variants:
          fast: []
          slow: {{layers: [], params: {{sleeper.argv: ["{PY}", "-c", "import time; time.sleep(0.25)"]}}}}
        baseline: fast
        repeats: 3
    """,
    )
    return nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs").run_id


@needs_cpu_cgroup
def test_findings_attached_to_a_run_appear_next_to_its_loss(tmp_path: Path, db_url: str, run_cli) -> None:
    run_id = _small_run(tmp_path, db_url)
    hierarchy = cgroups.detect()
    group = hierarchy.create(f"nearmetal-doctortest-{os.getpid()}-report", ["cpu"])
    try:
        group.set_cpu_quota(0.5)

        def lower_memlock() -> None:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, 64 * 1024))

        proc = subprocess.run(
            [
                "/bin/sh",
                "-c",
                'echo $$ > "$1"; shift; exec "$@"',
                "enter",
                str(group.procs_files()[0]),
                PY,
                "-m",
                "nearmetal.cli",
                "doctor",
                "--for",
                run_id,
                "--check",
                "cpu-quota",
                "--check",
                "memlock",
                "--db",
                db_url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lower_memlock,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"attached to run {run_id}" in proc.stderr
    finally:
        group.remove()
    markdown = run_cli("report", run_id, "--format", "markdown", check=True).stdout
    table_part, _, rest = markdown.partition("## Other doctor findings")
    assert "Possible causes found by `nearmetal doctor`" in table_part
    assert "[warning] cpu-quota: CPU quota of 0.50 CPUs" in table_part or "[critical] cpu-quota" in table_part
    assert "memlock" not in table_part and "[warning] memlock" in rest
    terminal = run_cli("report", run_id, check=True).stdout
    assert "possible causes (nearmetal doctor)" in terminal and "cpu-quota" in terminal


def test_a_run_without_findings_reports_as_before(tmp_path: Path, db_url: str, run_cli) -> None:
    run_id = _small_run(tmp_path, db_url)
    markdown = run_cli("report", run_id, "--format", "markdown", check=True).stdout
    # no findings section (a noisy cell's CV warning may still point at `nearmetal doctor`)
    assert "Possible causes found by" not in markdown and "Other doctor findings" not in markdown
    assert "slow" in markdown
