"""The Slurm backend against a real single-node Slurm (scripts/services/slurm.sh, started by scripts/test.sh):
submission, placement, outcomes, failures with their Slurm states, Ctrl-C, cleanup and re-attach, and the
CPU-quota study and an MPI workload compared with the local backend."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import nearmetal_argv, nearmetal_cgroups, needs_cpu_cgroup, needs_tool
from helpers import write_plan

import nearmetal
from nearmetal.backends.slurm import (
    SlurmBackend,
    SlurmOptions,
    expand_counts,
    find_jobs,
    parse_scontrol,
    placement_from_env,
)
from nearmetal.plan import load_plan
from nearmetal.run.runner import Runner
from nearmetal.run.trial import TrialOutcome, TrialSpec
from nearmetal.store import Store
from nearmetal.studies import study_path

PY = sys.executable


def _slurm_partition() -> str | None:
    if not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None:
        return None
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "UP" not in ping.stdout:
        return None
    return os.environ.get("NEARMETAL_TEST_SLURM_PARTITION", "debug")


@pytest.fixture(scope="module")
def partition() -> str:
    name = _slurm_partition()
    if name is None:
        pytest.skip("no Slurm: run `eval $(bash scripts/services/slurm.sh start)` (scripts/test.sh does)")
    return name


def run_jobs(run_id: str, running: bool = False) -> list[str]:
    """The run's jobs in the queue (``running``: only those already RUNNING, not PENDING)."""
    states = ["-t", "R"] if running else []
    argv = ["squeue", "-h", *states, "-o", "%j"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
    return [n for n in out.split() if n.startswith(f"nearmetal-{run_id}")]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


RATE_PLAN = f"""
name: slurm-rate
workloads:
  rate:
    kind: command
    params: {{argv: ["{PY}", "-c", "import os; print('rate=7', os.environ.get('SLURM_JOB_ID'))"],
              metrics: [{{name: rate, regex: 'rate=([0-9]+)', direction: higher}}]}}
variants:
  bare: []
  two-cpus:
    layers: []
    resources: {{cpus_per_task: 2, memory_mib: 300M}}
repeats: 2
timeout: 30s
"""


# --- pure parts (no Slurm needed) ------------------------------------------------------------------------


def test_counts_and_scontrol_records_are_parsed() -> None:
    assert expand_counts("2(x3),1") == [2, 2, 2, 1]
    assert expand_counts("4") == [4]
    assert expand_counts("") == []
    rec = parse_scontrol(
        "JobId=12 JobName=nearmetal-x JobState=OUT_OF_MEMORY Reason=OutOfMemory ExitCode=0:125 "
        "NodeList=node[1-2] StartTime=2024-01-01T10:00:00 Command=/bin/true"
    )
    assert (
        rec["JobState"] == "OUT_OF_MEMORY" and rec["NodeList"] == "node[1-2]" and rec["ExitCode"] == "0:125"
    )


def test_sbatch_options_follow_the_resources_and_refuse_line_breaks(tmp_path: Path) -> None:
    backend = SlurmBackend(SlurmOptions(partition="gpu", account="proj1", qos="normal"))
    spec = TrialSpec(
        run_id="r1",
        trial_key="abc-r0",
        trial_dir=str(tmp_path / "abc-r0"),
        workload="w",
        kind="command",
        variant="v",
        point={},
        params={"argv": ["true"]},
        layers=[],
        timeout=300,
        is_baseline=True,
        index=0,
        warmup=False,
        block=0,
        seed=1,
        resources={
            "nodes": 2,
            "tasks": 8,
            "tasks_per_node": 4,
            "cpus_per_task": 2,
            "memory_mib": 4096,
            "gpus": 4,
            "gpu_type": "a100",
            "exclusive": True,
            "constraint": "ib&skylake",
        },
    )
    opts = backend.sbatch_options(spec)
    for expected in (
        "--partition=gpu",
        "--account=proj1",
        "--qos=normal",
        "--time=7",  # 300 s trial + 2 min margin, in minutes
        "--nodes=2",
        "--ntasks=8",
        "--ntasks-per-node=4",
        "--cpus-per-task=2",
        "--mem=4096M",
        "--gres=gpu:a100:4",
        "--exclusive",
        "--constraint=ib&skylake",
        "--no-requeue",
    ):
        assert expected in opts
    script = backend.write_script([spec], array=False).read_text()
    assert "#SBATCH --job-name=nearmetal-r1-abc-r0" in script
    assert script.rstrip().splitlines()[-1].startswith(f"exec {PY} -m nearmetal.run.exec_trial ")
    assert json.loads((tmp_path / "abc-r0" / "spec.json").read_text())["trial_key"] == "abc-r0"
    with pytest.raises(ValueError):
        SlurmOptions(partition="debug\n#SBATCH --uid=0")
    with pytest.raises(ValueError):
        SlurmOptions(sbatch_args=["--comment=x --uid=0"])


def test_placement_from_slurm_variables() -> None:
    env = {
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_JOB_CPUS_PER_NODE": "2",
        "SLURM_TASKS_PER_NODE": "2",
        "SLURMD_NODENAME": "localhost",
        "SLURM_GPUS_ON_NODE": "1",
        "CUDA_VISIBLE_DEVICES": "0",
        "SLURM_JOB_PARTITION": "debug",
    }
    placement = placement_from_env(env)
    assert placement["backend"] == "slurm" and placement["host"] == "localhost"
    assert placement["nodes"] == ["localhost"] and placement["cpus_per_node"] == [2]
    assert placement["tasks_per_node"] == [2] and placement["gpus_per_node"] == [1]
    assert placement["slurm"]["job_id"] == "42"
    assert placement_from_env({}) == {}


# --- against the real Slurm ------------------------------------------------------------------------------


def test_trials_run_as_jobs_with_placement_and_job_files(tmp_path: Path, db_url: str, partition: str) -> None:
    plan = write_plan(tmp_path, RATE_PLAN)
    backend = SlurmBackend(SlurmOptions(partition=partition, poll_s=0.5))
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs", backend=backend)
    assert [r.status for r in result.records] == ["ok"] * 4
    results = nearmetal.load_results(result.run_id, db=db_url)
    job_ids = set()
    for trial in results.trials:
        placement = trial.placement
        assert placement["backend"] == "slurm"
        assert placement["nodes"] == ["localhost"] and placement["host"] == "localhost"
        assert placement["slurm"]["state"] == "COMPLETED"
        job_ids.add(placement["slurm"]["job_id"])
        expected_cpus = 2 if trial.variant == "two-cpus" else 1
        assert placement["cpus_per_node"] == [expected_cpus]
        # the workload really ran inside that job
        stdout = Path(trial.output_dir, "main.stdout").read_text()
        assert f"rate=7 {placement['slurm']['job_id']}" in stdout
        assert Path(trial.output_dir, f"slurm-{placement['slurm']['job_id']}.out").exists()
        script = Path(trial.output_dir, "job.sbatch").read_text()
        assert f"--partition={partition}" in script
        if trial.variant == "two-cpus":
            assert "--cpus-per-task=2" in script and "--mem=300M" in script
    assert len(job_ids) == 4
    events = Store(db_url).events(result.run_id)
    assert sorted(e["detail"]["job_id"] for e in events if e["kind"] == "backend-job") == sorted(job_ids)
    assert run_jobs(result.run_id) == []
    rate = next(c for c in results.cells if c.variant == "bare")
    assert results.analysis.metric(rate.cell_id, "rate").summary.n == 2


def test_cli_runs_a_plan_on_slurm(tmp_path: Path, run_cli, partition: str) -> None:
    plan = write_plan(tmp_path, RATE_PLAN.replace("repeats: 2", "repeats: 1"))
    proc = run_cli("run", str(plan), "--backend", "slurm", "--partition", partition, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "finished" and len(out["rows"]) >= 2


def test_requests_slurm_can_never_start_are_refused_before_anything_is_submitted(
    tmp_path: Path, run_cli, partition: str
) -> None:
    cpus = os.cpu_count() or 2
    plan = write_plan(
        tmp_path,
        RATE_PLAN.replace("cpus_per_task: 2", f"cpus_per_task: {cpus * 8}"),
    )
    proc = run_cli("run", str(plan), "--backend", "slurm", "--partition", partition, timeout=120)
    assert proc.returncode == 1
    assert "can never start" in proc.stderr and "rate/two-cpus" in proc.stderr
    assert "Requested node configuration is not available" in proc.stderr
    proc = run_cli("run", str(plan), "--backend", "slurm", "--partition", "no-such-partition", timeout=120)
    assert proc.returncode == 1 and "no partition 'no-such-partition'" in proc.stderr
    proc = run_cli(
        "run", str(plan), "--backend", "slurm", "--partition", partition, "--time", "3-00:00:00", timeout=120
    )
    assert proc.returncode == 1 and "MaxTime" in proc.stderr
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    assert store.list_runs() == []


def test_a_job_pending_forever_is_cancelled_and_recorded(tmp_path: Path, db_url: str, partition: str) -> None:
    # the time limit is above the partition's MaxTime: Slurm accepts the job and leaves it pending
    # (PartitionTimeLimit) forever. The check before the run catches it; here the runtime detection is tested
    plan = load_plan(write_plan(tmp_path, RATE_PLAN.replace("repeats: 2", "repeats: 1")))
    backend = SlurmBackend(SlurmOptions(partition=partition, time="3-00:00:00", poll_s=0.5))
    store = Store(db_url)
    runner = Runner(plan, store, tmp_path / "runs", backend=backend)
    specs = [runner.trial_spec(t) for t in plan_trials(plan)]

    class Hooks:
        def submitted(self, spec, job):
            pass

        def started(self, spec):
            pass

    started = time.time()
    outcomes = dict((s.trial_key, o) for s, o in backend.run_trials(specs, Hooks()))
    assert time.time() - started < 60
    assert len(outcomes) == 2
    for outcome in outcomes.values():
        assert outcome.status == "error"
        assert "can never start" in outcome.error
        assert "PartitionTimeLimit" in outcome.error or "PartitionConfig" in outcome.error
    assert run_jobs(runner.run_id) == []


def plan_trials(loaded):
    from nearmetal.run.runner import schedule

    return schedule(loaded.cells, "sequential", 0, 0, loaded.plan.repeats.min, 1)


def test_cancelled_oom_and_node_failure_keep_their_slurm_state(
    tmp_path: Path, db_url: str, partition: str
) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: slurm-failures
        workloads:
          cancelled:
            kind: command
            params: {{argv: ["{PY}", "-c", "import time; print('go', flush=True); time.sleep(120)"]}}
          oom:
            kind: command
            params: {{argv: ["{PY}", "-c", "b = bytearray(1500 * 2**20); print(len(b))"]}}
            resources: {{memory_mib: 200M}}
          ok:
            kind: command
            params: {{argv: ["{PY}", "-c", "print('fine')"]}}
        variants:
          bare: []
        order: sequential
        repeats: 1
        timeout: 150s
        """,
    )
    run_id = "slurmfail-" + str(os.getpid())

    def cancel_when_running() -> None:
        name = wait_for(lambda: [n for n in run_jobs(run_id, running=True) if n], timeout=60)[0]
        time.sleep(1.0)
        subprocess.run(["scancel", "--name", name], check=True, timeout=20)

    canceller = threading.Thread(target=cancel_when_running, daemon=True)
    canceller.start()
    loaded = load_plan(plan)
    backend = SlurmBackend(SlurmOptions(partition=partition, poll_s=0.5))
    result = Runner(loaded, Store(db_url), tmp_path / "runs", backend=backend, run_id=run_id).run()
    canceller.join(timeout=5)
    by = {r.trial.cell.workload: r for r in result.records}
    assert by["cancelled"].status == "cancelled", by["cancelled"].error
    assert "SIGTERM" in by["cancelled"].error or "CANCELLED" in by["cancelled"].error
    assert by["oom"].status == "oom", by["oom"].error
    assert "OUT_OF_MEMORY" in by["oom"].error
    assert by["ok"].status == "ok"
    trials = {t.workload: t for t in nearmetal.load_results(run_id, db=db_url).trials}
    assert trials["cancelled"].placement["slurm"]["state"] == "CANCELLED"
    assert trials["oom"].placement["slurm"]["state"] == "OUT_OF_MEMORY"


def test_node_failure_is_recorded_as_node_fail(tmp_path: Path, db_url: str, partition: str) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: slurm-node-fail
        workloads:
          long:
            kind: command
            params: {{argv: ["{PY}", "-c", "import time; time.sleep(120)"]}}
        variants:
          bare: []
        repeats: 1
        timeout: 150s
        """,
    )
    run_id = "slurmnode-" + str(os.getpid())

    def fail_node() -> None:
        # running, not pending: a pending job does not fail with the node
        wait_for(lambda: run_jobs(run_id, running=True), timeout=60)
        time.sleep(1.0)
        subprocess.run(
            ["scontrol", "update", "nodename=localhost", "state=down", "reason=nearmetal-test"],
            check=True,
            timeout=20,
        )

    failer = threading.Thread(target=fail_node, daemon=True)
    failer.start()
    try:
        backend = SlurmBackend(SlurmOptions(partition=partition, poll_s=0.5))
        result = Runner(
            load_plan(plan), Store(db_url), tmp_path / "runs", backend=backend, run_id=run_id
        ).run()
    finally:
        failer.join(timeout=5)
        subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], timeout=20)
        wait_for(
            lambda: (
                "idle"
                in subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout
            ),
            timeout=60,
        )
    record = result.records[0]
    assert record.status == "node-fail", record.error
    assert "NODE_FAIL" in record.error


