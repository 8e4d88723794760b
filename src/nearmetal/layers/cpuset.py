"""cpuset: the trial runs on a given set of CPUs (a cgroup cpuset) — the CPU analog of a MIG slice.

What Kubernetes' static CPU manager does for a Guaranteed pod, and Slurm's task/cgroup plugin for a job:
the group's ``cpuset.cpus`` lists the CPUs its tasks may run on (``sched_getaffinity`` then shows only
those, so programs that size their thread pools by it scale with the partition). ``cpus`` is a CPU list
("0-3,8") or a number of CPUs (the highest-numbered ones of what this host allows; CPU 0 usually takes
more interrupts) or ``all``. In cgroup v1 a new cpuset group has empty ``cpuset.cpus`` and ``cpuset.mems`` and
refuses tasks until both are written; in v2 the controller is enabled in the parent's
``cgroup.subtree_control`` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from nearmetal.errors import NearmetalError
from nearmetal.host import cgroups
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.workloads.base import ProcessSpec


class CpusetConfig(LayerConfig):
    layer: Literal["cpuset"] = "cpuset"
    cpus: str | int = Field(
        description="a CPU list such as '0-1' or '3', a number of CPUs, or 'all' (every CPU: partitioning "
        "enabled with one full-size partition)"
    )
    mems: str | None = Field(None, description="memory nodes (default: every node the parent has)")
    cgroup_root: Path = Field(cgroups.DEFAULT_ROOT, description="where the cgroup filesystem is mounted")
    version: Literal["auto", "v1", "v2"] = Field("auto", description="cgroup version; auto detects it")

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, value: str | int) -> str | int:
        if isinstance(value, bool):
            raise ValueError("must be a CPU list such as '0-1' or a number of CPUs")
        if isinstance(value, int):
            if value < 1:
                raise ValueError("a partition needs at least 1 CPU")
            return value
        if value == "all":
            return value
        try:
            cpus = cgroups.parse_cpu_list(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a CPU list such as '0-1', a number, or 'all'") from None
        if not cpus:
            raise ValueError("must name at least one CPU, e.g. '0' or '0-1'")
        return value

    @field_validator("mems")
    @classmethod
    def _mems(cls, value: str | None) -> str | None:
        if value is not None and not cgroups.parse_cpu_list(value):
            raise ValueError("must name at least one memory node, e.g. '0'")
        return value


def choose_cpus(wanted: str | int, allowed: list[int]) -> list[int]:
    """The CPUs of the partition: the list as given (each must be allowed here), the last N allowed, or all."""
    if wanted == "all":
        return list(allowed)
    if isinstance(wanted, int):
        if wanted > len(allowed):
            raise NearmetalError(
                f"a cpuset of {wanted} CPUs asked for, but this host allows {len(allowed)} "
                f"({cgroups.format_cpu_list(allowed)})",
                fix=f"use at most {len(allowed)} CPUs",
            )
        return allowed[-wanted:]
    cpus = cgroups.parse_cpu_list(wanted)
    missing = [c for c in cpus if c not in allowed]
    if missing:
        raise NearmetalError(
            f"cpuset CPU(s) {cgroups.format_cpu_list(missing)} are not available here "
            f"(this host allows {cgroups.format_cpu_list(allowed)})",
            fix="pick CPUs from the allowed list, or give a number of CPUs instead",
        )
    return cpus


@register_layer
class CpusetLayer(Layer[CpusetConfig]):
    kind = "cpuset"
    family = "partition"
    Config = CpusetConfig
    description = "a cgroup cpuset: the trial may run only on the given CPUs (a CPU partition)"
    needs_root = True
    root_because = "it creates a cgroup and writes its cpuset"
    rootless_alternative = (
        "pin the processes instead (sched_setaffinity needs no root): a command workload with argv "
        "[taskset, -c, LIST, …]; no memory-node or exclusivity guarantee"
    )

    def __init__(self, config: CpusetConfig) -> None:
        super().__init__(config)
        self.group: cgroups.Cgroup | None = None

    @classmethod
    def example_config(cls) -> dict[str, object]:
        return {"layer": "cpuset", "cpus": 1}

    def hierarchy(self) -> cgroups.CgroupHierarchy:
        return cgroups.hierarchy_for(self.config.cgroup_root, self.config.version, ("cpuset",))

    def setup(self, ctx: TrialContext) -> None:
        hierarchy = self.hierarchy()
        parent_cpus, parent_mems = hierarchy.parent_cpuset()
        cpus = choose_cpus(self.config.cpus, cgroups.parse_cpu_list(parent_cpus))
        mems = self.config.mems or parent_mems
        self.group = hierarchy.create(ctx.cgroup_name("cpuset"), ["cpuset"])
        self.group.set_cpuset(cgroups.format_cpu_list(cpus), mems)
        ctx.placement["cpuset"] = {
            "cgroup_version": hierarchy.version,
            "cgroup": [str(p) for p in self.group.paths],
            "cpus": cgroups.format_cpu_list(cpus),
            "cpu_count": len(cpus),
            "mems": mems,
            "host_cpus": parent_cpus,
            "host_cpu_count": len(cgroups.parse_cpu_list(parent_cpus)),
        }

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        assert self.group is not None
        process.cgroup_procs.extend(self.group.procs_files())
        return process

    def teardown(self, ctx: TrialContext) -> None:
        if self.group is not None:
            self.group.remove()
