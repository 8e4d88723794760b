"""Progress of a run: ETA from measured trial times, the rich bar, JSON lines and quiet mode."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from helpers import write_plan
from rich.console import Console

import nearmetal
from nearmetal.report.progress import EtaEstimator, RichProgress, format_eta

PY = sys.executable


def test_eta_weighs_every_cell_by_its_own_trial_time() -> None:
    eta = EtaEstimator(total=10)
    assert eta.remaining() is None  # nothing measured yet: no guess
    eta.trial_started(now=0.0)
    eta.trial_finished("slow", now=3.0)
    eta.trial_started(now=3.0)
    eta.trial_finished("fast", now=4.0)
    eta.trial_started(now=4.0)
    eta.trial_finished("fast", now=5.0)
    # slow cells take 3 s, fast ones 1 s, and interleaving runs each equally often: 2 s per trial left
    assert eta.per_trial() == pytest.approx(2.0)
    assert eta.remaining() == pytest.approx(7 * 2.0)
    eta.total = 3
    assert eta.remaining() == 0
    assert (
        format_eta(None) == "ETA –" and format_eta(75.4) == "ETA 1:15" and format_eta(3725) == "ETA 1:02:05"
    )


def _plan(tmp_path: Path) -> Path:
    return write_plan(
        tmp_path,
        f"""
        name: progress
        workloads:
          nap: {{kind: command, params: {{argv: ["{PY}", "-c", "import time; time.sleep(0.2)"]}}}}
          crash: {{kind: command, params: {{argv: ["{PY}", "-c", "import sys; sys.exit(3)"]}}}}
        variants: {{a: []}}
        repeats: 2
        """,
    )


def test_rich_progress_shows_count_failures_and_eta(tmp_path: Path, db_url: str) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=160)
    nearmetal.run_plan(_plan(tmp_path), db=db_url, workdir=tmp_path / "runs", progress=RichProgress(console))
    out = buffer.getvalue()
    assert "progress, 4 trials" in out
    assert "4/4" in out and "2 failed" in out
    assert "crash/a #" in out and "exited with code 3" in out
    assert "ETA 0:00" in out


def test_json_progress_lines_and_quiet_mode(tmp_path: Path, run_cli) -> None:
    plan = _plan(tmp_path)
    proc = run_cli("run", str(plan), "--json", "--no-html", check=True)
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert events[0]["event"] == "start" and events[0]["trials"] == 4
    trials = [e for e in events if e["event"] == "trial"]
    assert [t["done"] for t in trials] == [1, 2, 3, 4] and all(t["total"] == 4 for t in trials)
    assert trials[-1]["failed"] == 2 and trials[-1]["eta_s"] == 0
    assert all(t["eta_s"] is not None and t["eta_s"] >= 0 for t in trials)
    assert events[-1] == {**events[-1], "event": "finish", "done": 4, "failed": 2}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["html"] is None and len(result["rows"]) == 2
    quiet = run_cli("run", str(plan), "-q", check=True)
    assert "ETA" not in quiet.stderr and "trials" not in quiet.stderr
    assert "run id:" in quiet.stdout


def test_a_growing_run_grows_the_eta() -> None:
    """Adaptive repeats add blocks while the run goes (Runner calls set_total): the ETA counts them."""
    from nearmetal.report.progress import JsonProgress

    stream = io.StringIO()
    progress = JsonProgress(stream)
    progress.start(4, "p", "run")
    progress.set_total(10)
    assert progress.eta.total == 10
    assert json.loads(stream.getvalue().splitlines()[-1])["trials"] == 10
    rich = RichProgress(Console(file=io.StringIO(), force_terminal=False))
    rich.start(4, "p", "run")
    rich.set_total(12)
    assert rich.eta.total == 12 and rich._progress.tasks[0].total == 12
    rich.finish()
