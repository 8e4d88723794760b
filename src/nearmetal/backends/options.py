"""What a plan may say about where its trials run: the resources a trial needs from a scheduler, and the
options of the Slurm and Kubernetes backends. Pydantic models only (the plan model imports this module);
command-line options override the plan's values."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# values that end up as sbatch directives or Kubernetes names: no spaces, no newlines, no shell syntax
SAFE_WORD = r"^[A-Za-z0-9][A-Za-z0-9_.,:=+@/-]{0,127}$"
MEMORY_UNITS = {
    "k": 1 / 1024,
    "ki": 1 / 1024,
    "m": 1.0,
    "mi": 1.0,
    "g": 1024.0,
    "gi": 1024.0,
    "t": 1024.0**2,
    "ti": 1024.0**2,
}


# a size as a plan writes it (the plan's JSON Schema describes this, not the MiB it becomes)
MEMORY_PATTERN = r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]i?)?[bB]?\s*$"
MemoryInput = Annotated[float, Field(ge=1)] | Annotated[str, Field(pattern=MEMORY_PATTERN)]


def parse_memory_mib(value: Any) -> int:
    """``2G``, ``2Gi``, ``1500M``, ``1500`` (MiB) → MiB. Slurm's and Kubernetes' suffixes both mean powers
    of two here (Slurm's M and G are MiB and GiB)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 2G or 1500M")
    if isinstance(value, int | float):
        mib = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]i?)?[bB]?\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a size such as 2G, 2Gi or 1500M")
        mib = float(match.group(1)) * MEMORY_UNITS[(match.group(2) or "m").lower()]
    else:
        raise ValueError("must be a size such as 2G or 1500M")
    if mib < 1:
        raise ValueError("must be at least 1M")
    return round(mib)


class StrictOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(StrictOptions):
    """What one trial needs from a scheduler. The workload gives defaults (LAMMPS: one task per rank); the
    plan's workload and variant ``resources`` override them. The local backend ignores them."""

    nodes: int | None = Field(None, ge=1, le=100_000, description="nodes (sbatch --nodes)")
    tasks: int | None = Field(None, ge=1, le=10_000_000, description="tasks = MPI ranks (sbatch --ntasks)")
    tasks_per_node: int | None = Field(None, ge=1, le=100_000, description="sbatch --ntasks-per-node")
    cpus_per_task: int | None = Field(None, ge=1, le=100_000, description="sbatch --cpus-per-task")
    memory_mib: int | None = Field(
        None, description="memory per node, e.g. 4G (sbatch --mem; Kubernetes memory request/limit)"
    )
    gpus: int | None = Field(None, ge=0, le=1024, description="GPUs per node (--gres=gpu:N; nvidia.com/gpu)")
    gpu_type: str | None = Field(None, pattern=SAFE_WORD, description="GPU model for --gres=gpu:TYPE:N")
    exclusive: bool = Field(False, description="whole nodes, shared with no other job (sbatch --exclusive)")
    constraint: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_&|\[\]*(),.:-]{1,256}$", description="--constraint"
    )

    @field_validator("memory_mib", mode="before", json_schema_input_type=MemoryInput | None)
    @classmethod
    def _memory(cls, value: Any) -> int | None:
        return None if value is None else parse_memory_mib(value)


class SlurmOptions(StrictOptions):
    """The Slurm backend's options (``--partition`` etc. on the command line override them)."""

    partition: str | None = Field(None, pattern=SAFE_WORD)
    account: str | None = Field(None, pattern=SAFE_WORD)
    qos: str | None = Field(None, pattern=SAFE_WORD)
    time: str | None = Field(
        None,
        pattern=r"^[0-9]+(-[0-9]{1,2})?(:[0-9]{1,2}){0,2}$",
        description="time limit per job (sbatch --time: MM, HH:MM:SS, D-HH); default: the trial timeout + 2 min",
    )
    parallel: int = Field(
        1,
        ge=1,
        le=10_000,
        description="jobs in flight at once (1: one after the other, like the local backend)",
    )
    array: bool = Field(
        True, description="with parallel > 1: a cell's repeats in a batch become one job array"
    )
    mpi: Literal["mpirun", "srun-pmix"] = Field(
        "mpirun", description="MPI launch inside the job: mpirun in the allocation, or srun --mpi=pmix"
    )
    poll_s: float = Field(1.0, gt=0, le=600, description="how often squeue/scontrol are asked")
    sbatch_args: list[str] = Field(default_factory=list, description="more sbatch options, one per item")

    @field_validator("sbatch_args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not re.fullmatch(r"--?[A-Za-z][A-Za-z0-9-]*(=[^\s]+)?", arg):
                raise ValueError(f"{arg!r} is not one sbatch option such as --reservation=maint")
        return value


class KubernetesOptions(StrictOptions):
    """The Kubernetes backend's options (``--namespace``, ``--image`` on the command line override them)."""

    namespace: str = Field("default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    image: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$",
        description="container image that has nearmetal's workload programs (lmp, stress-ng, …)",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    node_selector: dict[str, str] = Field(default_factory=dict)
    poll_s: float = Field(1.0, gt=0, le=600)
    pending_timeout_s: float = Field(
        600.0, gt=0, description="a pod still unscheduled after this long is reported and deleted"
    )
    fair_requests: bool = Field(
        True,
        description="every pod whose resources no pod layer sets asks for the same CPU request (the plan's "
        "smallest cpu-quota limit): the unlimited baseline is Burstable with the limited pods' cpu.shares, "
        "so the variants differ only in their limit (false: a pod without layers is BestEffort)",
    )
    teardown_timeout_s: float = Field(
        60.0,
        ge=0,
        le=600,
        description="how long to wait after a trial for its pod to be gone from the API server and its "
        "cgroup from the node before the next trial starts (the wait is recorded, not measured)",
    )
    log_settle_s: float = Field(
        15.0,
        ge=0,
        le=600,
        description="how long a finished pod's log is read again until it ends with the entry point's "
        "closing mark (the runtime can still be writing it when the API server reports the pod done)",
    )
