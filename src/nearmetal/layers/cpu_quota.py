"""CPU quota: the trial's process tree in a fresh cgroup whose quota is a number of CPUs.

This is what a Kubernetes pod's CPU limit does (seed 000): the kubelet writes ``limit × period`` into the
pod cgroup's ``cpu.max`` (v2) or ``cpu.cfs_quota_us`` (v1); the CFS scheduler then throttles the group for the
rest of every period once the quota is used, however idle the node is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from nearmetal.host import cgroups
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec


class CpuQuotaConfig(LayerConfig):
    layer: Literal["cpu-quota"] = "cpu-quota"
    cpus: float = Field(gt=0, le=4096, description="quota in CPUs: 1.2 means 120000 µs per 100000 µs period")
    period_us: int = Field(100_000, ge=1000, le=1_000_000, description="CFS period (Kubernetes uses 100 ms)")
    cgroup_root: Path = Field(cgroups.DEFAULT_ROOT, description="where the cgroup filesystem is mounted")
    version: Literal["auto", "v1", "v2"] = Field("auto", description="cgroup version; auto detects it")


@register_layer
class CpuQuotaLayer(Layer[CpuQuotaConfig]):
    kind = "cpu-quota"
    family = "cpu"
    Config = CpuQuotaConfig
    description = "a cgroup CPU quota (what a pod CPU limit writes into cpu.max)"
    needs_root = True
    root_because = "it creates a cgroup and writes its CPU quota"
    rootless_alternative = (
        "an ordinary user may write a CPU quota only in a cgroup subtree delegated to it, and cgroup v1 has no "
        "safe delegation; on a cgroup v2 host with a delegated subtree (systemd: Delegate=yes for "
        "user@.service; `nearmetal doctor --check rootless-cgroup` says whether this host has one) run the "
        "whole of nearmetal under a quota: systemd-run --user --scope -p CPUQuota=120% nearmetal run … (one "
        "quota for every variant)"
    )

    def __init__(self, config: CpuQuotaConfig) -> None:
        super().__init__(config)
        self.group: cgroups.Cgroup | None = None

    @classmethod
    def example_config(cls) -> dict[str, object]:
        return {"layer": "cpu-quota", "cpus": 0.5}

    def hierarchy(self) -> cgroups.CgroupHierarchy:
        return cgroups.hierarchy_for(self.config.cgroup_root, self.config.version, ("cpu",))

    def setup(self, ctx: TrialContext) -> None:
        hierarchy = self.hierarchy()
        self.group = hierarchy.create(ctx.cgroup_name("cpu"), ["cpu", "cpuacct"])
        quota_us, period_us = self.group.set_cpu_quota(self.config.cpus, self.config.period_us)
        ctx.placement["cpu_quota"] = {
            "cgroup_version": hierarchy.version,
            "cgroup": [str(p) for p in self.group.paths],
            "quota_us": quota_us,
            "period_us": period_us,
        }

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        assert self.group is not None
        process.cgroup_procs.extend(self.group.procs_files())
        return process

    def collect(self, ctx: TrialContext) -> list[Metric]:
        assert self.group is not None
        stat = self.group.cpu_stat()
        metrics = [
            Metric("cpu_periods", stat.nr_periods, "periods", "lower", source="cgroup"),
            Metric("throttled_periods", stat.nr_throttled, "periods", "lower", source="cgroup"),
            Metric("throttled_pct", 100.0 * stat.throttled_fraction, "%", "lower", source="cgroup"),
            Metric("throttled_s", stat.throttled_s, "s", "lower", source="cgroup"),
        ]
        if stat.usage_s is not None:
            metrics.append(Metric("cgroup_cpu_s", stat.usage_s, "s", "lower", source="cgroup"))
        return metrics

    def teardown(self, ctx: TrialContext) -> None:
        if self.group is not None:
            self.group.remove()
