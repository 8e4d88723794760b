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

from nearmetal.registry import Registry
from nearmetal.trial import TrialSpec

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

    def record(self) -> dict[str, Any]:
        """What is stored with the trial: how the pod was shaped."""
        return {
            "resources_mode": self.resources_mode,
            "requests": dict(self.requests),
            "limits": dict(self.limits),
            "runtime_class": self.runtime_class,
            "host_users": self.host_users,
            "notes": list(self.notes),
        }


def cpu_quantity(cpus: float) -> str:
    """CPUs as a Kubernetes quantity: 2 → "2", 0.8 → "800m"."""
    millis = round(cpus * 1000)
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(value: str | int) -> str:
    from nearmetal.backends.options import parse_memory_mib

    return f"{parse_memory_mib(value)}Mi"


def pod_shape(spec: TrialSpec) -> PodShape:
    """The trial's layers, each through its mapping, then the plan's scheduler resources."""
    shape = PodShape()
    for config in spec.cell().layers:
        LAYER_MAPPINGS[config.layer](config, shape)
    resources = spec.resources
    # the plan's scheduler resources ask for what the layers did not already
    if resources.get("gpus") and not any(k.startswith("nvidia.com/") for k in shape.limits):
        shape.limits["nvidia.com/gpu"] = str(resources["gpus"])
    if resources.get("memory_mib") and shape.resources_mode != "none" and "memory" not in shape.requests:
        shape.requests["memory"] = f"{resources['memory_mib']}Mi"
    return shape
