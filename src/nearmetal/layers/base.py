"""The layer contract: one isolation or sharing mechanism wrapped around a trial.

A layer is used as a context manager around the trial: ``setup`` creates what it needs on the host (named
with ``ctx.host_name(...)`` so ``nearmetal cleanup`` can find leftovers), ``wrap`` changes each process
(argv prefix, env, cgroup placement), ``collect`` reads its own counters after the trial, and ``teardown``
removes everything it created. ``teardown`` runs on every exit path, including a failed ``setup``.
A layer knows nothing of statistics.
"""

from __future__ import annotations

import os
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from nearmetal.host.leftovers import HOST_PREFIX as HOST_PREFIX  # where the layers and the shield take it
from nearmetal.metrics import Metric
from nearmetal.registry import Registry
from nearmetal.workloads.base import ProcessSpec, Requirement


class LayerConfig(BaseModel):
    """Base of every layer's options. Subclasses add ``layer: Literal["<kind>"]`` and their fields."""

    model_config = ConfigDict(extra="forbid")
    if TYPE_CHECKING:  # each subclass declares it as a Literal field; pydantic must not see it here
        layer: str


ConfigT = TypeVar("ConfigT", bound=LayerConfig)


@dataclass
class TrialContext:
    """What layers and the backend share about the trial being run."""

    run_id: str
    trial_key: str
    trial_dir: Path
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    # layers may change where a client finds its server (see WorkloadContext.endpoints)
    endpoints: dict[str, Any] = field(default_factory=dict)
    # processes layers start around the trial (co-located neighbours); started before the main process
    background: list[ProcessSpec] = field(default_factory=list)
    # free-form facts layers record about the trial (cgroup path, namespace names); stored as placement
    placement: dict[str, Any] = field(default_factory=dict)
    # notes that must reach the report (e.g. "emulated CPU: not representative")
    caveats: list[str] = field(default_factory=list)
    # the workload's processes for other parameter values (a neighbour that runs longer than the
    # measured copy); set by the runner, so a layer can ask without knowing the workload
    render_processes: Callable[[dict[str, Any]], list[ProcessSpec]] | None = None
    # parameter values that make the workload run about ``factor`` times as long ({} when the workload
    # cannot say); set by the runner from ``Workload.longer_params``
    longer_params: Callable[[float], dict[str, Any]] | None = None
    # things that happened at a moment during the trial (an injected fault, its healing), each
    # ``{"time": epoch seconds, "kind": str, "detail": dict}``; stored in the events table with the trial
    events: list[dict[str, Any]] = field(default_factory=list)
    # host objects a fault can be aimed at, by name ("cluster:c1", "link:c1", "lb"): a topology layer
    # registers them (``layers/targets.py``), the fault layer resolves them
    targets: dict[str, Any] = field(default_factory=dict)
    # the group a layer's own cgroup goes inside (the run's shield, ``run.shield``): "" for the top level
    cgroup_parent: str = ""

    def add_event(self, kind: str, detail: dict[str, Any] | None = None, at: float | None = None) -> None:
        import time

        self.events.append(
            {"time": at if at is not None else time.time(), "kind": kind, "detail": detail or {}}
        )

    def host_name(self, *parts: str) -> str:
        """A name for a host object that carries the run id, so leftovers can be traced to their run."""
        return "-".join([HOST_PREFIX, self.run_id, self.trial_key, *parts])

    def cgroup_name(self, *parts: str) -> str:
        """``host_name`` for a cgroup: inside ``cgroup_parent`` when the run has one (its shield), so the
        layer's limits nest under the shield's weight and still bind."""
        name = self.host_name(*parts)
        return f"{self.cgroup_parent}/{name}" if self.cgroup_parent else name


