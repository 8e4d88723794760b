"""What a backend is handed and hands back: one trial as data (``TrialSpec``) and how it ended
(``TrialOutcome``), both plain data that round-trip through JSON, so a trial is executed the same way in the
runner's process (local backend) or on a cluster node (``python -m nearmetal.run.exec_trial``); and what a
scheduler should allocate for a cell (``resources_for``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.errors import NearmetalError
from nearmetal.layers import layer_class
from nearmetal.layers.base import LayerConfig
from nearmetal.metrics import Metric
from nearmetal.plan import Cell, Trial
from nearmetal.workloads import get_workload, workload_class

SPEC_VERSION = 1


@dataclass
class TrialSpec:
    """Everything needed to execute one trial anywhere nearmetal is installed."""

    run_id: str
    trial_key: str
    trial_dir: str
    workload: str
    kind: str
    variant: str
    point: dict[str, Any]
    params: dict[str, Any]
    layers: list[dict[str, Any]]
    timeout: float
    is_baseline: bool
    index: int
    warmup: bool
    block: int
    seed: int
    # what a batch scheduler should allocate (tasks, cpus_per_task, memory_mib, gpus, nodes, …); see
    # resources_for. Ignored by the local backend.
    resources: dict[str, Any] = field(default_factory=dict)
    # how MPI programs start: "mpirun" (inside an allocation too) or "srun-pmix" (srun --mpi=pmix)
    mpi: str = "mpirun"
    # the plan's energy: section (telemetry.energy.EnergyConfig), so a node measures with the same sources
    energy: dict[str, Any] = field(default_factory=dict)
    # the run's shield (run.shield): {"parent": group name the layers' cgroups go inside, "procs": the
    # cgroup.procs files every process joins first}; {} without one
    shield: dict[str, Any] = field(default_factory=dict)
    version: int = SPEC_VERSION

    @classmethod
    def from_trial(cls, trial: Trial, run_id: str, trial_dir: Path, seed: int) -> TrialSpec:
        cell = trial.cell
        return cls(
            run_id=run_id,
            trial_key=trial.key,
            trial_dir=str(trial_dir),
            workload=cell.workload,
            kind=cell.kind,
            variant=cell.variant,
            point=dict(cell.point),
            params=cell.params.model_dump(mode="json"),
            layers=[c.model_dump(mode="json") for c in cell.layers],
            timeout=cell.timeout,
            is_baseline=cell.is_baseline,
            index=trial.index,
            warmup=trial.warmup,
            block=trial.block,
            seed=seed,
        )

    def cell(self) -> Cell:
        params = workload_class(self.kind).Params.model_validate(self.params)
        layers: tuple[LayerConfig, ...] = tuple(
            layer_class(c["layer"]).Config.model_validate(c) for c in self.layers
        )
        return Cell(
            workload=self.workload,
            kind=self.kind,
            variant=self.variant,
            point=self.point,
            params=params,
            layers=layers,
            timeout=self.timeout,
            is_baseline=self.is_baseline,
        )

    def trial(self) -> Trial:
        return Trial(self.cell(), self.index, warmup=self.warmup, block=self.block)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        if data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise NearmetalError(
                f"trial spec version {data.get('version')} is not {SPEC_VERSION}",
                fix="use the same nearmetal version on the submitting host and the nodes",
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def read(cls, path: Path) -> TrialSpec:
        return cls.from_dict(json.loads(path.read_text()))


@dataclass
class TrialOutcome:
    """How a trial ended and what it measured; what the runner stores."""

    status: str  # ok | failed | timeout | invalid | error | cancelled | oom | node-fail | preempted
    wall_s: float
    metrics: list[Metric] = field(default_factory=list)
    error: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    stderr_tail: str | None = None
    placement: dict[str, Any] = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0
    output_dir: str = ""
    # set when no later trial can succeed either (a missing tool, no root): the runner stops the run
    abort: str | None = None
    # what layers and the workload recorded at moments of the trial (faults, a timeline): stored as events
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = [m.to_dict() for m in self.metrics]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialOutcome:
        data = dict(data)
        data["metrics"] = [metric_from_dict(m) for m in data.get("metrics", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, path: Path) -> None:
        # written whole to a temporary name, then renamed: a reader never sees half a file
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), default=str))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> TrialOutcome:
        return cls.from_dict(json.loads(path.read_text()))


def resources_for(cell: Cell, plan: Any | None = None) -> dict[str, Any]:
    """What a scheduler should allocate for a cell: the workload's own needs (``Workload.resources``, e.g.
    one task per MPI rank), overridden by the plan's ``resources`` of the workload, then of the variant."""
    merged: dict[str, Any] = dict(get_workload(cell.kind).resources(cell.params))
    if plan is not None:
        workload_spec = plan.workloads.get(cell.workload)
        variant = plan.variants.get(cell.variant)
        for source in (workload_spec, variant):
            extra = getattr(source, "resources", None)
            if extra is not None:
                merged.update(extra.model_dump(exclude_none=True, exclude_defaults=True))
    return merged


def metric_from_dict(data: dict[str, Any]) -> Metric:
    return Metric(
        data["name"],
        float(data["value"]),
        data.get("unit", ""),
        data["direction"],
        data.get("source", "workload"),
        tuple(float(v) for v in data.get("values", ())),
    )
