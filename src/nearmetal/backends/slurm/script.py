"""The sbatch script of a trial, or of a cell's repeats as a job array: its directives (the resource
request, the time limit, the names ``cleanup`` finds) and its one command, ``python -m
nearmetal.run.exec_trial SPEC.json OUT.json``."""

from __future__ import annotations

import contextlib
import math
import shlex
from pathlib import Path

from nearmetal.backends.base import RemoteBackend
from nearmetal.backends.slurm.commands import SlurmError
from nearmetal.backends.slurm.options import SlurmOptions
from nearmetal.backends.spec import TrialSpec

JOB_PREFIX = "nearmetal"
SPEC_NAME = "spec.json"  # the same names as nearmetal.run.exec_trial's
OUTCOME_NAME = "outcome.json"
EXEC_MODULE = "nearmetal.run.exec_trial"
SCRIPT_NAME = "job.sbatch"

DEFAULT_TEMPLATE = """#!/bin/sh
# written by nearmetal for run {run_id}; submit again by hand with: sbatch {script}
{directives}
{setup}
exec {command}
"""


class SlurmScripts(RemoteBackend):
    """The Slurm backend's part that writes what is submitted."""

    options: SlurmOptions
    python: str
    template: str
    setup: str

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