class Layer(ABC, Generic[ConfigT]):
    """Subclasses set ``kind`` and ``Config`` and override the hooks they need; ``Layer[XConfig]`` makes
    ``self.config`` an ``XConfig`` (the class its ``Config`` names)."""

    kind: ClassVar[str]
    Config: ClassVar[type[LayerConfig]]
    # what kind of mechanism it is (``FAMILIES``): every list of layer kinds (the network layers, the
    # filesystem layers …) is read from the registry (``layer_kinds``), never kept by hand
    family: ClassVar[str]
    description: ClassVar[str] = ""
    needs_root: ClassVar[bool] = False
    # the backends that can apply this layer (None: any backend that runs layers on a host — local, and
    # Slurm on the node); the runner refuses a plan whose layer its backend cannot apply, before it runs
    backends: ClassVar[tuple[str, ...] | None] = None
    # why it needs root and what to use without it (shown when a plan uses the layer as non-root)
    root_because: ClassVar[str] = ""
    rootless_alternative: ClassVar[str] = ""
    # a layer that needs root but has a rootless form: after the ``rootless`` layer its own code runs as root
    # of the trial user's user namespace, mounting and making network namespaces there (layers/rootless.py)
    rootless_form: ClassVar[bool] = False

    def __init__(self, config: ConfigT) -> None:
        self.config: ConfigT = config
        self.ctx: TrialContext | None = None

    @classmethod
    def example_config(cls) -> dict[str, Any] | None:
        """Options that work on a typical Linux host (as root) for the generic leak and exit-path tests,
        e.g. ``{"layer": "cpu-quota", "cpus": 0.5}``; None when the layer cannot run without special set-up."""
        return None

    def requires(self) -> list[Requirement]:
        return []

    def setup(self, ctx: TrialContext) -> None:
        """Create host objects. Record everything created so ``teardown`` can remove it."""

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        return process

    def collect(self, ctx: TrialContext) -> list[Metric]:
        return []

    def teardown(self, ctx: TrialContext) -> None:
        """Remove everything ``setup`` created; must be safe after a partial setup and idempotent."""

    def describe(self) -> str:
        fields = self.config.model_dump(exclude={"layer"}, exclude_defaults=True)
        opts = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{self.kind} {opts}".strip()

    # context-manager form: setup on enter, teardown on every exit (also when setup itself fails)
    def bind(self, ctx: TrialContext) -> Self:
        self.ctx = ctx
        return self

    def __enter__(self) -> Self:
        assert self.ctx is not None, "bind(ctx) before entering a layer"
        try:
            self.setup(self.ctx)
        except BaseException:
            self.teardown(self.ctx)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.ctx is not None
        self.teardown(self.ctx)


# kind -> layer class; every module of nearmetal.layers registers its layers with ``@register_layer``
LAYERS: Registry[type[Layer[Any]]] = Registry("layer", packages=("nearmetal.layers",), by_name=True)

LayerClass = TypeVar("LayerClass", bound="type[Layer[Any]]")

# a layer's family: what kind of mechanism it is
FAMILIES: dict[str, str] = {
    "cpu": "a CPU limit on the trial's processes (a cgroup quota)",
    "sharing": "neighbours sharing the trial's CPUs or GPU (time slicing)",
    "partition": "a slice of the machine given to the trial (a cpuset, a MIG instance)",
    "network": "a network path on one host (a namespace behind veth or a user-mode stack)",
    "node-path": "a network path between two nodes (the wire, a VXLAN tunnel, a user-mode stack)",
    "filesystem": "a filesystem mounted where the workload's files go (overlay, FUSE, tmpfs)",
    "container": "a container runtime around the trial",
    "vm": "a virtual machine around the trial",
    "resilience": "a service topology and the faults injected into it",
    "rootless": "the trial run as an ordinary user",
    "kubernetes": "pod settings the Kubernetes backend applies",
}


def register_layer(cls: LayerClass) -> LayerClass:
    """Class decorator: the layer is known by its ``kind``, which its ``Config``'s ``layer`` literal (what a
    plan writes) must spell the same way, and belongs to one of the ``FAMILIES`` (kept in the registry's
    metadata: ``LAYERS.info(kind)["family"]``)."""
    spelled = getattr(cls.Config.model_fields.get("layer"), "default", None)
    if spelled != cls.kind:
        raise RuntimeError(f"layer {cls.__name__}: kind {cls.kind!r} but its Config says layer {spelled!r}")
    family = getattr(cls, "family", None)
    if family not in FAMILIES:
        raise RuntimeError(f"layer {cls.__name__}: family {family!r} is not one of {', '.join(FAMILIES)}")
    LAYERS.add(cls.kind, cls, family=family)
    return cls


def layer_kinds(*families: str, rootless_form: bool | None = None) -> tuple[str, ...]:
    """The kinds of the registered layers of these families, by name (``rootless_form``: only those that
    have, or have not, a rootless form)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown layer families: {', '.join(unknown)}")
    return tuple(
        kind
        for kind in LAYERS
        if LAYERS.info(kind)["family"] in families
        and (rootless_form is None or LAYERS[kind].rootless_form == rootless_form)
    )
