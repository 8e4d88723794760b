"""A Slurm job's life as the backend sees it: submitted (``sbatch``), polled (``squeue``, then ``scontrol``
or ``sacct`` once it ended), cancelled (``scancel``, waited for); the states that end a job or can never
start it; the ``cleanup`` finder of a run's jobs."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from nearmetal.backends.slurm.commands import SlurmError, _run, parse_scontrol
from nearmetal.backends.slurm.script import SlurmScripts
from nearmetal.backends.spec import TrialSpec
from nearmetal.host.leftovers import Leftover, finder, host_prefix

# pending reasons that mean the job can never start as asked (not "wait a while")
NEVER_STARTS = {
    "PartitionTimeLimit": "the time limit is above the partition's MaxTime",
    "PartitionNodeLimit": "the node count is outside the partition's limits",
    "PartitionConfig": "the request does not fit the partition's configuration",
    "BadConstraints": "no node has the requested features",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
    "AccountNotAllowed": "the account may not use this partition",
    "QOSNotAllowed": "the QOS may not use this partition",
    "DependencyNeverSatisfied": "a dependency can never be satisfied",
    "QOSMaxWallDurationPerJobLimit": "the time limit is above the QOS's per-job maximum",
    "QOSMaxCpuPerJobLimit": "the CPU count is above the QOS's per-job maximum",
    "QOSMaxNodePerJobLimit": "the node count is above the QOS's per-job maximum",
    "QOSMaxGRESPerJob": "the GPU/GRES count is above the QOS's per-job maximum",
    "QOSMaxMemoryPerJob": "the memory is above the QOS's per-job maximum",
}
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
    "SPECIAL_EXIT",
}
# a Slurm end state → the trial's status (COMPLETED: what the trial itself reported)
STATE_STATUS = {
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "OUT_OF_MEMORY": "oom",
    "NODE_FAIL": "node-fail",
    "BOOT_FAIL": "node-fail",
    "PREEMPTED": "preempted",
    "REVOKED": "cancelled",
    "SPECIAL_EXIT": "failed",
}


@dataclass
class Job:
    """One sbatch submission: a single trial, or a job array whose task i is ``specs[i]``."""

    job_id: str
    name: str
    specs: list[TrialSpec]
    array: bool = False
    submitted_at: float = field(default_factory=time.time)
    # per task id ("123" or "123_4"): last seen state and reason
    states: dict[str, tuple[str, str]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)

    def task_ids(self) -> list[str]:
        if not self.array:
            return [self.job_id]
        return [f"{self.job_id}_{i}" for i in range(len(self.specs))]

    def spec_of(self, task_id: str) -> TrialSpec:
        if not self.array:
            return self.specs[0]
        return self.specs[int(task_id.rpartition("_")[2])]

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.specs)


class JobQueue(SlurmScripts):
    """Submit, poll, read and cancel jobs."""

    _accounting: bool | None
    _live: dict[str, Job]

    def submit(self, specs: list[TrialSpec], array: bool = False) -> Job:
        script = self.write_script(specs, array)
        proc = _run(["sbatch", "--parsable", str(script)])
        if proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip().replace("sbatch: error: ", "")
            raise SlurmError(f"sbatch refused the job: {message}")
        job_id = proc.stdout.strip().split(";")[0]
        job = Job(job_id, self.job_name(specs[0], array), specs, array=array)
        self._live[job_id] = job
        return job

    # --- state ----------------------------------------------------------------------------------------
    def _has_accounting(self) -> bool:
        if self._accounting is None:
            proc = (
                _run(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], timeout=20)
                if shutil.which("sacct")
                else None
            )
            self._accounting = bool(
                proc is not None and proc.returncode == 0 and "disabled" not in proc.stderr
            )
        return self._accounting

    def poll(self, jobs: list[Job]) -> dict[str, tuple[str, str]]:
        """Task id → (state, reason) for every task of these jobs that Slurm still knows."""
        ids = ",".join(j.job_id for j in jobs)
        proc = _run(["squeue", "-h", "-r", "-t", "all", "-j", ids, "-o", "%i|%T|%r"])
        seen: dict[str, tuple[str, str]] = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                seen[parts[0]] = (parts[1], parts[2])
        return seen

    def job_details(self, task_id: str) -> dict[str, str]:
        """scontrol's record of a job (kept MinJobAge seconds after its end), else sacct's, else {}."""
        proc = _run(["scontrol", "show", "job", "-o", task_id])
        if proc.returncode == 0 and proc.stdout.strip():
            details = parse_scontrol(proc.stdout.splitlines()[0])
            if details:
                return details
        if self._has_accounting():
            acct = _run(
                [
                    "sacct",
                    "-n",
                    "-X",
                    "-P",
                    "-j",
                    task_id,
                    "-o",
                    "JobID,State,ExitCode,NodeList,Submit,Start,End,Reason",
                ]
            )
            for line in acct.stdout.splitlines():
                parts = line.split("|")
                if len(parts) >= 8 and parts[0] == task_id:
                    return {
                        "JobState": parts[1].split()[0],
                        "ExitCode": parts[2],
                        "NodeList": parts[3],
                        "SubmitTime": parts[4],
                        "StartTime": parts[5],
                        "EndTime": parts[6],
                        "Reason": parts[7],
                    }
        return {}

    # --- cancel --------------------------------------------------------------------------------------
    def cancel(self, jobs: list[Job], wait_s: float = 30.0) -> None:
        """scancel these jobs and wait until Slurm has stopped them (their layers tear down on SIGTERM)."""
        ids = [j.job_id for j in jobs]
        if not ids:
            return
        with contextlib.suppress(SlurmError):
            _run(["scancel", *ids])
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                seen = self.poll(jobs)
                if all(state in FINAL_STATES for state, _ in seen.values()):
                    break
                time.sleep(0.5)
        for job_id in ids:
            self._live.pop(job_id, None)


@finder
def find_jobs(run_id: str | None = None) -> list[Any]:
    """``cleanup`` finder: Slurm jobs of a run (or of every nearmetal run) still queued or running."""

    if shutil.which("squeue") is None:
        return []
    try:
        proc = _run(["squeue", "-h", "-o", "%i|%j|%T|%k"], timeout=15)
    except SlurmError:
        return []
    if proc.returncode != 0:
        return []
    prefix = host_prefix(run_id)
    found = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4 or not parts[1].startswith(prefix):
            continue
        job_id = parts[0].split("_")[0]
        comment = parts[3] if parts[3].startswith("trials:") else ""

        def remove(job_id: str = job_id) -> None:
            proc = _run(["scancel", job_id])
            if proc.returncode != 0:
                raise SlurmError(f"scancel {job_id}: {proc.stderr.strip()}")

        name = f"{parts[0]} {parts[1]} ({parts[2]})" + (f" {comment}" if comment else "")
        found.append(Leftover("slurm job", name, remove, run_id=run_id, priority=10))
    return found
