"""Running a plan: preflight checks, trial order, layers around each trial, storing each trial as it ends.

The flow is one direction: plan → trials in order → (layers around the backend's execution of the
workload's processes) → metrics → store. Statistics live in ``analysis/``; the stop rule of adaptive
repeats (``analysis/stopping.py``) reads the stored trials between blocks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nearmetal import runlock
from nearmetal.analysis.stopping import (
    BUDGET,
    FAILED,
    FIXED,
    INTERRUPTED,
    MAX_REACHED,
    RUNNING,
    TARGET_MET,
    StopRecord,
)
from nearmetal.backends.local import LocalBackend
from nearmetal.errors import MissingToolError, NearmetalError, PlanError, PrivilegeError
from nearmetal.interrupts import interrupts_as_exceptions
from nearmetal.layers import make_layer
from nearmetal.machine import ALLOW_LARGE_FIX, TooLargeError
from nearmetal.metrics import Metric
from nearmetal.plan import Cell, LoadedPlan, Trial, load_plan, parse_plan_text
from nearmetal.redact import REDACTED, redact_config_text, redact_data, redact_text
from nearmetal.store import Store
from nearmetal.telemetry import capture_environment
from nearmetal.telemetry.energy import EnergyMeter
from nearmetal.trial import TrialOutcome, TrialSpec, execute_trial, resources_for
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import Requirement

DEFAULT_WORKDIR = "nearmetal-runs"
# how long a CPU study measures the host's outside CPU use before its first trial
PREFLIGHT_S = 1.0


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
    # stored by an earlier attempt of a resumed run, not run again by this process
    resumed: bool = False


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


# statuses a resumed run keeps: the trial ran and its outcome is a measurement (a crash and a timeout are
# outcomes too). "error" means nearmetal could not run it (a layer's set-up failed): it is run again.
KEPT_ON_RESUME = frozenset({"ok", "failed", "timeout", "invalid"})


@dataclass
class ResumeState:
    """What a resumed run knows before its first trial. A backend with a ``reattach(state) -> set[str]``
    method gets it once, before anything runs, and answers the keys of trials whose jobs it re-attached to
    (still queued or running on a cluster, or finished but not stored): it then completes those trials itself
    when the runner asks for them, instead of starting them again, and host objects named with those keys
    are spared by the resume's cleanup. ``info`` is the run's stored info, where a backend may keep job ids
    (``Store.update_run_info``)."""

    run_id: str
    run_dir: Path
    done: dict[str, str]  # trial key -> stored status; these are not run again
    info: dict[str, Any]
    resumes: int  # 1 on the first resume
    # trial key -> what a remote backend recorded when it submitted the trial's job (events of kind
    # JOB_EVENT: backend, job id, trial directory), for trials not stored yet
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)


# --- preflight ---------------------------------------------------------------------------------------


def _cell_requirements(cell: Cell) -> list[Requirement]:
    reqs = list(get_workload(cell.kind).requires(cell.params))
    for config in cell.layers:
        reqs += make_layer(config).requires()
    return reqs


def missing_requirements(loaded: LoadedPlan) -> dict[Requirement, list[str]]:
    """Every tool the plan needs that is not installed, with the cells that need it."""
    missing: dict[Requirement, list[str]] = {}
    for cell in loaded.cells:
        for req in _cell_requirements(cell):
            if not req.available():
                missing.setdefault(req, []).append(cell.key)
    return missing


def skip_unavailable_cells(loaded: LoadedPlan) -> dict[str, str]:
    """Leave out of the run the cells whose only missing tools are optional ones (another image builder);
    returns cell key → the reason, which the run stores and its report shows."""
    skipped: dict[str, str] = {}
    kept = []
    for cell in loaded.cells:
        missing = [r for r in _cell_requirements(cell) if not r.available()]
        if missing and all(r.optional for r in missing):
            skipped[cell.key] = "; ".join(f"{r.tool} is not installed ({r.install_hint()})" for r in missing)
        else:
            kept.append(cell)
    if skipped and not kept:
        raise MissingToolError(
            "every cell of the plan needs a tool this machine lacks; nothing was run:\n  "
            + "\n  ".join(f"{key}: {why}" for key, why in skipped.items()),
            fix="install one of them",
        )
    loaded.cells = kept
    return skipped


def preflight(loaded: LoadedPlan, backend: Any | None = None, allow_paths: Sequence[Path] = ()) -> None:
    """Refuse, before anything runs, a plan this machine (or backend) cannot run: places it would write
    that are not allowed, layers the backend cannot apply, missing tools, missing privileges. A remote
    backend (Slurm, Kubernetes) runs the programs on its nodes or in its image: it checks tools and
    privileges its own way (``backend.check``)."""
    from nearmetal.plan.paths import check_plan_paths

    check_plan_paths(loaded, allow_paths)
    backend_name = getattr(backend, "name", "local")
    unsupported = sorted(
        {
            config.layer
            for cell in loaded.cells
            for config in cell.layers
            if (allowed := make_layer(config).backends) is not None and backend_name not in allowed
        }
    )
    if unsupported:
        raise NearmetalError(
            f"layer(s) {', '.join(unsupported)} cannot run on the {backend_name} backend; nothing was run",
            fix="run the plan with a backend that applies them (e.g. --backend kubernetes for pod)",
        )
    if backend is not None and getattr(backend, "run_trials", None) is not None:
        backend.check(loaded)
        return
    missing = missing_requirements(loaded)
    if missing:
        lines = []
        for req, cells in missing.items():
            cells = list(dict.fromkeys(cells))
            shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            if req.manager in ("device", "manual"):
                lines.append(f"{req.missing_text()} (needed by {shown}); {req.install_hint()}")
            else:
                lines.append(f"{req.missing_text()} (needed by {shown}); install it: {req.install_hint()}")
        raise MissingToolError(
            "the plan needs tools this machine lacks; nothing was run:\n  " + "\n  ".join(lines),
            fix=_install_fix(list(missing)),
        )
    if os.geteuid() != 0:
        raise_if_root_needed(loaded)


def _install_fix(missing: list[Requirement]) -> str:
    """One command per package manager (what to paste), then what no package manager can do."""
    import shlex

    debian = [r.package for r in missing if r.manager == "debian"]
    pypi = [r.package for r in missing if r.manager == "pypi"]
    steps = []
    if debian:
        steps.append("apt-get install -y " + " ".join(shlex.quote(p) for p in dict.fromkeys(debian)))
    if pypi:
        steps.append("pip install " + " ".join(shlex.quote(p) for p in dict.fromkeys(pypi)))
    steps += [r.install_hint() for r in missing if r.manager in ("device", "manual")]
    return "; ".join(dict.fromkeys(steps))


def raise_if_root_needed(loaded: LoadedPlan) -> None:
    """Layers that need root, named with why, the cells that use them and what to use without root."""
    needing: dict[str, list[str]] = {}
    classes: dict[str, Any] = {}
    for cell in loaded.cells:
        for config in cell.layers:
            layer = make_layer(config)
            if layer.needs_root:
                needing.setdefault(layer.kind, []).append(cell.key)
                classes[layer.kind] = layer
    if not needing:
        return
    lines = []
    for kind, cells in needing.items():
        layer = classes[kind]
        shown = ", ".join(dict.fromkeys(cells[:3])) + (
            f" and {len(cells) - 3} more" if len(cells) > 3 else ""
        )
        because = f" ({layer.root_because})" if layer.root_because else ""
        alternative = (
            f"; without root: {layer.rootless_alternative}"
            if layer.rootless_alternative
            else "; there is no rootless form of it"
        )
        lines.append(f"layer {kind} needs root{because}, used by {shown}{alternative}")
    raise PrivilegeError(
        f"this plan's layers change the host and nearmetal runs as uid {os.geteuid()}, not root; nothing "
        "was run:\n  " + "\n  ".join(lines),
        fix="run nearmetal as root (sudo nearmetal …), or drop those variants",
    )


# more trials than this in one run is a typo (repeats: 100000) more often than a plan
MAX_TRIALS = 20_000


def planned_trials(loaded: LoadedPlan) -> int:
    repeats = loaded.plan.repeats
    return len(loaded.cells) * (loaded.plan.warmup + max(repeats.min, repeats.max or 0))


def check_resources(loaded: LoadedPlan, workdir: Path, allow_large: bool = False) -> None:
    """Each workload's own check that the host can hold its trials (disk, memory, CPUs), and the plan's
    size; one error naming every problem, before anything runs. ``allow_large`` skips them all."""
    if allow_large:
        return
    problems: dict[str, list[str]] = {}
    fixes: list[str] = []
    trials = planned_trials(loaded)
    if trials > MAX_TRIALS:
        hours = trials * min(c.timeout for c in loaded.cells) / 3600
        problems[
            f"the plan has up to {trials:,} trials (cells × (warm-up + repeats)), more than {MAX_TRIALS:,}; "
            f"at its shortest timeout that may take up to {hours:,.0f} hours"
        ] = ["the whole plan"]
        fixes.append("lower repeats or the matrix")
    for cell in loaded.cells:
        # a workload's check, and a layer's where it has one (tmpfs: its size fits in memory)
        checks = [lambda cell=cell: get_workload(cell.kind).check_resources(cell.params, workdir)]
        checks += [c for c in (getattr(make_layer(x), "check_resources", None) for x in cell.layers) if c]
        for check in checks:
            try:
                check()
            except NearmetalError as exc:
                problems.setdefault(exc.message, []).append(cell.key)
                if exc.fix and exc.fix not in fixes:
                    fixes.append(exc.fix)
    if problems:
        lines = []
        for message, cells in problems.items():
            shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            lines.append(f"{message} ({shown})")
        fixes = [f.removesuffix(f", or {ALLOW_LARGE_FIX}") for f in fixes]
        raise TooLargeError(
            "the plan needs more than this machine has; nothing was run:\n  " + "\n  ".join(lines),
            fix="; ".join([*fixes, ALLOW_LARGE_FIX]),
        )


# --- order -------------------------------------------------------------------------------------------


def schedule(
    cells: list[Cell],
    order: str,
    warmup: int,
    first_block: int,
    blocks: int,
    seed: int,
    warmup_cells: list[Cell] | None = None,
) -> list[Trial]:
    """Trials of blocks ``first_block .. first_block + blocks - 1`` (warm-ups belong to block 0).

    interleaved: every cell once per block, shuffled per block (drift hits every variant alike);
    sequential: cell after cell; random: every trial of these blocks shuffled. The order depends only on
    the cells, the blocks and the seed, so a resumed run replays it. ``warmup_cells`` (default: ``cells``)
    get the warm-ups of block 0."""
    trials: list[Trial] = []
    if first_block == 0:
        for w in range(warmup):
            trials += [Trial(c, w, warmup=True, block=0) for c in (warmup_cells or cells)]
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


JOB_EVENT = "backend-job"


class BackendHooks:
    """What a remote backend tells the runner while trials run: a job was submitted (stored as an event so a
    resumed run can re-attach to it, see ResumeState.jobs) and a trial started (progress)."""

    def __init__(self, runner: Runner, trials: dict[str, Trial]) -> None:
        self.runner = runner
        self.trials = trials

    def submitted(self, spec: TrialSpec, job: dict[str, Any]) -> None:
        self.runner.store.add_event(
            self.runner.run_id,
            JOB_EVENT,
            {"trial_key": spec.trial_key, "trial_dir": spec.trial_dir, **job},
        )

    def started(self, spec: TrialSpec) -> None:
        trial = self.trials.get(spec.trial_key)
        if trial is not None:
            self.runner.progress.trial_started(trial, self.runner._index)


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
        resume: bool = False,
        allow_paths: Sequence[Path] = (),
        allow_large: bool = False,
    ) -> None:
        self.loaded = loaded
        self.allow_paths = list(allow_paths)
        self.allow_large = allow_large
        self.plan = loaded.plan
        self.store = store
        self.backend = backend or LocalBackend()
        self.energy = EnergyMeter(self.plan.energy)
        self.skipped: dict[str, str] = {}  # cell key → why it was left out (see skip_unavailable_cells)
        self.progress = progress or NullProgress()
        self.run_id = runlock.check_run_id(run_id) if run_id else new_run_id()
        self.seed = (
            seed
            if seed is not None
            else (self.plan.seed if self.plan.seed is not None else secrets.randbelow(2**31))
        )
        # absolute, so the stored paths still lead to the outputs when read from another directory
        self.run_dir = (Path(workdir) / self.run_id).absolute()
        self.records: list[TrialRecord] = []
        self._seq = 0
        self._index = 0
        self._abort: str | None = None
        self.resuming = resume
        # trial key -> stored status of trials an earlier attempt finished (resume)
        self.done: dict[str, str] = {}
        self.resume_state: ResumeState | None = None
        # adaptive repeats: cells still getting blocks, and why the others stopped (cell_id -> record)
        self._active: list[Cell] = list(loaded.cells)
        self.stop_records: dict[str, StopRecord] = {}
        self._blocks_run: dict[str, int] = {}
        self._precisions: dict[str, float | None] = {}
        self._started = time.monotonic()

    # one trial ---------------------------------------------------------------------------------------
    # executing a trial (layers + backend + parse) lives in nearmetal.trial, so a batch job on a cluster
    # node runs the same code; the runner turns each outcome into a stored trial
    def trial_spec(self, trial: Trial) -> TrialSpec:
        """The serialisable description of a trial that any backend executes (here or on a node)."""
        spec = TrialSpec.from_trial(trial, self.run_id, self.run_dir / trial.key, self.seed + trial.index)
        spec.resources = resources_for(trial.cell, self.plan)
        # a node measures the trial's energy with the plan's sources (RAPL, NVML, Kepler …)
        spec.energy = self.plan.energy.model_dump(mode="json")
        return spec

    def run_trial(self, trial: Trial) -> TrialRecord:
        """Execute one trial here (layers around the local backend) and store it."""
        outcome = execute_trial(self.trial_spec(trial), self.backend, energy=self.energy)
        return self.store_outcome(trial, outcome)

    def store_outcome(self, trial: Trial, outcome: TrialOutcome) -> TrialRecord:
        """Store a trial's outcome, wherever it was executed (this process, a Slurm job, a pod)."""
        cell = trial.cell
        if outcome.abort:
            self._abort = outcome.abort
        record = TrialRecord(trial, outcome.status, outcome.wall_s, outcome.metrics, outcome.error)
        self._seq += 1
        record.trial_id = self.store.add_trial(
            outcome.metrics,
            run_id=self.run_id,
            trial_key=trial.key,
            cell_id=cell.cell_id,
            cell_key=cell.key,
            comparison_key=cell.comparison_key,
            workload=cell.workload,
            kind=cell.kind,
            variant=cell.variant,
            is_baseline=cell.is_baseline,
            # secrets never reach the store (SECURITY.md): the trial itself ran with the real values
            params=redact_data(cell.params.model_dump(mode="json")),
            point=redact_data(cell.point),
            layers=[redact_data(c.model_dump(mode="json")) for c in cell.layers],
            repeat_index=trial.index,
            is_warmup=trial.warmup,
            block=trial.block,
            seq=self._seq,
            status=outcome.status,
            started_at=outcome.started_at,
            ended_at=outcome.ended_at,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            error=redact_text(outcome.error) if outcome.error else outcome.error,
            stderr_tail=redact_text(outcome.stderr_tail) if outcome.stderr_tail else outcome.stderr_tail,
            output_dir=outcome.output_dir or str(self.run_dir / trial.key),
            placement=outcome.placement,
            caveats=outcome.caveats,
        )
        for event in outcome.events:
            self.store.add_event(
                self.run_id,
                str(event.get("kind", "event")),
                event.get("detail") or {},
                trial_id=record.trial_id,
                at=event.get("time"),
            )
        return record

    def run_trials(self, trials: list[Trial]) -> Iterator[TrialRecord]:
        """Execute and store trials, yielding each record as it is stored. The local backend runs them one
        after the other in this process; a remote backend (Slurm, Kubernetes) runs them as jobs, possibly
        several at once, and yields outcomes as jobs end. Leaving early (an error, Ctrl-C) closes the
        remote backend's generator, which cancels every job it still has."""
        run_remote = getattr(self.backend, "run_trials", None)
        if run_remote is None:
            for trial in trials:
                self._fresh_trial_dir(trial)
                self.progress.trial_started(trial, self._index)
                record = self.run_trial(trial)
                # one trial at a time here: no process of the run may outlive it (a remote backend's jobs
                # may run side by side, even on this host, so only the end of the run sweeps for them)
                self._sweep(trial.key)
                yield self._finished(record)
            return
        # a job a resumed run re-attached to keeps writing into its trial's directory
        reattached = set(getattr(self.backend, "reattached", ()) or ())
        for trial in trials:
            if trial.key not in reattached:
                self._fresh_trial_dir(trial)
        by_key = {trial.key: trial for trial in trials}
        hooks = BackendHooks(self, by_key)
        with contextlib.closing(run_remote([self.trial_spec(t) for t in trials], hooks)) as outcomes:
            for spec, outcome in outcomes:
                record = self.store_outcome(by_key[spec.trial_key], outcome)
                yield self._finished(record)

    def _finished(self, record: TrialRecord) -> TrialRecord:
        self.records.append(record)
        self.done[record.trial.key] = record.status
        self.progress.trial_finished(record, self._index)
        self._index += 1
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
            # stored without its secrets; a resume of such a run needs the plan again (resume_run)
            plan_text=redact_config_text(self.loaded.text),
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
                # so a resumed run goes on with the same backend (cluster, partition, image …)
                "backend_options": _backend_options(self.backend),
                "skipped": self.skipped,
            },
        )
        plan_path = getattr(self.loaded, "path", None)
        environment = capture_environment(
            tool_versions, plan_dir=plan_path.parent if plan_path else None, store_url=self.store.url
        )
        environment["energy.source"] = self.energy.describe()
        self.store.set_environment(self.run_id, environment)

    # repeats and the stop rule ------------------------------------------------------------------------
    def cells_to_run(self) -> list[Cell]:
        """Cells that still get blocks (all of them until the stop rule retires some), in plan order."""
        return list(self._active)

    def blocks_to_run(self) -> Iterator[tuple[int, int]]:
        """(first block, number of blocks) batches. Fixed repeats are one batch. Adaptive repeats
        (``repeats: {min, max, target}``) run ``min`` blocks, then one block at a time while some cell's
        interval is wider than the target, up to ``max`` blocks or the time ``budget``; the code after
        each ``yield`` runs once the batch's trials are stored."""
        repeats = self.plan.repeats
        yield 0, repeats.min
        self._count_blocks(repeats.min)
        block = repeats.min
        while repeats.adaptive:
            self._apply_stop_rule(block)
            if not self._active:
                break
            if block >= (repeats.max or block):
                self._retire(self._active, MAX_REACHED, block)
                break
            if repeats.budget is not None and self._over_budget(repeats.budget):
                self._retire(self._active, BUDGET, block)
                break
            set_total = getattr(self.progress, "set_total", None)
            if set_total is not None:
                set_total(sum(1 for r in self.records if not r.resumed) + len(self._active))
            yield block, 1
            self._count_blocks(1)
            block += 1
        if not repeats.adaptive:
            self._apply_stop_rule(block, final=True)

    def _count_blocks(self, count: int) -> None:
        for cell in self._active:
            self._blocks_run[cell.cell_id] = self._blocks_run.get(cell.cell_id, 0) + count

    def _analysis(self) -> Any:
        from nearmetal.analysis import analyse
        from nearmetal.analysis.stopping import first_stage, paired_order
        from nearmetal.api import cells_of_plan

        cfg = self.plan.analysis
        return analyse(
            self.store.measured_table(self.run_id),
            cells_of_plan(self.loaded),
            confidence=cfg.confidence,
            resamples=cfg.bootstrap_resamples,
            seed=self.seed,
            statistic=cfg.statistic,
            own_intervals=True,
            paired=paired_order(self.plan.order),
            first_stage=first_stage(self.plan.repeats.min, self.plan.repeats.target),
        )

    def _apply_stop_rule(self, block: int, final: bool = False) -> None:
        """Retire the cells whose interval is within the target; a fixed run records why it stopped."""
        from nearmetal.analysis.stopping import cell_precisions

        target = self.plan.repeats.target
        if target is None:
            self._retire(self._active, FIXED, block)
            return
        precisions = cell_precisions(self._analysis())
        self._precisions = {cid: p.half_width for cid, p in precisions.items()}
        done = [c for c in self._active if c.cell_id in precisions and precisions[c.cell_id].met(target)]
        self._retire(done, TARGET_MET, block)
        if final:
            self._retire(self._active, MAX_REACHED, block)

    def _retire(self, cells: list[Cell], reason: str, block: int) -> None:
        precisions = self._precisions
        for cell in list(cells):
            self.stop_records[cell.cell_id] = StopRecord(
                reason,
                self._blocks_run.get(cell.cell_id, block),
                precisions.get(cell.cell_id),
                self.plan.repeats.target,
            )
        gone = {c.cell_id for c in cells}
        self._active = [c for c in self._active if c.cell_id not in gone]
        self._store_stop_info()

    def _store_stop_info(self, status: str | None = None) -> None:
        stop = {cid: rec.to_dict() for cid, rec in self.stop_records.items()}
        for cell in self._active:  # still running (or cut short by an interruption)
            stop[cell.cell_id] = StopRecord(
                status or RUNNING,
                self._blocks_run.get(cell.cell_id, 0),
                self._precisions.get(cell.cell_id),
                self.plan.repeats.target,
            ).to_dict()
        self.store.update_run_info(self.run_id, {"stop": stop})

    def _over_budget(self, budget_s: float) -> bool:
        """Would one more block of the active cells end past the budget? (mean trial time per cell; a
        resumed run counts the time its earlier attempts spent in their trials)"""
        elapsed = time.monotonic() - self._started + sum(r.wall_s for r in self.records if r.resumed)
        per_cell: dict[str, list[float]] = {}
        for rec in self.records:
            per_cell.setdefault(rec.trial.cell.cell_id, []).append(rec.wall_s)
        estimate = sum(
            sum(per_cell.get(c.cell_id, [0.0])) / max(1, len(per_cell.get(c.cell_id, [])))
            for c in self._active
        )
        return elapsed + estimate > budget_s

    def run(self) -> RunResult:
        if getattr(self.backend, "run_trials", None) is None:
            # only a local run knows what is installed where it runs; a cluster backend checks its nodes
            self.skipped = skip_unavailable_cells(self.loaded)
        kept = {c.cell_id for c in self.loaded.cells}
        self._active = [c for c in self._active if c.cell_id in kept]
        preflight(self.loaded, self.backend, self.allow_paths)
        check_workdir(self.run_dir)
        check_resources(self.loaded, self.run_dir, self.allow_large)
        if not self.resuming and self._run_exists():
            raise NearmetalError(
                f"run {self.run_id} already exists in {self.store.url}",
                fix=f"continue it with `nearmetal resume {self.run_id}`, or give another --run-id",
            )
        # held until this process ends: a second `resume` of this run is refused, and `cleanup` leaves
        # the run's host objects alone while it lives
        lock = runlock.RunLock(self.run_id).acquire()
        try:
            with _marked_environment(self.run_id):
                return self._run_locked()
        finally:
            lock.release()

    def _run_exists(self) -> bool:
        try:
            self.store.get_run(self.run_id)
        except NearmetalError:
            return False
        return True

    def _make_run_dir(self) -> None:
        if self.run_dir.is_symlink():
            raise NearmetalError(
                f"the run directory {self.run_dir} is a symbolic link; nearmetal writes only into "
                "directories it created",
                fix="remove the link, or give --workdir a real directory",
            )
        if not self.resuming and self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise NearmetalError(
                f"the run directory {self.run_dir} already holds files of another run",
                fix="give another --run-id or --workdir",
            )
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # trial outputs may hold what the workloads printed: readable by the run's user only
        self.run_dir.chmod(0o700)

    def _fresh_trial_dir(self, trial: Trial) -> None:
        """A trial interrupted by a crash left a partial directory: keep it aside, start the new attempt in
        an empty one (never write through whatever the old attempt left there)."""
        trial_dir = self.run_dir / trial.key
        if not (trial_dir.exists() or trial_dir.is_symlink()):
            return
        attempt = 1
        while (aside := self.run_dir / f"{trial.key}.attempt-{attempt}").exists() or aside.is_symlink():
            attempt += 1
        trial_dir.rename(aside)

    def _resume(self) -> None:
        """Reopen the stored run: keep its finished trials, tidy what the dead process left, go on."""
        run = self.store.get_run(self.run_id)
        stored = self.store.trials(self.run_id)
        self.done = {t.trial_key: t.status for t in stored if t.status in KEPT_ON_RESUME}
        self._seq = max((t.seq for t in stored), default=0)
        metrics = self.store.trial_metrics(self.run_id)
        trials_by_key = {t.key: t for t in self._all_planned_trials()}
        for row in stored:
            if row.trial_key in self.done and row.trial_key in trials_by_key:
                self.records.append(
                    TrialRecord(
                        trials_by_key[row.trial_key],
                        row.status,
                        row.ended_at - row.started_at,
                        metrics.get(row.trial_key, []),
                        row.error,
                        row.id,
                        resumed=True,
                    )
                )
        resumes = len((run.info or {}).get("resumes", [])) + 1
        jobs: dict[str, dict[str, Any]] = {}
        for event in self.store.events(self.run_id):
            detail = event["detail"] or {}
            if event["kind"] == JOB_EVENT and detail.get("trial_key") not in self.done:
                jobs[detail["trial_key"]] = detail
        self.resume_state = ResumeState(
            self.run_id, self.run_dir, dict(self.done), dict(run.info or {}), resumes, jobs
        )
        reattached: set[str] = set()
        reattach = getattr(self.backend, "reattach", None)
        if callable(reattach):
            reattached = set(reattach(self.resume_state) or ())
        # the dead process could not tear down its last trial: its processes may still be running (and
        # would disturb the measurements), its cgroups and namespaces are still there
        from nearmetal.cleanup import cleanup

        tidied = cleanup(
            self.run_id,
            include_live=True,
            keep=lambda leftover: any(key in leftover.name for key in reattached),
        )
        detail = {
            "at": time.time(),
            "previous_status": run.status,
            "kept_trials": len(self.done),
            "rerun_errors": sum(1 for t in stored if t.status not in KEPT_ON_RESUME),
            "removed_leftovers": [str(x) for x in tidied.removed],
            "failed_leftovers": [f"{x}: {err}" for x, err in tidied.failed],
            "reattached": sorted(reattached),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self.store.reopen_run(self.run_id, detail)
        self.store.add_event(self.run_id, "resumed", detail)

    def _all_planned_trials(self) -> list[Trial]:
        """Every trial of the fixed part of the schedule (adaptive blocks beyond it are found by key too,
        because keys do not depend on order)."""
        repeats = self.plan.repeats
        blocks = max(repeats.max or repeats.min, repeats.min)
        return schedule(self.loaded.cells, self.plan.order, self.plan.warmup, 0, blocks, self.seed)

    def _run_locked(self) -> RunResult:
        self._make_run_dir()
        self._started = time.monotonic()
        if self.resuming:
            self._resume()
        else:
            self._start_run()
        total = max(0, len(self.loaded.cells) * (self.plan.warmup + self.plan.repeats.min) - len(self.done))
        self.progress.start(total, self.plan.name, self.run_id)
        self._contention_preflight()
        status = "finished"
        with _interrupts_as_exceptions() as caught:
            try:
                for first, count in self.blocks_to_run():
                    trials = [
                        trial
                        for trial in schedule(
                            self.cells_to_run(),
                            self.plan.order,
                            self.plan.warmup,
                            first,
                            count,
                            self.seed,
                            warmup_cells=self.loaded.cells,
                        )
                        if trial.key not in self.done
                    ]
                    for _record in self.run_trials(trials):
                        if self._abort:
                            raise NearmetalError(f"run {self.run_id} stopped: {self._abort}")
            except KeyboardInterrupt:
                status = "interrupted"
                with contextlib.suppress(Exception):
                    self._store_stop_info(INTERRUPTED)
                self._end(status, {"signal": caught.get("signal", "SIGINT")})
                raise RunInterrupted(self.run_id, caught.get("signal", "SIGINT")) from None
            except BaseException as exc:
                status = "failed"
                with contextlib.suppress(Exception):
                    self._store_stop_info(FAILED)
                self._end(status, {"error": str(exc)[:2000]})
                raise
        self._end(status)
        return RunResult(self.run_id, self.store.url, self.records, status, self.run_dir)

    def _contention_preflight(self) -> None:
        """A CPU study (``analysis.contention_guard``) first measures what else uses the CPU for a second:
        a busy host is named before an hour of trials, and the reading is stored as a ``contention-preflight``
        event. The per-trial evidence (``telemetry.contention``) decides the verdicts; this only warns."""
        if not self.plan.analysis.contention_guard or getattr(self.backend, "run_trials", None) is not None:
            return
        from nearmetal.analysis.contention import TrialNoise, trial_contended
        from nearmetal.telemetry.contention import measure_host

        try:
            evidence = measure_host(PREFLIGHT_S, run_id=self.run_id)
        except OSError:
            return
        threshold = self.plan.analysis.max_outside_cpu_pct
        busy = trial_contended(
            TrialNoise(evidence.outside_cpu_pct, evidence.steal_pct, evidence.loadavg, evidence.cpus),
            threshold,
        )
        self.store.add_event(self.run_id, "contention-preflight", {**evidence.to_dict(), "busy": busy})
        if busy:
            note = getattr(self.progress, "note", None)
            text = (
                f"the host is busy: {evidence.describe()}. Trials that run beside more than {threshold:g}% of"
                " one CPU of outside work will read 'contended — not interpretable'; stop those programs"
                " (`nearmetal doctor --check host-contention` names them) or run on an idle host"
            )
            if note is not None:
                note(text)
            else:
                logging.getLogger(__name__).warning(text)

    def _sweep(self, after: str) -> None:
        """No process of the run may outlive its trial: one that did (a layer or backend that lost track
        of it) is killed before it disturbs the next trial, and recorded as a ``leak`` event, so the bug
        shows in the run's history and in the exit-path tests instead of on the host."""
        from nearmetal.cleanup import find_processes

        with contextlib.suppress(Exception):
            leaked = find_processes(self.run_id)
            if not leaked:
                return
            for leftover in leaked:
                with contextlib.suppress(Exception):
                    leftover.remove()
            self.store.add_event(self.run_id, "leak", {"after": after, "processes": [str(x) for x in leaked]})

    def _end(self, status: str, detail: dict[str, Any] | None = None) -> None:
        self._sweep("end of run")
        # a store that cannot be written any more must not hide the reason the run stopped
        with contextlib.suppress(Exception):
            if status != "finished":
                self.store.add_event(self.run_id, status, detail or {})
            self.store.finish_run(self.run_id, status)
        self.progress.finish()


@contextlib.contextmanager
def _marked_environment(run_id: str) -> Iterator[None]:
    """Every process the run starts inherits ``NEARMETAL_RUN_ID``, so ``nearmetal cleanup`` can find the
    process tree of a run that died without tearing it down."""
    previous = os.environ.get(runlock.RUN_ENV)
    os.environ[runlock.RUN_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(runlock.RUN_ENV, None)
        else:
            os.environ[runlock.RUN_ENV] = previous


# SIGTERM (and SIGHUP) raise KeyboardInterrupt like Ctrl-C, so every layer's teardown runs
_interrupts_as_exceptions = interrupts_as_exceptions


def _backend_options(backend: Any) -> dict[str, Any]:
    options = getattr(backend, "options", None)
    out: dict[str, Any] = options.model_dump(mode="json") if hasattr(options, "model_dump") else {}
    for attr in ("kubeconfig", "context"):
        if getattr(backend, attr, None):
            out[attr] = getattr(backend, attr)
    return out


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
    run_id: str | None = None,
    allow_paths: Sequence[Path] = (),
    allow_large: bool = False,
) -> RunResult:
    """Run a plan and store every trial; returns the run id. The library entry point under ``nearmetal run``.
    ``allow_paths``: places outside the run's directory the plan may write (fio.directory …);
    ``allow_large``: run even when the plan asks for more than the machine has."""
    loaded = plan if isinstance(plan, LoadedPlan) else load_plan(plan)
    new_file = _new_sqlite_file(db)
    store = Store(db)
    try:
        return Runner(
            loaded,
            store,
            Path(workdir),
            backend=backend,
            progress=progress,
            seed=seed,
            run_id=run_id,
            allow_paths=allow_paths,
            allow_large=allow_large,
        ).run()
    except BaseException:
        # a plan refused before its run was created leaves no store file behind that it made
        if new_file is not None:
            _remove_if_empty(store, new_file)
        raise
    finally:
        store.dispose()


def _new_sqlite_file(db: str | None) -> Path | None:
    """The SQLite file ``db`` names when it does not exist yet (else None)."""
    from sqlalchemy.engine import make_url

    from nearmetal.store.store import resolve_db_url

    url = make_url(resolve_db_url(db))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    return None if path.exists() else path


def _remove_if_empty(store: Store, path: Path) -> None:
    with contextlib.suppress(Exception):
        if store.list_runs(limit=1):
            return
        store.dispose()
        for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
            with contextlib.suppress(OSError):
                (path.parent / name).unlink()


def check_workdir(run_dir: Path) -> None:
    """The run's directory can be made and written: not in a kernel filesystem (/proc, /sys, /dev), not on a
    read-only filesystem, not below a file; one line, before anything runs."""
    real = Path(os.path.realpath(run_dir))
    for pseudo in (Path("/proc"), Path("/sys"), Path("/dev")):
        if real == pseudo or pseudo in real.parents:
            raise NearmetalError(
                f"the run directory {run_dir} would be in {pseudo}, a kernel filesystem; nothing was run",
                fix="give --workdir a directory on a disk",
            )
    existing = real
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NearmetalError(
            f"the run directory {run_dir} would be below {existing}, which is not a directory; nothing was run",
            fix="give --workdir a directory",
        )
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(existing, os.W_OK | os.X_OK):
        why = "is on a read-only filesystem" if read_only else "is not writable by this user"
        raise NearmetalError(
            f"the run directory {run_dir} cannot be made: {existing} {why}; nothing was run",
            fix="give --workdir a writable directory",
        )


class PlanMismatchError(NearmetalError):
    """The plan given to ``--resume`` is not the one the run was started with."""

    exit_code = 2


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def plan_differences(stored: LoadedPlan, given: LoadedPlan) -> list[str]:
    """What differs between two plans, one line per field (``repeats.min: 5 → 10``); comments, layout and
    key order do not count."""
    # the stored plan has its secrets redacted (SECURITY.md): compare both sides redacted
    before = _flatten(redact_data(stored.plan.model_dump(mode="json")))
    after = _flatten(redact_data(given.plan.model_dump(mode="json")))
    lines = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            lines.append(f"{key}: removed (was {before[key]!r})")
        elif key not in before:
            lines.append(f"{key}: added ({after[key]!r})")
        elif before[key] != after[key]:
            lines.append(f"{key}: {before[key]!r} → {after[key]!r}")
    return lines


def load_stored_plan(run: Any) -> LoadedPlan:
    source = Path(run.plan_source).name if run.plan_source else f"run {run.id}"
    try:
        return parse_plan_text(run.plan_text, source=source)
    except PlanError as exc:
        raise NearmetalError(
            f"the plan stored with run {run.id} no longer loads in this nearmetal version:\n  "
            + "\n  ".join(exc.problems),
            fix="resume it with the nearmetal version that started it "
            f"({run.nearmetal_version or 'unknown'})",
        ) from None


def resume_run(
    run_id: str,
    db: str | None = None,
    plan: str | Path | LoadedPlan | None = None,
    workdir: str | Path | None = None,
    progress: Progress | None = None,
    backend: Any | None = None,
    allow_paths: Sequence[Path] = (),
    allow_large: bool = False,
) -> RunResult:
    """Continue a run that was killed, interrupted or failed: its finished trials are kept, the rest of its
    schedule (the same order: the schedule comes from the run's recorded seed) is run. With ``plan``, the
    plan must be the one the run was started with."""
    store = Store(db)
    try:
        run = store.get_run(run_id)
        if plan is None and REDACTED in run.plan_text:
            raise NearmetalError(
                f"run {run.id}'s plan held secrets, which nearmetal does not store, so the stored plan "
                "cannot run again by itself",
                fix=f"give the plan it was started with: nearmetal run PLAN --resume {run.id}",
            )
        stored = load_stored_plan(run)
        if plan is not None:
            given = plan if isinstance(plan, LoadedPlan) else load_plan(plan)
            differences = plan_differences(stored, given)
            if differences:
                shown = differences[:8] + (
                    [f"… and {len(differences) - 8} more"] if len(differences) > 8 else []
                )
                raise PlanMismatchError(
                    f"{given.source} is not the plan run {run.id} was started with; resuming would mix two "
                    "experiments:\n  " + "\n  ".join(shown),
                    fix=f"resume with the stored plan (nearmetal resume {run.id}), or start a new run "
                    f"(nearmetal run {given.source})",
                )
        if run.status == "finished" and all(t.status in KEPT_ON_RESUME for t in store.trials(run.id)):
            return RunResult(run.id, store.url, [], "finished", Path(run.workdir) if run.workdir else None)
        base = (
            Path(workdir)
            if workdir is not None
            else (Path(run.workdir).parent if run.workdir else Path(DEFAULT_WORKDIR))
        )
        if backend is None and run.backend and run.backend != "local":
            from nearmetal.backends.select import make_backend

            backend = make_backend(run.backend, stored.plan, **(run.info or {}).get("backend_options", {}))
        runner = Runner(
            # the given plan equals the stored one (checked above) but keeps the secrets the store lacks
            given if plan is not None else stored,
            store,
            base,
            backend=backend,
            progress=progress,
            run_id=run.id,
            seed=run.seed,
            resume=True,
            allow_paths=allow_paths,
            allow_large=allow_large,
        )
        return runner.run()
    finally:
        store.dispose()


ProgressFactory = Callable[[], Progress]