@needs_cpu_cgroup
def test_ctrl_c_cancels_the_runs_jobs_and_the_layers_tear_down_on_the_node(
    tmp_path: Path, db_url: str, partition: str
) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: slurm-interrupt
        workloads:
          sleeper:
            kind: command
            params: {{argv: ["{PY}", "-c", "import time; time.sleep(120)"]}}
        variants:
          quota: [{{layer: cpu-quota, cpus: 0.5}}]
        repeats: 2
        timeout: 150s
        """,
    )
    env = {**os.environ, "NEARMETAL_DB": db_url}
    runner = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "--backend", "slurm", "--partition", partition, "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = wait_for(lambda: _run_id_of(db_url), timeout=60)
        wait_for(lambda: nearmetal_cgroups(run_id), timeout=60)
        assert run_jobs(run_id)
        runner.send_signal(signal.SIGINT)
        _, stderr = runner.communicate(timeout=90)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, stderr
    assert run_jobs(run_id) == []
    # exec-trial on the node caught scancel's SIGTERM and removed the quota's cgroup
    wait_for(lambda: not nearmetal_cgroups(run_id), timeout=30)


def _run_id_of(db_url: str) -> str | None:
    try:
        runs = Store(db_url).list_runs()
    except Exception:
        return None
    return runs[0].id if runs else None


def test_a_killed_runner_leaves_jobs_that_cleanup_finds_and_a_resume_collects(
    tmp_path: Path, db_url: str, partition: str, run_cli
) -> None:
    plan_path = write_plan(
        tmp_path,
        f"""
        name: slurm-reattach
        workloads:
          short:
            kind: command
            params: {{argv: ["{PY}", "-c", "import time; time.sleep(4); print('rate=3')"],
                      metrics: [{{name: rate, regex: 'rate=([0-9]+)', direction: higher}}]}}
        variants:
          bare: []
        repeats: 1
        timeout: 60s
        """,
    )
    env = {**os.environ, "NEARMETAL_DB": db_url}
    runner = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan_path), "--backend", "slurm", "--partition", partition, "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_id = wait_for(lambda: _run_id_of(db_url), timeout=60)
        wait_for(lambda: run_jobs(run_id), timeout=60)
        # the job is recorded (a runner killed between sbatch and this record leaves a job resume cannot
        # adopt: resume's cleanup cancels it and the trial runs again)
        wait_for(lambda: [e for e in Store(db_url).events(run_id) if e["kind"] == "backend-job"], timeout=30)
    finally:
        runner.kill()  # SIGKILL: no chance to cancel anything
        runner.wait(timeout=10)
    listed = run_cli("cleanup", run_id, "--dry-run", check=True).stdout
    assert "slurm job" in listed and f"nearmetal-{run_id}" in listed
    assert [str(x) for x in find_jobs(run_id)]
    # resume re-attaches: the job still running (or just ended) is waited for, not submitted again
    resumed = run_cli("resume", run_id, "--json", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    store = Store(db_url)
    assert [t.status for t in store.trials(run_id)] == ["ok"]
    jobs = [e for e in store.events(run_id) if e["kind"] == "backend-job"]
    assert len(jobs) == 1, jobs
    resumed_event = next(e for e in store.events(run_id) if e["kind"] == "resumed")
    assert resumed_event["detail"]["reattached"] == [store.trials(run_id)[0].trial_key]
    assert run_jobs(run_id) == []
    assert "nothing to clean up" in run_cli("cleanup", run_id, check=True).stdout


def test_cleanup_cancels_a_dead_runs_job(tmp_path: Path, partition: str, run_cli) -> None:
    name = f"nearmetal-cleanuptest{os.getpid()}-x"
    job = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--partition={partition}",
            f"--job-name={name}",
            "--output=/dev/null",
            "--wrap",
            "sleep 120",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    try:
        proc = run_cli("cleanup", f"cleanuptest{os.getpid()}", check=True)
        assert f"removed slurm job {job} {name}" in proc.stdout
        wait_for(
            lambda: (
                name
                not in subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout
            )
        )
    finally:
        subprocess.run(["scancel", job], timeout=20)


def test_outcome_of_a_job_that_never_wrote_one(tmp_path: Path) -> None:
    from nearmetal.backends.slurm import Job

    backend = SlurmBackend(SlurmOptions())
    spec_dir = tmp_path / "t"
    spec_dir.mkdir()
    (spec_dir / "slurm-999999.err").write_text("slurmstepd: error: *** JOB 999999 ON node1 CANCELLED ***\n")
    spec = TrialSpec("r", "t-r0", str(spec_dir), "w", "command", "v", {}, {}, [], 10, True, 0, False, 0, 0)
    backend.job_details = lambda task_id: {"JobState": "NODE_FAIL", "NodeList": "", "Reason": "NodeDown"}  # type: ignore[method-assign]
    outcome = backend.outcome(Job("999999", "n", [spec]), "999999", "", "")
    assert outcome.status == "node-fail" and "NODE_FAIL" in outcome.error and "CANCELLED" in outcome.error
    # an outcome the trial wrote is kept, Slurm's end state wins
    TrialOutcome(status="failed", wall_s=1.0, error="killed by SIGKILL").write(spec_dir / "outcome.json")
    backend.job_details = lambda task_id: {"JobState": "OUT_OF_MEMORY"}  # type: ignore[method-assign]
    outcome = backend.outcome(Job("999999", "n", [spec]), "999999", "", "")
    assert outcome.status == "oom" and "killed by SIGKILL" in outcome.error


# --- the same study through Slurm and locally --------------------------------------------------------------


def _rows(proc) -> dict[tuple[str, str], dict]:
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {(r["workload"], r["variant"]): r for r in out["rows"]}


def _agree(a: dict, b: dict, slack_pct: float = 10.0) -> bool:
    """Two loss estimates agree when their intervals overlap (or, on a busy shared machine, lie within
    ``slack_pct`` points of each other)."""
    overlap = a["ci_low_pct"] <= b["ci_high_pct"] and b["ci_low_pct"] <= a["ci_high_pct"]
    return overlap or abs(a["loss_pct"] - b["loss_pct"]) <= slack_pct


QUICK_CPU_QUOTA_REPEATS = load_plan(study_path("cpu-quota", quick=True)).plan.repeats.min


@pytest.mark.slow
@needs_cpu_cgroup
@needs_tool("lmp", "mpirun", "stress-ng")
def test_cpu_quota_study_through_slurm_gives_the_local_table(run_cli, partition: str) -> None:
    common = ("study", "cpu-quota", "--quick", "--json", "--no-html", "--seed", "11")
    local = _rows(run_cli(*common, timeout=900))
    slurm = _rows(run_cli(*common, "--backend", "slurm", "--partition", partition, timeout=900))
    assert local.keys() == slurm.keys()  # the same table shape
    compared = 0
    for key, row in slurm.items():
        # the quick form's repeats, whatever they are: both backends ran every one of them
        assert row["n"] == local[key]["n"] == QUICK_CPU_QUOTA_REPEATS and row["failed"] == 0
        assert row["metric"] == local[key]["metric"]
        if not row["baseline"] and not (row.get("contended") or local[key].get("contended")):
            # the quota costs the same wherever the trial runs (the layer runs inside the job, on the node).
            # How much it costs depends on how busy the shared machine is (a busy host leaves the processes
            # less than the quota anyway), so only the agreement is asserted, not the size; a row the run's
            # own noise evidence calls contended cannot be compared (the two runs are minutes apart)
            assert _agree(row, local[key]), (key, row, local[key])
            compared += 1
    if not compared:
        pytest.skip(f"every limited row contended in one of the runs (load {os.getloadavg()[0]:.1f})")


@pytest.mark.slow
@needs_tool("lmp", "mpirun")
@pytest.mark.parametrize("mpi", ["mpirun", "srun-pmix"])
def test_mpi_lammps_through_slurm_matches_local(
    tmp_path: Path, db_url: str, partition: str, mpi: str
) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: slurm-mpi
        workloads:
          lammps: {kind: lammps, params: {ranks: 2, atoms: 4000, steps: 200}}
        variants:
          bare: []
        repeats: 3
        timeout: 120s
        """,
    )
    local = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    backend = SlurmBackend(SlurmOptions(partition=partition, mpi=mpi, poll_s=0.5))
    remote = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs", backend=backend)
    assert [r.status for r in remote.records] == ["ok"] * 3, [r.error for r in remote.records]
    results = nearmetal.load_results(remote.run_id, db=db_url)
    for trial in results.trials:
        # two ranks, both in the job's allocation on its node
        assert trial.placement["tasks_per_node"] == [2]
        assert trial.placement["slurm"]["state"] == "COMPLETED"
        script = Path(trial.output_dir, "job.sbatch").read_text()
        assert "--ntasks=2" in script
        stdout = Path(trial.output_dir, "main.stdout").read_text()
        assert "2 MPI tasks" in stdout or "on 2 procs" in stdout
    spec = json.loads(Path(results.trials[0].output_dir, "spec.json").read_text())
    assert spec["mpi"] == mpi

    def rate(run_id: str) -> list[float]:
        res = nearmetal.load_results(run_id, db=db_url)
        return next(iter(res.values("timesteps_per_s").values()))

    local_rate, remote_rate = rate(local.run_id), rate(remote.run_id)
    # the same program on the same cores: within a factor of two even on a busy shared machine
    ratio = (sum(remote_rate) / len(remote_rate)) / (sum(local_rate) / len(local_rate))
    assert 0.5 < ratio < 2.0, (local_rate, remote_rate)


