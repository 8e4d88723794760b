"""Resume: a run killed at any moment continues where it stopped, with exactly its planned trials.

The kill loop runs ``NEARMETAL_KILL_LOOPS`` (default 20) SIGKILLs at random moments (during start-up, a trial,
a commit), resuming after each; the closing note's figure comes from a run with a larger count.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import nearmetal_argv, nearmetal_cgroups, needs_cpu_cgroup
from helpers import write_plan

import nearmetal
from nearmetal.errors import NearmetalError
from nearmetal.host import runlock
from nearmetal.host.cleanup import find_processes
from nearmetal.plan import parse_plan_text
from nearmetal.run.records import NullProgress
from nearmetal.run.runner import RunInterrupted, schedule

PY = sys.executable
KILL_LOOPS = int(os.environ.get("NEARMETAL_KILL_LOOPS", "20"))


def _sql(db: Path, query: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(query, args).fetchall()


def _stored(db: Path, run_id: str) -> int:
    try:
        return _sql(db, "select count(*) from trials where run_id = ?", run_id)[0][0]
    except sqlite3.OperationalError:  # the store is being created
        return 0


def _run_exists(db: Path, run_id: str) -> bool:
    try:
        return bool(_sql(db, "select 1 from runs where id = ?", run_id))
    except sqlite3.OperationalError:
        return False


def _workload_running(run_id: str, needle: str) -> bool:
    """A process of the run whose command line holds ``needle`` (the trial's workload, not a helper the
    runner started to capture the environment)."""
    for leftover in find_processes(run_id):
        pid = leftover.name.split()[0]
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return True
        except OSError:
            continue
    return False


def _planned_keys(plan_text: str, seed: int) -> list[str]:
    loaded = parse_plan_text(plan_text)
    repeats = loaded.plan.repeats.min
    trials = schedule(loaded.cells, loaded.plan.order, loaded.plan.warmup, 0, repeats, seed)
    return [t.key for t in trials]


@pytest.mark.slow
def test_kill_minus_9_at_random_moments_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("NEARMETAL_KILL_SEED", "12")))
    db = tmp_path / "results.db"
    run_id = f"kill-loop-{os.getpid()}"
    repeats = max(8, KILL_LOOPS)  # ~2 trials per kill on average: the run must outlast the kills
    plan = write_plan(
        tmp_path,
        f"""
        name: kill-loop
        workloads:
          nap:
            kind: command
            params:
              argv: ["{PY}", "-c", "import time; time.sleep(0.02); print('v=1')"]
              metrics: [{{name: v, regex: 'v=([0-9]+)', direction: higher}}]
        variants: {{a: [], b: []}}
        repeats: {repeats}
        warmup: 1
        seed: 5
        """,
    )
    env = {**os.environ, "NEARMETAL_DB": str(db)}
    kills = resumes = 0
    kinds: dict[str, int] = {}
    while kills < KILL_LOOPS:
        exists = _run_exists(db, run_id)
        args = ["resume", run_id] if exists else ["run", str(plan), "--run-id", run_id]
        resumes += exists
        before = _stored(db, run_id)
        proc = subprocess.Popen(
            [*nearmetal_argv(), *args, "-q"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # a quarter of the kills at a random moment of start-up (store opening, migration, resume's
        # tidying), the rest once 0-2 more trials are stored, plus a random fraction of a trial
        if rng.random() < 0.25:
            kind, deadline = "start-up", time.monotonic() + rng.uniform(0.05, 1.5)
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
        else:
            kind, target = "trials", before + rng.randint(0, 2)
            deadline = time.monotonic() + 60
            while _stored(db, run_id) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.15))
        if proc.poll() is not None:
            _, err = proc.communicate()
            assert proc.returncode == 0, err
            break  # the run ended before this kill: fine, but then the plan was too short
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kills == KILL_LOOPS, f"the run finished after {kills} kills; lengthen the plan"
    final = subprocess.run(
        [*nearmetal_argv(), "resume", run_id, "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert final.returncode == 0, final.stderr
    resumes += 1

    planned = _planned_keys(plan.read_text(), seed=5)
    rows = _sql(db, "select trial_key, status from trials where run_id = ?", run_id)
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)), "duplicate trials"
    assert sorted(keys) == sorted(planned), "lost or extra trials"
    assert {status for _, status in rows} == {"ok"}
    # every stored trial is whole: its workload metric and its wall time came in the same transaction
    per_trial = _sql(
        db,
        "select t.trial_key, count(m.id) from trials t left join metrics m on m.trial_id = t.id "
        "and m.name in ('v', 'wall_s') where t.run_id = ? group by t.id",
        run_id,
    )
    assert all(n == 2 for _, n in per_trial), per_trial
    assert _sql(db, "pragma integrity_check") == [("ok",)]
    assert _sql(db, "pragma foreign_key_check") == []
    assert _sql(db, "select status from runs where id = ?", run_id) == [("finished",)]
    # every process start that found the run stored left a "resumed" event
    events = _sql(db, "select count(*) from events where run_id = ? and kind = 'resumed'", run_id)[0][0]
    assert events <= resumes and events >= 1
    assert not find_processes(run_id)
    assert runlock.is_live(run_id) is None
    print(f"kills: {kills} ({kinds}), resumes: {resumes}, trials: {len(keys)} of {len(planned)} planned")


class _StopAfter(NullProgress):
    """A progress sink that presses Ctrl-C after some trials (an in-process interruption)."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def start(self, total: int, plan_name: str, run_id: str) -> None:
        pass

    def trial_started(self, trial, index: int) -> None:
        pass

    def trial_finished(self, record, index: int) -> None:
        if index + 1 >= self.trials:
            raise KeyboardInterrupt

    def finish(self) -> None:
        pass


