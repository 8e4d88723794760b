"""Runs end to end on the local backend: failures recorded, trials committed as they end, reports."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import nearmetal_cgroups, needs_cpu_cgroup, needs_tool
from helpers import skip_if_contended, write_plan

import nearmetal
from nearmetal.errors import MissingToolError

PY = sys.executable


def test_crash_and_timeout_are_failed_trials_and_the_run_goes_on(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: mixed
        workloads:
          ok:
            kind: command
            params: {{argv: ["{PY}", "-c", "print('rate=5')"],
                      metrics: [{{name: rate, regex: 'rate=([0-9]+)', direction: higher}}]}}
          crash:
            kind: command
            params: {{argv: ["{PY}", "-c", "import sys; sys.stderr.write('boom at step 3'); sys.exit(3)"]}}
          hang:
            kind: command
            params: {{argv: ["{PY}", "-c", "import time; time.sleep(60)"]}}
            timeout: 0.5s
          killed:
            kind: command
            params: {{argv: ["{PY}", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]}}
        variants:
          bare: []
        repeats: 2
    """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    by_workload: dict[str, list] = {}
    for rec in result.records:
        by_workload.setdefault(rec.trial.cell.workload, []).append(rec)
    assert [r.status for r in by_workload["ok"]] == ["ok", "ok"]
    assert [r.status for r in by_workload["crash"]] == ["failed", "failed"]
    assert [r.status for r in by_workload["hang"]] == ["timeout", "timeout"]
    assert [r.status for r in by_workload["killed"]] == ["failed", "failed"]
    results = nearmetal.load_results(result.run_id, db=db_url)
    crash = next(t for t in results.trials if t.workload == "crash")
    assert crash.exit_code == 3 and "boom at step 3" in crash.stderr_tail
    killed = next(t for t in results.trials if t.workload == "killed")
    assert killed.signal == "SIGSEGV" and "killed by SIGSEGV" in killed.error
    hang = next(t for t in results.trials if t.workload == "hang")
    assert "timed out after 0.5s" in hang.error
    # outputs are kept in the run's directory
    assert Path(crash.output_dir, "main.stderr").read_text() == "boom at step 3"
    ok_cell = next(c for c in results.cells if c.workload == "ok")
    assert results.analysis.metric(ok_cell.cell_id, "rate").summary.n == 2


