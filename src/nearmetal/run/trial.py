"""One trial, executed here: layers around the local backend's run of the workload's processes, then the
parse. The input (``TrialSpec``) and the result (``TrialOutcome``, both in ``backends/spec.py``) are plain data
that round-trip through JSON, so the same code runs in the runner's process (local backend) or on a cluster node
inside a batch job (``nearmetal exec-trial SPEC.json OUT.json``, which the Slurm backend's job script runs); the
runner stores an outcome the same way wherever it was made.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nearmetal.backends.base import Backend, Execution

# the spec and the outcome are the backends' contract; the runner and its parts import them from here too
from nearmetal.backends.spec import TrialOutcome as TrialOutcome
from nearmetal.backends.spec import TrialSpec as TrialSpec
from nearmetal.backends.spec import resources_for as resources_for
from nearmetal.errors import MissingToolError, NearmetalError, PrivilegeError
from nearmetal.layers import make_layer
from nearmetal.layers.base import Layer, TrialContext
from nearmetal.metrics import Metric
from nearmetal.plan import Cell
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import (
    ParseError,
    ProcessOutput,
    ProcessSpec,
    TrialOutput,
    WorkloadContext,
)

if TYPE_CHECKING:
    from nearmetal.telemetry.energy import EnergyMeter


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
def _layers(cell: Cell, ctx: TrialContext) -> Iterator[list[Layer[Any]]]:
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
