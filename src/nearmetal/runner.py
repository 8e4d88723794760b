"""Running a plan: preflight checks, trial order, layers around each trial, storing each trial as it ends.

The flow is one direction: plan → trials in order → (layers around the backend's execution of the
workload's processes) → metrics → store. Nothing here computes statistics.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nearmetal.backends.base import Execution
from nearmetal.backends.local import LocalBackend
from nearmetal.errors import MissingToolError, NearmetalError, PrivilegeError
from nearmetal.layers import make_layer
from nearmetal.layers.base import Layer, TrialContext
from nearmetal.metrics import Metric
from nearmetal.plan import Cell, LoadedPlan, Trial, load_plan
from nearmetal.store import Store
from nearmetal.telemetry import capture_environment
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import (
    ParseError,
    ProcessOutput,
    ProcessSpec,
    Requirement,
    TrialOutput,
    WorkloadContext,
)

DEFAULT_WORKDIR = "nearmetal-runs"


class RunInterrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM; every finished trial is stored."""

    def __init__(self, run_id: str, signal_name: str) -> None:
        super().__init__(f"run {run_id} interrupted by {signal_name}; finished trials are stored")
        self.run_id = run_id
        self.signal_name = signal_name


@dataclass
class TrialRecord:
    trial: Trial
    status: str  # ok | failed | timeout | invalid | error
    wall_s: float
    metrics: list[Metric]
    error: str | None = None
    trial_id: int | None = None


