"""Pod: the settings a Kubernetes pod wraps around a trial — resources (limits, requests only, or none: the seed
000 lesson is that a CPU *limit* writes a CFS quota into cpu.max), runtime class (runc, kata-qemu, gvisor …),
user namespaces (``hostUsers: false``), security context, node placement, GPUs (whole, shared by time slicing,
or a MIG slice) and volumes (``emptyDir`` with a size limit, a PVC such as CVMFS with
``mountPropagation: HostToContainer``).

Only the Kubernetes backend can apply it (``backends``): the local and Slurm backends refuse a plan that uses
it before anything runs. The mapping to a Job lives in ``nearmetal.backends.kubernetes``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from nearmetal.errors import NearmetalError
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.units import parse_memory_mib

K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class PodVolume(LayerConfig):
    """A volume mounted into the trial's container."""

    name: str = Field(pattern=K8S_NAME, max_length=63)
    mount_path: str = Field(pattern=r"^/[^\s:]*$")
    type: Literal["emptyDir", "pvc", "hostPath"] = "emptyDir"
    size_limit: str | None = Field(None, description="emptyDir sizeLimit, e.g. 1Gi")
    medium: Literal["", "Memory"] = Field("", description="emptyDir medium: '' (node disk) or Memory (tmpfs)")
    claim: str | None = Field(None, pattern=K8S_NAME, description="PVC name (type pvc)")
    path: str | None = Field(None, pattern=r"^/[^\s:]*$", description="host path (type hostPath)")
    read_only: bool = False
    mount_propagation: Literal["None", "HostToContainer", "Bidirectional"] | None = Field(
        None, description="HostToContainer sees mounts made later on the host (autofs/CVMFS, seed 001)"
    )

    @field_validator("size_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory_mib(value)
        return value

    @model_validator(mode="after")
    def _kind(self) -> PodVolume:
        if self.type == "pvc" and not self.claim:
            raise ValueError("a pvc volume needs claim: <PersistentVolumeClaim name>")
        if self.type == "hostPath" and not self.path:
            raise ValueError("a hostPath volume needs path: /host/dir")
        if self.type != "emptyDir" and (self.size_limit or self.medium):
            raise ValueError("size_limit and medium belong to emptyDir volumes")
        return self


class PodConfig(LayerConfig):
    layer: Literal["pod"] = "pod"
    resources: Literal["limits", "requests", "none"] = Field(
        "none",
        description="limits: requests = limits (a CPU limit writes a CFS quota); requests: requests only (no "
        "quota); none: no resources at all (BestEffort)",
    )
    cpu: float | None = Field(None, gt=0, le=100_000, description="CPUs to request (and limit, with limits)")
    cpu_limit: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="a CPU limit above the request (Burstable with limit > request): requests cpu, limits this",
    )
    memory: str | None = Field(None, description="memory to request (and limit), e.g. 4Gi")
    runtime_class: str | None = Field(
        None, pattern=K8S_NAME, description="runtimeClassName: runc, kata-qemu, kata-qemu-virtiofs, gvisor …"
    )
    host_users: bool | None = Field(None, description="false: the pod gets its own user namespace")
    privileged: bool | None = None
    run_as_user: int | None = Field(None, ge=0)
    run_as_non_root: bool | None = None
    allow_privilege_escalation: bool | None = None
    capabilities_add: list[str] = Field(default_factory=list)
    capabilities_drop: list[str] = Field(default_factory=list)
    seccomp: Literal["RuntimeDefault", "Unconfined"] | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    nodes: list[str] = Field(
        default_factory=list,
        description="required node affinity: only these node names (kubernetes.io/hostname)",
    )
    gpus: int | None = Field(None, ge=1, le=64, description="whole GPUs (nvidia.com/gpu)")
    gpu_shared: int | None = Field(
        None,
        ge=1,
        le=64,
        description="time-sliced GPU replicas (nvidia.com/gpu.shared, device plugin renaming)",
    )
    mig_profile: str | None = Field(
        None,
        pattern=r"^[1-8]g\.[0-9]+gb(\+me)?$",
        description="MIG slice, e.g. 1g.5gb (nvidia.com/mig-1g.5gb)",
    )
    volumes: list[PodVolume] = Field(default_factory=list)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory_mib(value)
        return value

    @field_validator("capabilities_add", "capabilities_drop")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        for cap in value:
            if not cap.isupper() or not cap.replace("_", "").isalnum():
                raise ValueError(f"{cap!r} is not a capability name such as NET_ADMIN")
        return value

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for key, val in value.items():
            if not re.fullmatch(LABEL_KEY, key) or not re.fullmatch(LABEL_VALUE, val):
                raise ValueError(f"{key}={val} is not a Kubernetes label")
        return value

    @model_validator(mode="after")
    def _shape(self) -> PodConfig:
        if self.resources != "none" and self.cpu is None and self.memory is None:
            raise ValueError(f"resources: {self.resources} needs cpu and/or memory")
        if self.cpu_limit is not None and (self.cpu is None or self.resources == "none"):
            raise ValueError("cpu_limit needs resources: requests or limits and a cpu request")
        if self.cpu_limit is not None and self.cpu is not None and self.cpu_limit < self.cpu:
            raise ValueError(f"cpu_limit {self.cpu_limit:g} is below the request cpu {self.cpu:g}")
        if sum(x is not None for x in (self.gpus, self.gpu_shared, self.mig_profile)) > 1:
            raise ValueError("pick one of gpus, gpu_shared and mig_profile")
        return self


@register_layer
class PodLayer(Layer[PodConfig]):
    kind = "pod"
    family = "kubernetes"
    Config = PodConfig
    description = "Kubernetes pod settings: resources mode, runtime class, user namespace, GPUs, volumes"
    # only the Kubernetes backend turns these settings into a pod; others refuse the plan up front
    backends: ClassVar[tuple[str, ...]] = ("kubernetes",)

    def setup(self, ctx: TrialContext) -> None:
        raise NearmetalError(
            "the pod layer describes a Kubernetes pod; it runs only with --backend kubernetes",
            fix="run the plan with --backend kubernetes, or drop the variants that use it",
        )
