"""cpu-quota → a pod CPU limit: what writes limit × period into the pod's cgroup (seed 000's quota)."""

from __future__ import annotations

from typing import Any

from nearmetal.backends.podmaps import PodShape, cpu_quantity, maps_layer


@maps_layer("cpu-quota")
def map_cpu_quota(config: Any, shape: PodShape) -> None:
    # a pod CPU limit is what writes limit × period into cpu.max (cpu.cfs_quota_us): the same quota
    cpu = cpu_quantity(config.cpus)
    shape.limits["cpu"] = cpu
    shape.requests.setdefault("cpu", cpu)
    shape.cpu_limit = config.cpus
    shape.resources_mode = "limits"
    if config.period_us != 100_000:
        shape.notes.append(
            f"cpu-quota period {config.period_us} µs cannot be set per pod (the kubelet uses 100 ms unless "
            "its cpuCFSQuotaPeriod is changed)"
        )