def test_parallel_trials_of_a_cell_become_one_job_array(tmp_path: Path, db_url: str, partition: str) -> None:
    plan = write_plan(tmp_path, RATE_PLAN.replace("repeats: 2", "repeats: 3"))
    backend = SlurmBackend(SlurmOptions(partition=partition, parallel=2, poll_s=0.5))
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs", backend=backend)
    assert sorted(r.status for r in result.records) == ["ok"] * 6
    trials = nearmetal.load_results(result.run_id, db=db_url).trials
    arrays: dict[str, set[str]] = {}
    for trial in trials:
        slurm = trial.placement["slurm"]
        assert slurm["array_job_id"] and slurm["job_id"].startswith(slurm["array_job_id"] + "_")
        arrays.setdefault(slurm["array_job_id"], set()).add(trial.variant)
        assert "rate=7" in Path(trial.output_dir, "main.stdout").read_text()
    # one array per cell (a cell's three repeats), each throttled to two tasks at once
    assert len(arrays) == 2 and all(len(v) == 1 for v in arrays.values())
    scripts = list((tmp_path / "runs" / result.run_id).glob("*.sbatch"))
    assert len(scripts) == 2 and all("#SBATCH --array=0-2%2" in p.read_text() for p in scripts)
    assert run_jobs(result.run_id) == []
