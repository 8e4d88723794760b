"""Runtime class: which OCI runtime the node's container runtime uses for the trial's pod
(``spec.runtimeClassName``: runc, crun, kata-qemu, gvisor …) — seed 002's runtime comparison, at the pod level.

Only the Kubernetes backend can apply it (``backends``): the local and Slurm backends refuse a plan that uses
it before anything runs (the ``container`` layer compares runtimes on a host). The mapping to the pod lives in
``nearmetal.backends.podmaps.runtime_class``; the cluster must have a RuntimeClass of that name
(``scripts/services/kubernetes.sh`` creates ``runc`` and ``crun``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from nearmetal.errors import NearmetalError
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer

K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class RuntimeClassConfig(LayerConfig):
    layer: Literal["runtime-class"] = "runtime-class"
    name: str = Field(
        pattern=K8S_NAME, max_length=253, description="the RuntimeClass: runc, crun, kata-qemu, gvisor …"
    )


@register_layer
class RuntimeClassLayer(Layer[RuntimeClassConfig]):
    kind = "runtime-class"
    family = "kubernetes"
    Config = RuntimeClassConfig
    description = "a Kubernetes RuntimeClass (runc, crun, kata …): the pod's OCI runtime"
    backends: ClassVar[tuple[str, ...]] = ("kubernetes",)

    def setup(self, ctx: TrialContext) -> None:
        raise NearmetalError(
            "the runtime-class layer chooses a Kubernetes pod's runtime; it runs only with --backend kubernetes",
            fix="run the plan with --backend kubernetes, or compare runtimes on this host with the container "
            "layer (runtime: runc | crun)",
        )
