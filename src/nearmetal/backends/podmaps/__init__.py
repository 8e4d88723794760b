"""How the Kubernetes backend turns a trial's layers into pod settings: one mapping per layer kind.

A mapping is ``fn(config, shape)``: it reads the layer's config and fills the ``PodShape`` (requests, limits,
runtime class, security context, volumes …) that ``KubernetesBackend.build`` turns into a Job. Each mapping
lives in a module of this package and registers itself with ``@maps_layer("kind")``; a layer kind without a
mapping is refused before anything is created (``KubernetesBackend.check``). Modules import the Kubernetes
client inside their functions (it is an optional dependency).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nearmetal.backends.spec import TrialSpec
from nearmetal.registry import Registry

Mapping = Callable[[Any, "PodShape"], None]
LAYER_MAPPINGS: Registry[Mapping] = Registry(
    "Kubernetes layer mapping", packages=("nearmetal.backends.podmaps",), by_name=True
)


def maps_layer(kind: str) -> Callable[[Mapping], Mapping]:
    """Register ``fn(config, shape)`` as what layer ``kind`` becomes in a pod."""
    return LAYER_MAPPINGS.register(kind)


@dataclass
class PodShape:
    """The pod settings a trial's layers ask for, before they become client models."""

    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    resources_mode: str = "none"
    runtime_class: str | None = None
    host_users: bool | None = None
    security: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    required_nodes: list[str] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)
    mounts: list[Any] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # the CPU limit a cpu-quota layer asked for (CPUs); whether a pod layer set the resources itself
    cpu_limit: float | None = None
    resources_fixed: bool = False
    # the CPU request every pod of the plan shares (fair variants), when it was given to this one
    common_cpu_request: str | None = None

    def record(self) -> dict[str, Any]:
        """What is stored with the trial: how the pod was shaped."""
        return {
            "resources_mode": self.resources_mode,
            "requests": dict(self.requests),
            "limits": dict(self.limits),
            "runtime_class": self.runtime_class,
            "host_users": self.host_users,
            "common_cpu_request": self.common_cpu_request,
            "notes": list(self.notes),
        }


def cpu_quantity(cpus: float) -> str:
    """CPUs as a Kubernetes quantity: 2 → "2", 0.8 → "800m"."""
    millis = round(cpus * 1000)
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(value: str | int) -> str:
    from nearmetal.units import parse_memory_mib

    return f"{parse_memory_mib(value)}Mi"


def common_cpu_request(cells: Any) -> float | None:
    """The CPU request every pod of a plan shares so that its variants differ only in their CPU limit: the
    smallest limit its cpu-quota layers ask for (a request cannot exceed a limit). None: no cpu-quota layer."""
    limits = [c.cpus for cell in cells for c in cell.layers if c.layer == "cpu-quota"]
    return min(limits) if limits else None


def pod_shape(spec: TrialSpec, common_cpu: float | None = None) -> PodShape:
    """The trial's layers, each through its mapping, then the plan's scheduler resources.

    ``common_cpu`` (``common_cpu_request``): a pod whose resources no pod layer set gets that CPU request,
    a limited one too — so the unlimited baseline is a Burstable pod with the limited pods' request and
    ``cpu.shares``, not a BestEffort pod with shares 2 that loses to every daemon (issue 27)."""
    shape = PodShape()
    for config in spec.cell().layers:
        LAYER_MAPPINGS[config.layer](config, shape)
    if common_cpu is not None and not shape.resources_fixed:
        request = common_cpu if shape.cpu_limit is None else min(common_cpu, shape.cpu_limit)
        shape.requests["cpu"] = shape.common_cpu_request = cpu_quantity(request)
        if shape.resources_mode == "none":
            shape.resources_mode = "requests"
    resources = spec.resources
    # the plan's scheduler resources ask for what the layers did not already
    if resources.get("gpus") and not any(k.startswith("nvidia.com/") for k in shape.limits):
        shape.limits["nvidia.com/gpu"] = str(resources["gpus"])
    if resources.get("memory_mib") and shape.resources_mode != "none" and "memory" not in shape.requests:
        shape.requests["memory"] = f"{resources['memory_mib']}Mi"
    return shape