class Progress(Protocol):
    def start(self, total: int, plan_name: str, run_id: str) -> None: ...
    def trial_started(self, trial: Trial, index: int) -> None: ...
    def trial_finished(self, record: TrialRecord, index: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def start(self, total: int, plan_name: str, run_id: str) -> None:
        pass

    def trial_started(self, trial: Trial, index: int) -> None:
        pass

    def trial_finished(self, record: TrialRecord, index: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class RunResult:
    run_id: str
    db_url: str
    records: list[TrialRecord] = field(default_factory=list)
    status: str = "finished"
    workdir: Path | None = None


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


# --- preflight ---------------------------------------------------------------------------------------


def missing_requirements(loaded: LoadedPlan) -> dict[Requirement, list[str]]:
    """Every tool the plan needs that is not installed, with the cells that need it."""
    missing: dict[Requirement, list[str]] = {}
    for cell in loaded.cells:
        reqs = list(get_workload(cell.kind).requires(cell.params))
        for config in cell.layers:
            reqs += make_layer(config).requires()
        for req in reqs:
            if not req.available():
                missing.setdefault(req, []).append(cell.key)
    return missing


def preflight(loaded: LoadedPlan) -> None:
    missing = missing_requirements(loaded)
    if missing:
        lines = []
        for req, cells in missing.items():
            shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            lines.append(f"{req.tool} is not installed (needed by {shown}); install it: {req.install_hint()}")
        raise MissingToolError(
            "the plan needs tools this machine lacks; nothing was run:\n  " + "\n  ".join(lines),
            fix=" && ".join(dict.fromkeys(r.install_hint() for r in missing)),
        )
    if os.geteuid() != 0:
        needing_root = sorted(
            {config.layer for cell in loaded.cells for config in cell.layers if make_layer(config).needs_root}
        )
        if needing_root:
            raise PrivilegeError(
                f"layer(s) {', '.join(needing_root)} change the host and need root; nothing was run",
                fix="run nearmetal as root (sudo), or drop those variants",
            )


def check_resources(loaded: LoadedPlan, workdir: Path) -> None:
    """Each workload's own check that the host can hold its trials (disk, memory); one error naming every
    problem, before anything runs."""
    problems: dict[str, list[str]] = {}
    fixes: list[str] = []
    for cell in loaded.cells:
        try:
            get_workload(cell.kind).check_resources(cell.params, workdir)
        except NearmetalError as exc:
            problems.setdefault(exc.message, []).append(cell.key)
            if exc.fix and exc.fix not in fixes:
                fixes.append(exc.fix)
    if problems:
        lines = []
        for message, cells in problems.items():
            shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            lines.append(f"{message} ({shown})")
        raise NearmetalError(
            "the plan needs more than this machine has; nothing was run:\n  " + "\n  ".join(lines),
            fix="; ".join(fixes) or None,
        )


# --- order -------------------------------------------------------------------------------------------


def schedule(
    cells: list[Cell], order: str, warmup: int, first_block: int, blocks: int, seed: int
) -> list[Trial]:
    """Trials of blocks ``first_block .. first_block + blocks - 1`` (warm-ups belong to block 0).

    interleaved: every cell once per block, shuffled per block (drift hits every variant alike);
    sequential: cell after cell; random: every trial of these blocks shuffled."""
    trials: list[Trial] = []
    if first_block == 0:
        for w in range(warmup):
            trials += [Trial(c, w, warmup=True, block=0) for c in cells]
    measured: list[Trial] = []
    for b in range(first_block, first_block + blocks):
        block_trials = [Trial(c, b, block=b) for c in cells]
        if order == "interleaved":
            random.Random(f"{seed}:{b}").shuffle(block_trials)
        measured += block_trials
    if order == "sequential":
        measured.sort(key=lambda t: cells.index(t.cell))
    elif order == "random":
        random.Random(f"{seed}:{first_block}:{blocks}").shuffle(measured)
    return trials + measured


# --- one trial ---------------------------------------------------------------------------------------


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


class Runner:
    def __init__(
        self,
        loaded: LoadedPlan,
        store: Store,
        workdir: Path,
        backend: Any | None = None,
        progress: Progress | None = None,
        run_id: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self.store = store
        self.backend = backend or LocalBackend()
        self.progress = progress or NullProgress()
        self.run_id = run_id or new_run_id()
        self.seed = (
            seed
            if seed is not None
            else (self.plan.seed if self.plan.seed is not None else secrets.randbelow(2**31))
        )
        self.run_dir = workdir / self.run_id
        self.records: list[TrialRecord] = []
        self._seq = 0
        self._abort: str | None = None

    # layers --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _layers(self, cell: Cell, ctx: TrialContext) -> Iterator[list[Layer]]:
        layers = [make_layer(config).bind(ctx) for config in cell.layers]
        with contextlib.ExitStack() as stack:
            for layer in layers:
                stack.enter_context(layer)
            yield layers

    def run_trial(self, trial: Trial) -> TrialRecord:
        cell = trial.cell
        workload = get_workload(cell.kind)
        trial_dir = self.run_dir / trial.key
        trial_dir.mkdir(parents=True, exist_ok=True)
        ctx = TrialContext(
            run_id=self.run_id,
            trial_key=trial.key,
            trial_dir=trial_dir,
            endpoints={"server_host": "127.0.0.1"},
        )
        wctx = WorkloadContext(
            trial_dir=trial_dir, is_root=ctx.is_root, endpoints=ctx.endpoints, seed=self.seed + trial.index
        )

        def render(overrides: dict[str, Any]) -> list[ProcessSpec]:
            params = cell.params.model_validate({**cell.params.model_dump(), **overrides})
            return workload.processes(params, wctx)

        ctx.render_processes = render
        started = time.time()
        metrics: list[Metric] = []
        execution: Execution | None = None
        error: str | None = None
        status = "error"
        try:
            with self._layers(cell, ctx) as layers:
                workload.prepare(cell.params, wctx)
                # background processes layers added (neighbours) are wrapped by every layer too, so a
                # neighbour shares the cpuset or namespace of the process it competes with
                processes = [*ctx.background, *workload.processes(cell.params, wctx)]
                for layer in layers:
                    processes = [layer.wrap(p, ctx) for p in processes]
                execution = self.backend.execute(processes, trial_dir, cell.timeout)
                for layer in layers:
                    metrics += layer.collect(ctx)
            status = _status(execution)
            error = _failure_text(execution, cell.timeout)
            metrics = execution.metrics + metrics
            output = TrialOutput(
                stdout=execution.main.read_stdout(),
                stderr=execution.main.read_stderr(),
                files={p.name: p for p in trial_dir.iterdir() if p.is_file()},
                processes=[
                    ProcessOutput(r.role, r.read_stdout(), r.read_stderr(), r.returncode)
                    for r in [*execution.others, execution.main]
                ],
                wall_s=execution.wall_s,
            )
            if status == "ok":
                try:
                    metrics = workload.parse(output, cell.params) + metrics
                except ParseError as exc:
                    status, error = "failed", f"output not understood: {exc}"
        except (PrivilegeError, MissingToolError) as exc:
            status, error = "error", str(exc)
            self._abort = str(exc)
        except NearmetalError as exc:
            status, error = "error", str(exc)
        except FileNotFoundError as exc:
            status, error = "error", str(exc)
        finally:
            with contextlib.suppress(Exception):
                workload.cleanup(cell.params, wctx)
        ended = time.time()
        record = TrialRecord(
            trial, status, execution.wall_s if execution else ended - started, metrics, error
        )
        placement = {**(execution.placement if execution else {}), **ctx.placement}
        self._seq += 1
        record.trial_id = self.store.add_trial(
            metrics,
            run_id=self.run_id,
            trial_key=trial.key,
            cell_id=cell.cell_id,
            cell_key=cell.key,
            comparison_key=cell.comparison_key,
            workload=cell.workload,
            kind=cell.kind,
            variant=cell.variant,
            is_baseline=cell.is_baseline,
            params=cell.params.model_dump(mode="json"),
            point=cell.point,
            layers=[c.model_dump(mode="json") for c in cell.layers],
            repeat_index=trial.index,
            is_warmup=trial.warmup,
            block=trial.block,
            seq=self._seq,
            status=status,
            started_at=started,
            ended_at=ended,
            exit_code=execution.main.returncode if execution else None,
            signal=execution.main.signal_name if execution else None,
            error=error,
            stderr_tail=execution.main.stderr_tail() if execution and status != "ok" else None,
            output_dir=str(trial_dir),
            placement=placement,
            caveats=ctx.caveats,
        )
        return record

    # the run -------------------------------------------------------------------------------------------
    def _start_run(self) -> None:
        tool_versions: dict[str, str] = {}
        for kind in {c.kind for c in self.loaded.cells}:
            with contextlib.suppress(Exception):
                tool_versions.update(get_workload(kind).tool_versions())
        self.store.create_run(
            id=self.run_id,
            name=self.plan.name,
            description=self.plan.description,
            plan_text=self.loaded.text,
            plan_source=self.loaded.source,
            plan_hash=hashlib.sha256(self.loaded.text.encode()).hexdigest(),
            status="running",
            started_at=time.time(),
            host=socket.gethostname(),
            backend=getattr(self.backend, "name", "local"),
            seed=self.seed,
            nearmetal_version=_version(),
            workdir=str(self.run_dir),
            info={
                "order": self.plan.order,
                "warmup": self.plan.warmup,
                "repeats": self.plan.repeats.model_dump(),
                "cells": len(self.loaded.cells),
            },
        )
        self.store.set_environment(self.run_id, capture_environment(tool_versions))

    def blocks_to_run(self) -> Iterator[tuple[int, int]]:
        """(first block, number of blocks) batches; fixed repeats are one batch."""
        yield 0, self.plan.repeats.min

    def run(self) -> RunResult:
        preflight(self.loaded)
        check_resources(self.loaded, self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._start_run()
        total = len(self.loaded.cells) * (self.plan.warmup + self.plan.repeats.min)
        self.progress.start(total, self.plan.name, self.run_id)
        status = "finished"
        with _interrupts_as_exceptions() as caught:
            try:
                index = 0
                for first, count in self.blocks_to_run():
                    for trial in schedule(
                        self.loaded.cells, self.plan.order, self.plan.warmup, first, count, self.seed
                    ):
                        self.progress.trial_started(trial, index)
                        record = self.run_trial(trial)
                        self.records.append(record)
                        self.progress.trial_finished(record, index)
                        index += 1
                        if self._abort:
                            raise NearmetalError(f"run {self.run_id} stopped: {self._abort}")
            except KeyboardInterrupt:
                status = "interrupted"
                self.store.finish_run(self.run_id, status)
                self.progress.finish()
                raise RunInterrupted(self.run_id, caught.get("signal", "SIGINT")) from None
            except BaseException:
                status = "failed"
                self.store.finish_run(self.run_id, status)
                self.progress.finish()
                raise
        self.store.finish_run(self.run_id, status)
        self.progress.finish()
        return RunResult(self.run_id, self.store.url, self.records, status, self.run_dir)


@contextlib.contextmanager
def _interrupts_as_exceptions() -> Iterator[dict[str, str]]:
    """SIGTERM (and SIGHUP) raise KeyboardInterrupt like Ctrl-C, so every layer's teardown runs."""
    caught: dict[str, str] = {}
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        caught["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt

    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous.clear()
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _version() -> str:
    from nearmetal import __version__

    return __version__


def run_plan(
    plan: str | Path | LoadedPlan,
    db: str | None = None,
    workdir: str | Path = DEFAULT_WORKDIR,
    progress: Progress | None = None,
    seed: int | None = None,
    backend: Any | None = None,
) -> RunResult:
    """Run a plan and store every trial; returns the run id. The library entry point under ``nearmetal run``."""
    loaded = plan if isinstance(plan, LoadedPlan) else load_plan(plan)
    store = Store(db)
    try:
        return Runner(loaded, store, Path(workdir), backend=backend, progress=progress, seed=seed).run()
    finally:
        store.dispose()


ProgressFactory = Callable[[], Progress]
