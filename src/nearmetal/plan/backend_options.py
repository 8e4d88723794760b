"""What a plan may say about where its trials run: the resources a trial needs from a scheduler, and each
backend's own options section (``slurm:``, ``kubernetes:`` …).

A leaf module (pydantic and the standard library): the plan model and the layers read it, the backends fill
it. Each backend declares its options as an ``Options`` pydantic model on its class
(``backends.base.Backend``); ``register_backend`` puts that model into ``BACKEND_OPTIONS`` under the
backend's name, and the plan model (``plan.models.plan_model``), its JSON Schema and the command line's
backend options (``commands.common.with_backend_options``) are built from it. A field annotated with
``Cli("--flag")`` is also a command-line option of ``run``, ``study``, ``check`` and ``resume``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nearmetal.registry import Registry
from nearmetal.units import MemoryInput, parse_memory_mib

# values that end up as sbatch directives or Kubernetes names: no spaces, no newlines, no shell syntax
SAFE_WORD = r"^[A-Za-z0-9][A-Za-z0-9_.,:=+@/-]{0,127}$"


class StrictOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Cli:
    """A backend option's command-line form: ``Annotated[str | None, Cli("--partition")]`` on a field of a
    backend's ``Options`` (help: the field's description), or in the backend's ``cli_only`` for what only
    the command line may give (``Cli("--kubeconfig", key="kubeconfig", help=…)``: never a plan's word).
    ``key`` is what the backend's ``from_plan`` receives (default: the field's name); ``type``: str, int,
    float (default: the field's)."""

    flag: str
    key: str = ""
    help: str = ""
    type: type | None = None
    envvar: str | None = None


# backend name → its Options model (a backend with no options has none); filled by
# ``backends.base.register_backend``, read by the plan model and the command line
BACKEND_OPTIONS: Registry[type[BaseModel]] = Registry(
    "backend options", packages=("nearmetal.backends",), by_name=True
)


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


__all__ = ["BACKEND_OPTIONS", "SAFE_WORD", "Cli", "Resources", "StrictOptions", "parse_memory_mib"]