NAP_PLAN = f"""
name: nap
workloads:
  nap: {{kind: command, params: {{argv: ["{PY}", "-c", "pass"]}}}}
variants: {{a: [], b: []}}
repeats: 3
seed: 9
"""


def _interrupted_run(tmp_path: Path, db_url: str, after: int = 2) -> str:
    plan = write_plan(tmp_path, NAP_PLAN)
    with pytest.raises(RunInterrupted) as info:
        nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs", progress=_StopAfter(after))
    return info.value.run_id


def test_resume_after_interrupt_keeps_trials_and_finishes(tmp_path: Path, db_url: str) -> None:
    run_id = _interrupted_run(tmp_path, db_url)
    first = nearmetal.load_results(run_id, db=db_url)
    assert first.run.status == "interrupted" and len(first.trials) == 2
    kept = {t.trial_key: t.id for t in first.trials}
    result = nearmetal.run.runner.resume_run(run_id, db=db_url)
    assert result.status == "finished"
    assert sum(r.resumed for r in result.records) == 2
    final = nearmetal.load_results(run_id, db=db_url)
    assert len(final.trials) == 6
    # the kept trials are the same rows, not re-run copies
    assert {t.trial_key: t.id for t in final.trials if t.trial_key in kept} == kept
    assert [t.seq for t in final.trials] == sorted(t.seq for t in final.trials)
    events = final.store.events(run_id)
    assert [e["kind"] for e in events] == ["interrupted", "resumed"]
    assert events[1]["detail"]["kept_trials"] == 2
    assert final.run.info["resumes"][0]["previous_status"] == "interrupted"
    # resuming a finished run does nothing
    again = nearmetal.run.runner.resume_run(run_id, db=db_url)
    assert again.records == [] and again.status == "finished"


