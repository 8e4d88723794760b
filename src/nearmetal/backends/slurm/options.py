"""The Slurm backend's options: the plan's ``slurm:`` section; ``--partition``, ``--account``, ``--time``
and ``--parallel`` on the command line override it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from nearmetal.plan.backend_options import SAFE_WORD, Cli, StrictOptions


class SlurmOptions(StrictOptions):
    """The Slurm backend's options (``--partition`` etc. on the command line override them)."""

    partition: Annotated[str | None, Cli("--partition")] = Field(
        None, pattern=SAFE_WORD, description="partition (sbatch --partition)"
    )
    account: Annotated[str | None, Cli("--account")] = Field(
        None, pattern=SAFE_WORD, description="account to charge (sbatch --account)"
    )
    qos: str | None = Field(None, pattern=SAFE_WORD)
    time: Annotated[str | None, Cli("--time")] = Field(
        None,
        pattern=r"^[0-9]+(-[0-9]{1,2})?(:[0-9]{1,2}){0,2}$",
        description="time limit per job (sbatch --time: MM, HH:MM:SS, D-HH); default: the trial timeout + 2 min",
    )
    parallel: Annotated[int, Cli("--parallel")] = Field(
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