def test_missing_tool_fails_before_anything_runs(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: missing
        workloads:
          w: {kind: command, params: {argv: [nearmetal-no-such-tool, x], tool_package: no-such-pkg}}
        variants: {bare: []}
    """,
    )
    with pytest.raises(MissingToolError) as info:
        nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert "nearmetal-no-such-tool is not installed" in str(info.value)
    assert "apt-get install -y no-such-pkg" in str(info.value)
    assert "w/bare" in str(info.value)
    assert not (tmp_path / "runs").exists()


def test_telemetry_metrics_have_units_and_directions(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: tele
        workloads:
          burn: {{kind: command, params: {{argv: ["{PY}", "-c", "x = bytearray(50_000_000); sum(range(3_000_000))"]}}}}
        variants: {{bare: []}}
        repeats: 1
    """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    metrics = {m.name: m for m in result.records[0].metrics}
    assert metrics["wall_s"].unit == "s" and metrics["wall_s"].direction == "lower"
    assert metrics["cpu_s"].value > 0
    assert 0 < metrics["cpu_util_pct"].value <= 250
    assert metrics["max_rss_MiB"].value > 45  # the 50 MB buffer
    for m in metrics.values():
        assert m.direction in ("higher", "lower") and m.unit


def _trial_count(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("select count(*) from trials").fetchone()[0]


def test_sigkill_keeps_finished_trials_and_report_shows_them(tmp_path: Path) -> None:
    db_path = tmp_path / "results.db"
    plan = write_plan(
        tmp_path,
        f"""
        name: killme
        workloads:
          nap: {{kind: command, params: {{argv: ["{PY}", "-c", "import time; time.sleep(0.3)"]}}}}
        variants: {{a: [], b: []}}
        repeats: 50
    """,
    )
    env = {**os.environ, "NEARMETAL_DB": str(db_path)}
    runner = subprocess.Popen(
        [PY, "-m", "nearmetal.cli", "run", str(plan), "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if db_path.exists():
            try:
                if _trial_count(db_path) >= 4:
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.1)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=10)
    stored = _trial_count(db_path)
    assert 4 <= stored < 100
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
        status = conn.execute("select status from runs").fetchone()[0]
    assert status == "running"  # nobody could mark it: the runner died
    report = subprocess.run(
        [PY, "-m", "nearmetal.cli", "report", "--format", "markdown"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert "| a |" in report.stdout and "| b |" in report.stdout


def test_library_api_matches_cli_table(tmp_path: Path, db_url: str, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: api
        workloads:
          w: {{kind: command, params: {{argv: ["{PY}", "-c", "pass"]}}}}
        variants: {{a: [], b: []}}
        repeats: 3
        seed: 11
    """,
    )
    proc = run_cli("run", str(plan), "--json", check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    results = nearmetal.load_results(out["run_id"], db=db_url)
    assert results.run.seed == 11
    api_rows = results.table()
    assert [(r["variant"], r["n"]) for r in api_rows] == [(r["variant"], r["n"]) for r in out["rows"]]
    assert results.environment["cpu.logical"] == str(os.cpu_count())
    md = run_cli("report", out["run_id"][:12], "--format", "markdown", check=True).stdout
    assert "loss % [95% CI]" in md and "| b |" in md
    listing = run_cli("runs", check=True).stdout
    assert out["run_id"] in listing


def test_report_without_runs_says_what_to_do(run_cli, tmp_path: Path) -> None:
    proc = run_cli("report")  # no store yet: a reader does not create one (issue 30)
    assert proc.returncode == 1
    assert "no store at" in proc.stderr and "nearmetal run" in proc.stderr
    assert not (tmp_path / "results.db").exists()
    from nearmetal.store import Store

    Store(f"sqlite:///{tmp_path / 'results.db'}")  # an empty store
    proc = run_cli("report")
    assert proc.returncode == 1
    assert "has no runs yet" in proc.stderr and "nearmetal run" in proc.stderr


def test_bad_db_url_is_a_clear_error(run_cli) -> None:
    proc = run_cli("report", env={"NEARMETAL_DB": "nosuchdriver://x/y"})
    assert proc.returncode == 1
    assert "cannot open the result store" in proc.stderr


@needs_cpu_cgroup
@needs_tool("lmp", "mpirun", "stress-ng")
@pytest.mark.slow
def test_cpu_quota_study_tells_the_seed_story(run_cli, artifacts_dir: Path) -> None:
    """The shipped study: CPU use falls and loss rises as the quota shrinks, with intervals; it ends with an
    HTML report that a real browser renders. Shielded (every trial in a top-weight cgroup), so the other
    work of a shared host cannot take the baseline's CPU during its six minutes; where the run's own noise
    evidence still says contended, the figures are not asserted."""
    proc = run_cli("study", "cpu-quota", "--shield", "--json", timeout=900, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not nearmetal_cgroups(out["run_id"])
    from browser import Chromium, chromium_path

    html = Path(out["html"])
    assert html.is_file() and html.name == "report.html"
    if chromium_path() is not None:
        with Chromium() as browser:
            page = browser.check_page(html, screenshot=artifacts_dir / "cpu-quota-study-report.png")
        assert page.console_errors == [] and page.remote_requests == []
        assert page.plots_rendered == page.svg_plots >= 8  # values, loss, repeats, context per workload
    results = nearmetal.load_results(out["run_id"], db=out["db"])
    skip_if_contended(results, "the shielded study")
    rows = {(r["workload"], r["variant"]): r for r in out["rows"]}
    order = ["limit-1.6", "limit-1.2", "limit-0.8"]
    for workload in ("lammps", "stress-ng"):
        losses = [rows[(workload, v)]["loss_pct"] for v in order]
        assert losses == sorted(losses), (workload, losses)
        assert all(rows[(workload, v)]["significant"] for v in order)
        assert rows[(workload, "limit-0.8")]["ci_low_pct"] > 30
    cpu_use = {}
    for cell in results.cells:
        if cell.workload == "lammps":
            cpu_use[cell.variant] = results.analysis.metric(cell.cell_id, "lammps_cpu_use_pct").summary.mean
    assert cpu_use["bare-metal"] > 90
    assert cpu_use["bare-metal"] > cpu_use["limit-1.6"] > cpu_use["limit-1.2"] > cpu_use["limit-0.8"]
    assert 45 < cpu_use["limit-1.2"] < 75  # the seed's "60 something percent"