def test_resume_with_another_plan_is_refused_naming_what_differs(
    tmp_path: Path, db_url: str, run_cli
) -> None:
    run_id = _interrupted_run(tmp_path, db_url)
    other = write_plan(tmp_path, NAP_PLAN.replace("repeats: 3", "repeats: 5"), name="other.yaml")
    proc = run_cli("run", str(other), "--resume", run_id)
    assert proc.returncode == 2, proc.stderr
    assert f"other.yaml is not the plan run {run_id} was started with" in proc.stderr
    assert "repeats.min: 3 → 5" in proc.stderr
    assert f"nearmetal resume {run_id}" in proc.stderr
    assert len(nearmetal.load_results(run_id, db=db_url).trials) == 2  # nothing ran
    # the same plan with other comments and layout is the same plan
    same = write_plan(
        tmp_path, "# reformatted\n" + NAP_PLAN.replace("seed: 9", "seed:   9   # fixed"), "same.yaml"
    )
    proc = run_cli("run", str(same), "--resume", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(nearmetal.load_results(run_id, db=db_url).trials) == 6


def test_resume_refuses_unknown_runs_and_new_runs_refuse_taken_ids(tmp_path: Path, run_cli) -> None:
    proc = run_cli("resume", "no-such-run")
    assert proc.returncode == 1 and "no run 'no-such-run'" in proc.stderr
    plan = write_plan(tmp_path, NAP_PLAN)
    run_cli("run", str(plan), "--run-id", "taken", "-q", check=True)
    proc = run_cli("run", str(plan), "--run-id", "taken", "-q")
    assert proc.returncode == 1 and "run taken already exists" in proc.stderr
    assert "nearmetal resume taken" in proc.stderr
    proc = run_cli("run", str(plan), "--run-id", "../../etc", "-q")
    assert proc.returncode == 1 and "not a usable run id" in proc.stderr


def test_a_running_run_cannot_be_resumed_twice(tmp_path: Path, db_url: str, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: long
        workloads:
          w: {{kind: command, params: {{argv: ["{PY}", "-c", "import time; time.sleep(60)"]}}}}
        variants: {{a: []}}
        repeats: 1
        """,
    )
    run_id = f"live-{os.getpid()}"
    env = {**os.environ, "NEARMETAL_DB": db_url}
    runner = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "--run-id", run_id, "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not _workload_running(run_id, "time.sleep"):
            time.sleep(0.05)
        assert runlock.is_live(run_id) is not None
        proc = run_cli("resume", run_id)
        assert proc.returncode == 1
        assert f"run {run_id} is still running (pid {runner.pid}" in proc.stderr
        # a bare cleanup leaves a live run's processes alone
        proc = run_cli("cleanup", run_id)
        assert "kept process" in proc.stdout and find_processes(run_id)
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=30)
    assert not find_processes(run_id)


def test_a_sigkilled_run_leaves_processes_that_resume_removes(tmp_path: Path, db_url: str) -> None:
    """The workload of a killed runner keeps running (its own process group); resume ends it first."""
    flag = tmp_path / "second-attempt"
    plan = write_plan(
        tmp_path,
        f"""
        name: orphan
        workloads:
          w:
            kind: command
            params: {{argv: ["{PY}", "-c", "import os, time; time.sleep(0 if os.path.exists('{flag}') else 120)"]}}
        variants: {{a: []}}
        repeats: 1
        """,
    )
    run_id = f"orphan-{os.getpid()}"
    env = {**os.environ, "NEARMETAL_DB": db_url}
    runner = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "--run-id", run_id, "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not _workload_running(run_id, "time.sleep"):
        time.sleep(0.05)
    runner.kill()
    runner.wait(timeout=10)
    orphans = find_processes(run_id)
    assert orphans, "the workload should outlive its SIGKILLed runner"
    flag.touch()
    result = nearmetal.run.runner.resume_run(run_id, db=db_url)
    assert result.status == "finished"
    assert not find_processes(run_id)
    events = nearmetal.load_results(run_id, db=db_url).store.events(run_id)
    removed = events[0]["detail"]["removed_leftovers"]
    assert any(r.startswith("process ") for r in removed), removed


@needs_cpu_cgroup
def test_cleanup_removes_what_a_sigkilled_layered_run_left(tmp_path: Path, db_url: str, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: orphan-cgroup
        workloads:
          w: {kind: command, params: {argv: [sleep, "120"]}}
        variants: {q: [{layer: cpu-quota, cpus: 0.5}]}
        repeats: 1
        """,
    )
    run_id = f"orphan-cg-{os.getpid()}"
    env = {**os.environ, "NEARMETAL_DB": db_url}
    runner = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "--run-id", run_id, "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (_workload_running(run_id, "120") and nearmetal_cgroups(run_id)):
        time.sleep(0.05)
    runner.kill()
    runner.wait(timeout=10)
    assert nearmetal_cgroups(run_id) and find_processes(run_id)
    listed = run_cli("cleanup", run_id, "--dry-run", check=True).stdout
    assert "cgroup" in listed and "process" in listed
    doctor = run_cli("doctor", "--json", check=True).stdout
    assert run_id in doctor
    proc = run_cli("cleanup", run_id, check=True)
    assert "removed process" in proc.stdout and "removed cgroup" in proc.stdout
    assert not nearmetal_cgroups(run_id) and not find_processes(run_id)
    assert "nothing to clean up" in run_cli("cleanup", run_id, check=True).stdout


def test_run_ids_are_checked() -> None:
    with pytest.raises(NearmetalError):
        runlock.check_run_id("a/b")
    with pytest.raises(NearmetalError):
        runlock.check_run_id("x..y")
    assert runlock.check_run_id("20240101-101010-ab12") == "20240101-101010-ab12"


def test_an_interrupt_while_a_process_starts_waits_until_it_is_recorded() -> None:
    from nearmetal.host.interrupts import deferred, interrupts_as_exceptions

    steps = []
    with interrupts_as_exceptions() as caught, pytest.raises(KeyboardInterrupt):
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run by now, and held the interrupt
            steps.append("recorded")
        steps.append("not reached")
    assert steps == ["recorded"] and caught["signal"] == "SIGTERM"
