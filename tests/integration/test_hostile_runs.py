"""Hostile plans that get as far as running: writes confined to the run, fio options that cannot overwrite
files, a full disk, a child that escaped its group killed on timeout, a report into a missing directory."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from helpers import fio_plan, write_plan

import nearmetal

PY = sys.executable


def test_fio_output_option_cannot_overwrite_a_file(tmp_path: Path, run_cli) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    plan = write_plan(
        tmp_path,
        f"name: x\nworkloads:\n  f: {{kind: fio, params: {{size: 1m, runtime: 0.2, options: {{output: {str(victim)!r}}}}}}}\n"
        "variants: {a: []}\nrepeats: 1\n",
    )
    proc = run_cli("run", str(plan), "-q", "--no-html")
    assert proc.returncode == 2, proc.stderr
    assert "fio option 'output' is not allowed" in proc.stderr
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "nearmetal-runs").exists()


@pytest.mark.skipif(not __import__("shutil").which("fio"), reason="fio is not installed")
def test_allowed_fio_options_pass_and_logs_stay_in_the_trial(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: fio-opts
        workloads:
          f:
            kind: fio
            params: {rw: randread, size: 1m, runtime: 0.3, direct: false, drop_caches: false,
                     options: {norandommap: 1, randrepeat: 0, write_bw_log: logs/bw, log_avg_msec: 100}}
        variants: {a: []}
        repeats: 1
        timeout: 60s
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    record = result.records[0]
    trial_dir = tmp_path / "runs" / result.run_id / record.trial.key
    job = (trial_dir / "fio-job.fio").read_text()
    assert "norandommap=1" in job and "write_bw_log=logs/bw" in job
    assert record.status == "ok", record.error
    assert list((trial_dir / "logs").glob("bw_bw*.log"))


def test_the_cli_refuses_a_plan_writing_outside_until_allowed(tmp_path: Path, run_cli) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    plan = write_plan(tmp_path, fio_plan(str(target / "fio")) + "repeats: 1\n")
    proc = run_cli("run", str(plan), "-q", "--no-html", "--json")
    assert proc.returncode == 2, proc.stderr
    assert f"plan.yaml:3 workloads.f.params.directory: {target}/fio is outside" in proc.stderr
    assert "--allow-path" in proc.stderr
    assert not (tmp_path / "results.db").exists() or "fio" not in proc.stdout


def test_a_child_that_left_the_group_and_the_run_is_killed_on_timeout(tmp_path: Path, db_url: str) -> None:
    # issue 18, item 9: setsid + a clean environment escaped both the group kill and the leak sweep
    # (the script has single quotes, so its repr is a double-quoted string, which YAML reads alike)
    pid_file = tmp_path / "escapee.pid"
    script = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    env = {k: v for k, v in os.environ.items() if k != 'NEARMETAL_RUN_ID'}\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)'], env)\n"
        "time.sleep(300)\n"
    )
    plan = write_plan(
        tmp_path,
        f"""
        name: escape
        workloads:
          w: {{kind: command, params: {{argv: [{PY!r}, -c, {script!r}]}}}}
        variants: {{a: []}}
        repeats: 1
        timeout: 3s
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert result.records[0].status == "timeout"
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError(f"the setsid child {pid} outlived its trial")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_a_run_whose_disk_filled_exits_non_zero(tmp_path: Path, run_cli) -> None:
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "nearmetal-test-full", str(small)], check=True, timeout=30
    )
    try:
        plan = write_plan(
            tmp_path,
            f"""
            name: full
            workloads:
              w: {{kind: command, params: {{argv: [{PY!r}, -c, "print('x' * 4_000_000)"]}}}}
            variants: {{a: []}}
            repeats: 2
            """,
        )
        proc = run_cli("run", str(plan), "-q", "--no-html", "--workdir", str(small), timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert "is full" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        subprocess.run(["umount", str(small)], timeout=30, check=False)


def test_report_into_a_missing_directory_is_one_line(tmp_path: Path, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        f"name: r\nworkloads: {{w: {{kind: command, params: {{argv: [{PY!r}, -c, pass]}}}}}}\nvariants: {{a: []}}\nrepeats: 1\n",
    )
    assert run_cli("run", str(plan), "-q", "--no-html").returncode == 0
    for args in (
        ("-f", "markdown", "-o", str(tmp_path / "missing" / "r.md")),
        ("-f", "json", "-o", str(tmp_path / "gone" / "r.json")),
    ):
        proc = run_cli("report", *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "does not exist" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert not (tmp_path / "missing").exists() and not (tmp_path / "gone").exists()
