"""Run trials as Slurm batch jobs.

Each trial (or, with ``parallel > 1``, each cell's repeats in a batch, as a job array) becomes an sbatch
script in the trial's directory whose one command is ``python -m nearmetal exec-trial SPEC.json OUT.json``:
the layers (cgroup quota, namespaces, …) are set up on the node, inside the allocation, by the same code the
local backend uses, and the outcome comes back as a file on the shared filesystem. nearmetal polls
``squeue``/``scontrol`` (and ``sacct`` where accounting exists) at its own interval, records the Slurm
state of every job that did not end normally (CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, …), and stores
where each trial ran (node list expanded with ``scontrol show hostnames``, CPUs, tasks and GPUs per node).

Jobs are named ``nearmetal-<run id>-…`` so that Ctrl-C (``scancel`` of every job the run has), a resumed run
(re-attach to jobs still running) and ``nearmetal cleanup`` (a finder in ``cleanup.FINDERS``) find them.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.backends.base import RemoteBackend, RemoteHooks, register_backend
from nearmetal.backends.options import SlurmOptions
from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd
from nearmetal.host.leftovers import Leftover, finder, host_prefix
from nearmetal.run.trial import TrialOutcome, TrialSpec

COMMAND_TIMEOUT_S = 60.0
JOB_PREFIX = "nearmetal"
SPEC_NAME = "spec.json"  # the same names as nearmetal.backends.exec_trial's
OUTCOME_NAME = "outcome.json"
EXEC_MODULE = "nearmetal.backends.exec_trial"
SCRIPT_NAME = "job.sbatch"

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

DEFAULT_TEMPLATE = """#!/bin/sh
# written by nearmetal for run {run_id}; submit again by hand with: sbatch {script}
{directives}
{setup}
exec {command}
"""


class SlurmError(NearmetalError):
    """Slurm refused or lost something; the message carries its words."""


def _run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> hostcmd.Completed[str]:
    """A Slurm client command (its exit status is the caller's to read)."""
    return hostcmd.run(
        argv,
        timeout,
        error=SlurmError,
        install_fix="install the Slurm client (apt-get install -y slurm-client)",
        timeout_fix="check that slurmctld is up (scontrol ping)",
    )


def expand_counts(value: str) -> list[int]:
    """Slurm's compressed per-node counts, ``2(x3),1`` → ``[2, 2, 2, 1]``."""
    out: list[int] = []
    for part in filter(None, (value or "").split(",")):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            continue
        out += [int(match.group(1))] * int(match.group(2) or 1)
    return out


def hostnames(nodelist: str) -> list[str]:
    """``node[01-03],gpu7`` → its host names, as Slurm itself expands them (``scontrol show hostnames``)."""
    if not nodelist or nodelist in ("(null)", "None"):
        return []
    try:
        proc = _run(["scontrol", "show", "hostnames", nodelist], timeout=20)
    except SlurmError:
        return [nodelist]
    names = proc.stdout.split()
    return names or [nodelist]


def placement_from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Where a job runs, from the variables Slurm gives it (read inside the job, on the node)."""
    env = dict(os.environ if env is None else env)
    if "SLURM_JOB_ID" not in env:
        return {}
    nodes = hostnames(env.get("SLURM_JOB_NODELIST", ""))
    cpus = expand_counts(env.get("SLURM_JOB_CPUS_PER_NODE", ""))
    tasks = expand_counts(env.get("SLURM_TASKS_PER_NODE", ""))
    placement: dict[str, Any] = {
        "backend": "slurm",
        "host": env.get("SLURMD_NODENAME") or (nodes[0] if nodes else ""),
        "nodes": nodes,
        "cpus_per_node": cpus,
        "tasks_per_node": tasks,
    }
    gpus = env.get("SLURM_GPUS_ON_NODE")
    if gpus is not None:
        placement["gpus_per_node"] = [int(gpus)] * max(1, len(nodes)) if gpus.isdigit() else gpus
    for var, key in (("SLURM_JOB_GPUS", "gpu_ids"), ("CUDA_VISIBLE_DEVICES", "cuda_visible_devices")):
        if env.get(var):
            placement[key] = env[var]
    placement["slurm"] = {
        "job_id": env.get("SLURM_JOB_ID"),
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "partition": env.get("SLURM_JOB_PARTITION"),
        "nodelist": env.get("SLURM_JOB_NODELIST"),
        "cluster": env.get("SLURM_CLUSTER_NAME"),
    }
    placement["slurm"] = {k: v for k, v in placement["slurm"].items() if v is not None}
    return placement


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o`` → its Key=Value pairs (values may hold spaces only in known keys)."""
    out: dict[str, str] = {}
    for match in re.finditer(r"(\S+?)=(.*?)(?=\s+\S+?=|\s*$)", text.strip()):
        out.setdefault(match.group(1), match.group(2))
    return out


def _timestamp(value: str | None) -> float | None:
    if not value or value in ("Unknown", "None", "N/A"):
        return None
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _minutes_of(limit: str) -> float | None:
    """Slurm time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``, ``UNLIMITED``) → minutes."""
    if not limit or limit.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    days = 0
    if "-" in limit:
        d, _, limit = limit.partition("-")
        days = int(d)
        parts = [int(p) for p in limit.split(":")]
        parts += [0] * (3 - len(parts))
        h, m, s = parts
    else:
        parts = [int(p) for p in limit.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, s = 0, parts[0], parts[1]
        else:
            h, m, s = parts
    return days * 1440 + h * 60 + m + s / 60


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


class SlurmBackend(RemoteBackend):
    """Submit each trial as a batch job; poll; collect the outcome the job wrote; cancel on every exit."""

    name = "slurm"

    def __init__(
        self,
        options: SlurmOptions | None = None,
        python: str | None = None,
        template: str | None = None,
        setup: str = "",
    ) -> None:
        self.options = options or SlurmOptions()
        self.python = python or sys.executable
        self.template = template or DEFAULT_TEMPLATE
        self.setup = setup
        self._accounting: bool | None = None
        self._never_starts: dict[tuple[str, ...], str] = {}
        self._live: dict[str, Job] = {}
        # trial key -> a job a resumed run adopted (see reattach); run_trials waits for it, submits nothing
        self.reattached: dict[str, Job] = {}

    def options_record(self) -> dict[str, Any]:
        return self.options.model_dump(mode="json")

    def reattached_keys(self) -> set[str]:
        return set(self.reattached)

    # --- what to submit ------------------------------------------------------------------------------
    def time_limit(self, spec: TrialSpec) -> str:
        if self.options.time:
            return self.options.time
        # the trial's own timeout is enforced inside the job; Slurm's limit only has to be later
        return str(max(1, math.ceil((spec.timeout + 120) / 60)))

    def sbatch_options(self, spec: TrialSpec) -> list[str]:
        """The job's resource request (the same for every trial of a cell)."""
        r = spec.resources
        opts = []
        if self.options.partition:
            opts.append(f"--partition={self.options.partition}")
        if self.options.account:
            opts.append(f"--account={self.options.account}")
        if self.options.qos:
            opts.append(f"--qos={self.options.qos}")
        opts.append(f"--time={self.time_limit(spec)}")
        nodes = r.get("nodes") or 1
        opts.append(f"--nodes={nodes}")
        # at least a task per node: with fewer, Slurm shrinks the job to fewer nodes than asked
        opts.append(f"--ntasks={max(r.get('tasks') or 1, nodes)}")
        if r.get("tasks_per_node"):
            opts.append(f"--ntasks-per-node={r['tasks_per_node']}")
        opts.append(f"--cpus-per-task={r.get('cpus_per_task') or 1}")
        if r.get("memory_mib"):
            opts.append(f"--mem={r['memory_mib']}M")
        if r.get("gpus"):
            gpu = f"gpu:{r['gpu_type']}:{r['gpus']}" if r.get("gpu_type") else f"gpu:{r['gpus']}"
            opts.append(f"--gres={gpu}")
        if r.get("exclusive"):
            opts.append("--exclusive")
        if r.get("constraint"):
            opts.append(f"--constraint={r['constraint']}")
        # a node failure ends the job as NODE_FAIL (recorded) instead of a silent re-run
        opts.append("--no-requeue")
        opts += self.options.sbatch_args
        return opts

    def job_name(self, spec: TrialSpec, array: bool = False) -> str:
        if array:
            cell_id = spec.trial_key.split("-")[0]
            return f"{JOB_PREFIX}-{spec.run_id}-{cell_id}-b{spec.block}"
        return f"{JOB_PREFIX}-{spec.run_id}-{spec.trial_key}"

    def write_script(self, specs: list[TrialSpec], array: bool) -> Path:
        first = specs[0]
        for spec in specs:
            trial_dir = Path(spec.trial_dir)
            trial_dir.mkdir(parents=True, exist_ok=True)
            spec.mpi = self.options.mpi
            spec.write(trial_dir / SPEC_NAME)
            with contextlib.suppress(FileNotFoundError):
                (trial_dir / OUTCOME_NAME).unlink()
        if array:
            run_dir = Path(first.trial_dir).parent
            index = run_dir / f"{self.job_name(first, array=True)}.tasks"
            index.write_text("".join(f"{spec.trial_dir}\n" for spec in specs))
            script = run_dir / f"{self.job_name(first, array=True)}.sbatch"
            out_pattern = f"{run_dir}/slurm-%A_%a"
            workdir = str(run_dir)
            command = f"{shlex.quote(self.python)} -m {EXEC_MODULE} --task-list {shlex.quote(str(index))}"
        else:
            trial_dir = Path(first.trial_dir)
            script = trial_dir / SCRIPT_NAME
            out_pattern = f"{trial_dir}/slurm-%j"
            workdir = str(trial_dir)
            command = " ".join(
                shlex.quote(a)
                for a in [
                    self.python,
                    "-m",
                    EXEC_MODULE,
                    str(trial_dir / SPEC_NAME),
                    str(trial_dir / OUTCOME_NAME),
                ]
            )
        directives = [
            f"--job-name={self.job_name(first, array)}",
            f"--output={out_pattern}.out",
            f"--error={out_pattern}.err",
            f"--chdir={workdir}",
            *self.sbatch_options(first),
        ]
        if array:
            directives.append(f"--array=0-{len(specs) - 1}%{self.options.parallel}")
            # the trial keys, so `cleanup` can tell which trials an array job holds (squeue %k)
            directives.append(f"--comment=trials:{','.join(s.trial_key for s in specs)}")
        for d in directives:
            if "\n" in d or "\r" in d:
                raise SlurmError(f"an sbatch option holds a line break: {d!r}")
        text = self.template.format(
            run_id=first.run_id,
            script=shlex.quote(str(script)),
            directives="\n".join(f"#SBATCH {d}" for d in directives),
            setup=self.setup,
            command=command,
        )
        script.write_text(text)
        return script

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

    # --- checks before anything runs -------------------------------------------------------------------
    def check(self, loaded: Any) -> None:
        """Refuse, before any job is submitted, what Slurm would never start: no cluster, an unknown
        partition, a time limit above its MaxTime, a request no node can satisfy (``sbatch --test-only``)."""
        from nearmetal.run.trial import resources_for

        for tool in ("sbatch", "squeue", "scontrol", "scancel"):
            if shutil.which(tool) is None:
                raise SlurmError(
                    f"{tool} is not installed: the Slurm backend needs the Slurm client commands",
                    fix="apt-get install -y slurm-client (and point SLURM_CONF at your cluster's slurm.conf)",
                )
        ping = _run(["scontrol", "ping"], timeout=30)
        if ping.returncode != 0 or "UP" not in ping.stdout:
            raise SlurmError(
                f"no Slurm controller answers: {(ping.stdout + ping.stderr).strip()[:300]}",
                fix="start Slurm (bash scripts/services/slurm.sh start) or set SLURM_CONF",
            )
        partition = self.options.partition
        max_minutes: float | None = None
        if partition:
            part = _run(["scontrol", "show", "partition", "-o", partition])
            if part.returncode != 0:
                raise SlurmError(
                    f"Slurm has no partition {partition!r}: {part.stderr.strip()}",
                    fix="pick one of `sinfo -h -o %P`",
                )
            max_minutes = _minutes_of(parse_scontrol(part.stdout).get("MaxTime", ""))
        problems: dict[tuple[str, ...], list[str]] = {}
        for cell in loaded.cells:
            spec = TrialSpec(
                run_id="check",
                trial_key=cell.cell_id,
                trial_dir="/",
                workload=cell.workload,
                kind=cell.kind,
                variant=cell.variant,
                point=cell.point,
                params={},
                layers=[],
                timeout=cell.timeout,
                is_baseline=cell.is_baseline,
                index=0,
                warmup=False,
                block=0,
                seed=0,
                resources=resources_for(cell, loaded.plan),
            )
            opts = tuple(self.sbatch_options(spec))
            if opts in problems:
                if problems[opts]:
                    problems[opts].append(cell.key)
                continue
            reason = None
            minutes = _minutes_of(self.time_limit(spec))
            if max_minutes is not None and minutes is not None and minutes > max_minutes:
                reason = (
                    f"time limit {self.time_limit(spec)} is above partition {partition}'s MaxTime "
                    f"({max_minutes:g} min)"
                )
            else:
                test = _run(["sbatch", "--test-only", *opts, "--wrap", "true"])
                said = f"{test.stderr}\n{test.stdout}".strip()
                # --test-only answers "Job N to start at …" when the request can be satisfied
                if test.returncode != 0 and "to start at" not in said:
                    reason = (
                        said.replace("sbatch: error: ", "") or f"sbatch --test-only exited {test.returncode}"
                    )
            if reason:
                problems[opts] = [f"{reason} [{' '.join(opts)}]", cell.key]
            else:
                problems[opts] = []
        refused = {k: v for k, v in problems.items() if v}
        if refused:
            lines = [f"{v[0]}: {', '.join(v[1:4])}{' …' if len(v) > 4 else ''}" for v in refused.values()]
            raise SlurmError(
                "Slurm can never start these cells' jobs as asked; nothing was submitted:\n  "
                + "\n  ".join(lines),
                fix="lower the plan's resources or time, or pick another --partition",
            )

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

    # --- outcomes -------------------------------------------------------------------------------------
    def _log_tail(self, job: Job, task_id: str, spec: TrialSpec, limit: int = 2000) -> str:
        if job.array:
            array_id, _, index = task_id.partition("_")
            base = Path(spec.trial_dir).parent / f"slurm-{array_id}_{index}"
        else:
            base = Path(spec.trial_dir) / f"slurm-{job.job_id}"
        text = ""
        for suffix in (".err", ".out"):
            path = base.with_name(base.name + suffix)
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")[-limit:]
        return text[-limit:]

    def outcome(self, job: Job, task_id: str, state: str, reason: str) -> TrialOutcome:
        """The trial's outcome from what the job wrote and what Slurm says of the job."""
        spec = job.spec_of(task_id)
        details = self.job_details(task_id)
        state = (details.get("JobState") or state or "UNKNOWN").split()[0]
        reason = details.get("Reason") or reason
        out_path = Path(spec.trial_dir) / OUTCOME_NAME
        outcome: TrialOutcome | None = None
        if out_path.exists():
            with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
                outcome = TrialOutcome.read(out_path)
        submitted = _timestamp(details.get("SubmitTime")) or job.submitted_at
        started = _timestamp(details.get("StartTime"))
        ended = _timestamp(details.get("EndTime")) or time.time()
        slurm = {
            "job_id": task_id,
            "job_name": job.name,
            "state": state,
            "reason": reason,
            "exit_code": details.get("ExitCode"),
            "partition": details.get("Partition") or self.options.partition,
            "nodelist": details.get("NodeList"),
            "queue_wait_s": round(started - submitted, 3) if started and submitted else None,
        }
        slurm = {k: v for k, v in slurm.items() if v not in (None, "", "(null)")}
        if outcome is None:
            status = STATE_STATUS.get(state, "error")
            tail = self._log_tail(job, task_id, spec)
            error = f"Slurm job {task_id} ended {state}" + (
                f" ({reason})" if reason and reason != "None" else ""
            )
            if state == "COMPLETED":
                error = f"Slurm job {task_id} completed but wrote no {OUTCOME_NAME}"
            if tail.strip():
                error += ": " + tail.strip().splitlines()[-1][:300]
            nodes = hostnames(details.get("NodeList", ""))
            outcome = TrialOutcome(
                status=status,
                wall_s=max(0.0, ended - (started or ended)),
                error=error,
                stderr_tail=tail or None,
                placement={"backend": "slurm", "nodes": nodes, "host": nodes[0] if nodes else ""},
                started_at=started or submitted,
                ended_at=ended,
                output_dir=spec.trial_dir,
            )
        elif state in STATE_STATUS and state != "FAILED":
            # the job ended badly although the trial wrote an outcome (the OOM killer took the workload, the
            # node failed, scancel or the time limit stopped it): Slurm's word wins, the trial's are kept
            outcome.status = STATE_STATUS[state]
            outcome.error = f"Slurm job {task_id} ended {state}" + (
                f": {outcome.error}" if outcome.error else ""
            )
        outcome.placement = {**outcome.placement, "backend": "slurm"}
        outcome.placement["slurm"] = {**outcome.placement.get("slurm", {}), **slurm}
        outcome.output_dir = outcome.output_dir or spec.trial_dir
        return outcome

    def _never_starts_outcome(self, job: Job, task_id: str, reason: str) -> TrialOutcome:
        spec = job.spec_of(task_id)
        why = NEVER_STARTS.get(reason, reason)
        now = time.time()
        return TrialOutcome(
            status="error",
            wall_s=0.0,
            error=f"Slurm job {task_id} can never start ({reason}: {why}); it was cancelled. "
            "fix: lower the plan's resources or time, or pick another --partition",
            placement={
                "backend": "slurm",
                "slurm": {"job_id": task_id, "state": "PENDING", "reason": reason},
            },
            started_at=job.submitted_at,
            ended_at=now,
            output_dir=spec.trial_dir,
        )

    # --- the loop -------------------------------------------------------------------------------------
    def _batches(self, specs: list[TrialSpec]) -> list[tuple[list[TrialSpec], bool]]:
        """Submission units in schedule order: single trials, or (parallel + array) a cell's trials."""
        if self.options.parallel <= 1 or not self.options.array:
            return [([s], False) for s in specs]
        groups: dict[tuple[str, ...], list[TrialSpec]] = {}
        order: list[tuple[str, ...]] = []
        for spec in specs:
            # a cell's repeats across the blocks of this batch (trials overlap anyway when parallel > 1)
            key = (spec.trial_key.split("-")[0], str(spec.warmup), *self.sbatch_options(spec))
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(spec)
        return [(groups[k], len(groups[k]) > 1) for k in order]

    def run_trials(
        self, specs: list[TrialSpec], hooks: RemoteHooks
    ) -> Generator[tuple[TrialSpec, TrialOutcome], None, None]:
        """Submit, poll and collect; yields (spec, outcome) as jobs end. Closing the generator (Ctrl-C, an
        error in the runner) cancels every job still queued or running."""
        adopted = [s for s in specs if s.trial_key in self.reattached]
        pending = self._batches([s for s in specs if s.trial_key not in self.reattached])
        jobs: list[Job] = []
        for spec in adopted:
            job = self.reattached.pop(spec.trial_key)
            if job not in jobs:
                jobs.append(job)
            hooks.started(spec)
        try:
            while pending or any(not j.finished for j in jobs):
                in_flight = sum(len(j.specs) - len(j.done) for j in jobs)
                while pending and (in_flight == 0 or in_flight + len(pending[0][0]) <= self.options.parallel):
                    batch, array = pending.pop(0)
                    key = tuple(self.sbatch_options(batch[0]))
                    if key in self._never_starts:
                        for spec in batch:
                            yield spec, self._refused(spec, self._never_starts[key])
                        continue
                    try:
                        job = self.submit(batch, array)
                    except SlurmError as exc:
                        self._never_starts[key] = str(exc)
                        for spec in batch:
                            yield spec, self._refused(spec, str(exc))
                        continue
                    jobs.append(job)
                    in_flight += len(batch)
                    for i, spec in enumerate(batch):
                        hooks.submitted(
                            spec,
                            {"backend": self.name, "job_id": job.job_id, "task": i if array else None},
                        )
                        hooks.started(spec)
                active = [j for j in jobs if not j.finished]
                if not active:
                    continue
                yield from self._collect(active)
                if any(not j.finished for j in active):
                    time.sleep(self._interval(active))
        finally:
            self.cancel([j for j in jobs if not j.finished])

    def _interval(self, active: list[Job]) -> float:
        """Poll soon after a submission (short trials end in seconds), then every ``poll_s``."""
        age = time.time() - max(j.submitted_at for j in active)
        return min(self.options.poll_s, max(0.2, age / 4))

    def _refused(self, spec: TrialSpec, message: str) -> TrialOutcome:
        now = time.time()
        return TrialOutcome(
            status="error",
            wall_s=0.0,
            error=message,
            placement={"backend": "slurm"},
            started_at=now,
            ended_at=now,
            output_dir=spec.trial_dir,
        )

    def _collect(self, active: list[Job]) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
        """Outcomes of the tasks of these jobs that ended since the last poll."""
        seen = self.poll(active)
        for job in active:
            for task_id in job.task_ids():
                if task_id in job.done:
                    continue
                state, reason = seen.get(task_id, ("", ""))
                if job.array and not state:
                    # a pending array shows as one line (123_[0-4]) until its tasks start
                    pend = next((v for k, v in seen.items() if k.startswith(f"{job.job_id}_[")), None)
                    if pend:
                        state, reason = pend
                job.states[task_id] = (state, reason)
                if state == "PENDING" and reason in NEVER_STARTS:
                    self.cancel([job])
                    key = tuple(self.sbatch_options(job.specs[0]))
                    self._never_starts[key] = f"Slurm can never start this request ({reason})"
                    for tid in job.task_ids():
                        if tid not in job.done:
                            job.done.add(tid)
                            yield job.spec_of(tid), self._never_starts_outcome(job, tid, reason)
                    break
                if state in FINAL_STATES or not state:
                    # not listed any more: gone from squeue's memory; scontrol/sacct/the outcome tell
                    job.done.add(task_id)
                    yield job.spec_of(task_id), self.outcome(job, task_id, state, reason)
            if job.finished:
                self._live.pop(job.job_id, None)

    # --- cancel and re-attach -------------------------------------------------------------------------
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

    def reattach(self, state: Any) -> set[str]:
        """Resume: adopt the jobs a previous runner of this run submitted (``state.jobs``, from its
        ``backend-job`` events) that Slurm still knows or that left an outcome. Returns their trial keys;
        ``run_trials`` then waits for those jobs instead of submitting the trials again. A job Slurm forgot
        that left no outcome is not adopted: its trial runs again."""
        by_job: dict[str, Job] = {}
        real_tasks: dict[str, set[int]] = {}
        for detail in (getattr(state, "jobs", None) or {}).values():
            if detail.get("backend") != self.name or not detail.get("job_id"):
                continue
            spec_path = Path(detail["trial_dir"]) / SPEC_NAME
            if not spec_path.exists():
                continue
            spec = TrialSpec.read(spec_path)
            job_id = str(detail["job_id"])
            task = detail.get("task")
            job = by_job.setdefault(job_id, Job(job_id, "", [], array=task is not None))
            if task is None:
                job.specs = [spec]
            else:
                while len(job.specs) <= int(task):
                    job.specs.append(spec)
                job.specs[int(task)] = spec
                real_tasks.setdefault(job_id, set()).add(int(task))
        adopted: set[str] = set()
        for job in by_job.values():
            if job.array:
                # tasks whose trials are stored already (or were never recorded) are not waited for
                job.done.update(
                    f"{job.job_id}_{i}" for i in range(len(job.specs)) if i not in real_tasks[job.job_id]
                )
            seen = self.poll([job])
            for task_id in job.task_ids():
                if task_id in job.done:
                    continue
                spec = job.spec_of(task_id)
                known = task_id in seen or any(k.startswith(f"{job.job_id}_[") for k in seen)
                if known or (Path(spec.trial_dir) / OUTCOME_NAME).exists() or self.job_details(task_id):
                    adopted.add(spec.trial_key)
                else:
                    job.done.add(task_id)  # forgotten and no outcome: the trial runs again
            if not job.finished:
                for task_id in job.task_ids():
                    if task_id not in job.done:
                        self.reattached[job.spec_of(task_id).trial_key] = job
        return adopted


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


@register_backend("slurm")
def slurm_backend(plan: Any | None = None, **given: Any) -> SlurmBackend:
    """Batch jobs: the plan's ``slurm:`` options, overridden by the command line's."""
    base = getattr(plan, "slurm", None) or SlurmOptions()
    fields = set(SlurmOptions.model_fields)
    options = SlurmOptions.model_validate(
        {**base.model_dump(), **{k: v for k, v in given.items() if k in fields}}
    )
    return SlurmBackend(options, template=given.get("template"))
