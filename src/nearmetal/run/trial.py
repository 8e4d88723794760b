"""One trial, executed here: layers around the local backend's run of the workload's processes, then the
parse. The input (``TrialSpec``) and the result (``TrialOutcome``) are plain data that round-trip through JSON,
so the same code runs in the runner's process (local backend) or on a cluster node inside a batch job
(``nearmetal exec-trial SPEC.json OUT.json``, which the Slurm backend's job script runs); the runner stores an
outcome the same way wherever it was made.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nearmetal.backends.base import Backend, Execution
from nearmetal.errors import MissingToolError, NearmetalError, PrivilegeError
from nearmetal.layers import layer_class, make_layer
from nearmetal.layers.base import Layer, LayerConfig, TrialContext
from nearmetal.metrics import Metric
from nearmetal.plan import Cell, Trial
from nearmetal.workloads import get_workload, workload_class
from nearmetal.workloads.base import (
    ParseError,
    ProcessOutput,
    ProcessSpec,
    TrialOutput,
    WorkloadContext,
)

if TYPE_CHECKING:
    from nearmetal.telemetry.energy import EnergyMeter

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


def _status(execution: Execution) -> str:
    if execution.error:
        return "invalid"
    if execution.main.timed_out:
        return "timeout"
    if execution.main.returncode != 0:
        return "failed"
    return "ok"


def _failure_text(execution: Execution, timeout_s: float) -> str | None:
    main = execution.main
    if execution.error:
        return execution.error
    if main.timed_out:
        return f"timed out after {timeout_s:g}s (raise the plan's timeout if the workload needs longer)"
    if main.returncode is not None and main.returncode < 0:
        return f"killed by {main.signal_name}"
    if main.returncode:
        if main.returncode == 125 and main.argv and main.argv[0] == "/bin/sh":
            return "could not join the layer's cgroup (exit 125)"
        return f"exited with code {main.returncode}"
    return None


@contextlib.contextmanager
def _layers(cell: Cell, ctx: TrialContext) -> Iterator[list[Layer]]:
    layers = [make_layer(config).bind(ctx) for config in cell.layers]
    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(layer)
        yield layers


def execute_trial(
    spec: TrialSpec, backend: Backend | None = None, energy: EnergyMeter | None = None
) -> TrialOutcome:
    """Run one trial on this machine: layers (setup … teardown) around ``backend.execute`` (default: the
    local backend), then the workload's parser. Never raises for a trial's own failure: the outcome says it.
    KeyboardInterrupt passes through after every layer's teardown. ``energy`` is a
    ``telemetry.energy.EnergyMeter`` (default: one built from ``spec.energy``)."""
    from nearmetal.backends.local import LocalBackend
    from nearmetal.layers.rootless import ROOTLESS_CHILD_ENV, rootless_config, trial_user
    from nearmetal.telemetry.energy import EnergyConfig, EnergyMeter

    rootless = rootless_config(spec.layers)
    if rootless is not None and os.environ.get(ROOTLESS_CHILD_ENV) != "1":
        # a rootless trial: the whole of it runs in a child nearmetal as the user, in its user namespace
        from nearmetal.run.asuser import execute_rootless

        user = trial_user(rootless) if os.geteuid() == 0 else None
        return TrialOutcome.from_dict(
            execute_rootless(spec.to_dict(), rootless.inside, rootless.mapping, user)
        )
    backend = backend or LocalBackend()
    if energy is None:
        energy = EnergyMeter(EnergyConfig.model_validate(spec.energy) if spec.energy else None)
    cell = spec.cell()
    workload = get_workload(cell.kind)
    trial_dir = Path(spec.trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    ctx = TrialContext(
        run_id=spec.run_id,
        trial_key=spec.trial_key,
        trial_dir=trial_dir,
        endpoints={"server_host": "127.0.0.1"},
        cgroup_parent=str(spec.shield.get("parent", "")),
    )
    shield_procs = [Path(p) for p in spec.shield.get("procs", ())]
    wctx = WorkloadContext(
        trial_dir=trial_dir,
        is_root=ctx.is_root,
        endpoints=ctx.endpoints,
        seed=spec.seed,
        mpi=spec.mpi,
        run_id=spec.run_id,
        trial_key=spec.trial_key,
    )

    def render(overrides: dict[str, Any]) -> list[ProcessSpec]:
        params = cell.params.model_validate({**cell.params.model_dump(), **overrides})
        return workload.processes(params, wctx)

    ctx.render_processes = render
    ctx.longer_params = lambda factor: workload.longer_params(cell.params, factor)
    started = time.time()
    metrics: list[Metric] = []
    execution: Execution | None = None
    error: str | None = None
    abort: str | None = None
    status = "error"
    try:
        with _layers(cell, ctx) as layers:
            workload.prepare(cell.params, wctx)
            # background processes layers added (neighbours) are wrapped by every layer too, so a
            # neighbour shares the cpuset or namespace of the process it competes with
            processes = [*ctx.background, *workload.processes(cell.params, wctx)]
            for layer in layers:
                processes = [layer.wrap(p, ctx) for p in processes]
            for process in processes:
                # the shield first: a layer's group (inside the shield) then takes the process further down
                process.cgroup_procs[:0] = shield_procs
            with energy.measure() as reading:
                execution = backend.execute(processes, trial_dir, cell.timeout)
            cpu_s = next((m.value for m in execution.metrics if m.name == "cpu_s"), None)
            metrics += energy.finish(reading, cpu_s)
            for layer in layers:
                metrics += layer.collect(ctx)
        status = _status(execution)
        error = _failure_text(execution, cell.timeout)
        metrics = execution.metrics + metrics
        # each output read once, bounded (backends.base.read_output), shared by stdout and processes
        main = ProcessOutput(
            execution.main.role,
            execution.main.read_stdout(),
            execution.main.read_stderr(),
            execution.main.returncode,
        )
        output = TrialOutput(
            stdout=main.stdout,
            stderr=main.stderr,
            files={p.name: p for p in trial_dir.iterdir() if p.is_file()},
            processes=[
                *(
                    ProcessOutput(r.role, r.read_stdout(), r.read_stderr(), r.returncode)
                    for r in execution.others
                ),
                main,
            ],
            wall_s=execution.wall_s,
        )
        if status == "ok":
            try:
                metrics = workload.parse(output, cell.params) + metrics
            except ParseError as exc:
                status, error = "failed", f"output not understood: {exc}"
            else:
                with contextlib.suppress(Exception):
                    ctx.placement.update(workload.placement(output, cell.params))
                with contextlib.suppress(Exception):
                    ctx.events.extend(workload.events(output, cell.params))
    except (PrivilegeError, MissingToolError) as exc:
        status, error = "error", str(exc)
        abort = str(exc)
    except NearmetalError as exc:
        status, error = "error", str(exc)
    except FileNotFoundError as exc:
        status, error = "error", str(exc)
    finally:
        with contextlib.suppress(Exception):
            workload.cleanup(cell.params, wctx)
    ended = time.time()
    return TrialOutcome(
        status=status,
        wall_s=execution.wall_s if execution else ended - started,
        metrics=metrics,
        error=error,
        exit_code=execution.main.returncode if execution else None,
        signal=execution.main.signal_name if execution else None,
        stderr_tail=execution.main.stderr_tail() if execution and status != "ok" else None,
        placement={**(execution.placement if execution else {}), **ctx.placement},
        caveats=list(ctx.caveats),
        started_at=started,
        ended_at=ended,
        output_dir=str(trial_dir),
        abort=abort,
        events=list(ctx.events),
    )
