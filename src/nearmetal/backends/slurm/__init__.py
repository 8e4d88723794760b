"""Run trials as Slurm batch jobs (the ``slurm`` backend).

Each trial (or, with ``parallel > 1``, each cell's repeats in a batch, as a job array) becomes an sbatch
script in the trial's directory whose one command is ``python -m nearmetal exec-trial SPEC.json OUT.json``:
the layers (cgroup quota, namespaces, …) are set up on the node, inside the allocation, by the same code the
local backend uses, and the outcome comes back as a file on the shared filesystem. nearmetal polls
``squeue``/``scontrol`` (and ``sacct`` where accounting exists) at its own interval, records the Slurm
state of every job that did not end normally (CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, …), and stores
where each trial ran (node list expanded with ``scontrol show hostnames``, CPUs, tasks and GPUs per node).

Jobs are named ``nearmetal-<run id>-…`` so that Ctrl-C (``scancel`` of every job the run has), a resumed run
(re-attach to jobs still running) and ``nearmetal cleanup`` (a finder in ``cleanup.FINDERS``) find them.

The parts, one module each: ``options`` (what a plan and the command line may set), ``commands`` (Slurm's
client commands and what they print), ``script`` (the sbatch script and its directives), ``queue`` (submit,
poll, cancel; the ``cleanup`` finder), ``outcome`` (a trial's outcome from what the job wrote and Slurm
says), ``check`` (what Slurm would never start, refused before anything is submitted), ``reattach`` (a
resumed run adopts its jobs) and ``backend`` (the loop that puts them together).
"""

from nearmetal.backends.slurm.backend import SlurmBackend
from nearmetal.backends.slurm.commands import (
    SlurmError,
    expand_counts,
    parse_scontrol,
    placement_from_env,
)
from nearmetal.backends.slurm.options import SlurmOptions
from nearmetal.backends.slurm.queue import FINAL_STATES, NEVER_STARTS, STATE_STATUS, Job, find_jobs
from nearmetal.backends.slurm.script import DEFAULT_TEMPLATE, JOB_PREFIX
from nearmetal.host.slurmnodes import hostnames

__all__ = [
    "DEFAULT_TEMPLATE",
    "FINAL_STATES",
    "JOB_PREFIX",
    "NEVER_STARTS",
    "STATE_STATUS",
    "Job",
    "SlurmBackend",
    "SlurmError",
    "SlurmOptions",
    "expand_counts",
    "find_jobs",
    "hostnames",
    "parse_scontrol",
    "placement_from_env",
]
