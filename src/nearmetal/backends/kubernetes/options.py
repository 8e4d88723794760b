"""The Kubernetes backend's options: the plan's ``kubernetes:`` section; ``--namespace`` and ``--image`` on
the command line override it (``--kubeconfig`` is the command line's only: a plan never names one)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from nearmetal.plan.backend_options import Cli, StrictOptions


class KubernetesOptions(StrictOptions):
    """The Kubernetes backend's options (``--namespace``, ``--image`` on the command line override them)."""

    namespace: Annotated[str, Cli("--namespace")] = Field(
        "default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="namespace of the trials' Jobs"
    )
    image: Annotated[
        str | None,
        Cli(
            "--image",
            envvar="NEARMETAL_KUBE_IMAGE",
            help="image with the workload programs (nearmetal image build makes one)",
        ),
    ] = Field(
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
