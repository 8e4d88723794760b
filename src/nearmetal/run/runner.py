"""Running a plan: the orchestration of ``nearmetal run`` and ``nearmetal resume``.

The flow is one direction: plan → preflight → trials in order (``run.schedule``) → the backend runs each
(layers around a host backend's processes, ``trial.execute_trial``; whole trials on a remote backend) →
outcomes into the store (``run.writer``) → the stop rule between blocks (``run.repeats``). The parts live
in ``nearmetal.run``; this module only puts them in order.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nearmetal.analysis.stopping import FAILED, INTERRUPTED
from nearmetal.backends.base import Backend
from nearmetal.backends.local import LocalBackend
from nearmetal.backends.select import make_backend
from nearmetal.errors import NearmetalError
from nearmetal.host import runlock
from nearmetal.host.interrupts import interrupts_as_exceptions
from nearmetal.plan import LoadedPlan, Trial, load_plan
from nearmetal.run.hygiene import contention_preflight, sweep
from nearmetal.run.preflight import Allowances, preflight, refuse_before_running, skip_unavailable_cells
from nearmetal.run.records import (
    DEFAULT_WORKDIR,
    NullProgress,
    Progress,
    RunInterrupted,
    RunResult,
    TrialRecord,
    new_run_id,
)
from nearmetal.run.repeats import Repeats
from nearmetal.run.resume import (
    KEPT_ON_RESUME,
    PlanMismatchError,
    ResumeState,
    load_resume_state,
    plans_of_resume,
    reopen_run,
    stored_records,
)
from nearmetal.run.schedule import schedule
from nearmetal.run.shield import Shield, close_shield, open_shield, repair_blocks
from nearmetal.run.trial import TrialOutcome, TrialSpec, execute_trial, resources_for
from nearmetal.run.workdir import (
    fresh_trial_dir,
    make_run_dir,
    marked_environment,
    new_sqlite_file,
    remove_if_empty,
)
from nearmetal.run.writer import JobRecorder, TrialWriter, record_new_run, run_environment
from nearmetal.store import Store
from nearmetal.telemetry.energy import EnergyMeter


class Runner:
    def __init__(
        self,
        loaded: LoadedPlan,
        store: Store,
        workdir: Path,
        backend: Backend | None = None,
        progress: Progress | None = None,
        run_id: str | None = None,
        seed: int | None = None,
        resume: bool = False,
        allow: Allowances = Allowances(),
        shield: bool = False,
    ) -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self.store = store
        self.backend: Backend = backend or LocalBackend()
        self.progress: Progress = progress or NullProgress()
        self.allow = allow
        self.run_dir_fd: int | None = None
        self.resuming = resume
        self.run_id = runlock.check_run_id(run_id) if run_id else new_run_id()
        plan_seed = self.plan.seed if self.plan.seed is not None else secrets.randbelow(2**31)
        self.seed = seed if seed is not None else plan_seed
        # absolute, so the stored paths still lead to the outputs when read from another directory; resolved
        # once, so a link on the way (which its owner could point elsewhere later) is not followed again
        self.run_dir = Path(os.path.realpath(workdir)) / self.run_id
        self.energy = EnergyMeter(self.plan.energy)
        self.skipped: dict[str, str] = {}  # cell key → why it was left out (see skip_unavailable_cells)
        self.writer = TrialWriter(store, self.run_id, self.run_dir)
        self.repeats = Repeats(
            loaded,
            self.seed,
            measured=lambda: self.store.measured_table(self.run_id),
            on_change=lambda stop: self.store.update_run_info(self.run_id, {"stop": stop}),
        )
        self.records: list[TrialRecord] = []
        self.done: dict[str, str] = {}  # trial key -> stored status of trials already finished (resume)
        self.resume_state: ResumeState | None = None
        self.index = 0
        self._abort: str | None = None
        self.want_shield = shield or self.plan.shield  # run.shield
        self.shield: Shield | None = None

    # trials ------------------------------------------------------------------------------------------
    def trial_spec(self, trial: Trial) -> TrialSpec:
        """The serialisable description of a trial that any backend executes (here or on a node)."""
        spec = TrialSpec.from_trial(trial, self.run_id, self.run_dir / trial.key, self.seed + trial.index)
        spec.resources = resources_for(trial.cell, self.plan)
        # a node measures the trial's energy with the plan's sources (RAPL, NVML, Kepler …)
        spec.energy = self.plan.energy.model_dump(mode="json")
        spec.shield = self.shield.spec() if self.shield is not None else {}
        return spec

    def store_outcome(self, trial: Trial, outcome: TrialOutcome) -> TrialRecord:
        if outcome.abort:
            self._abort = outcome.abort
        return self.writer.write(trial, outcome)

    def run_trials(self, trials: list[Trial]) -> Iterator[TrialRecord]:
        """Execute and store trials, yielding each record as it is stored. A host backend runs them one after
        the other in this process; a remote backend runs them as jobs, possibly several at once, and yields
        outcomes as jobs end. Leaving early (an error, Ctrl-C) closes the remote backend's generator, which
        cancels every job it still has."""
        if not self.backend.remote:
            for trial in trials:
                fresh_trial_dir(self.run_dir, trial.key, self.run_dir_fd)
                self.progress.trial_started(trial, self.index)
                outcome = execute_trial(self.trial_spec(trial), self.backend, energy=self.energy)
                record = self.store_outcome(trial, outcome)
                # one trial at a time here: no process of the run may outlive it (a remote backend's jobs may
                # run side by side, even on this host, so only the end of the run sweeps for them)
                sweep(self.store, self.run_id, trial.key)
                yield self._finished(record)
            return
        reattached = self.backend.reattached_keys()  # their jobs keep writing into their trial directories
        for trial in trials:
            if trial.key not in reattached:
                fresh_trial_dir(self.run_dir, trial.key, self.run_dir_fd)
        by_key = {trial.key: trial for trial in trials}
        specs = [self.trial_spec(t) for t in trials]
        with contextlib.closing(
            self.backend.run_trials(specs, JobRecorder(self.store, self.run_id, by_key, self._started_trial))
        ) as outcomes:
            for spec, outcome in outcomes:
                yield self._finished(self.store_outcome(by_key[spec.trial_key], outcome))

    def _started_trial(self, trial: Trial) -> None:
        self.progress.trial_started(trial, self.index)

    def _finished(self, record: TrialRecord) -> TrialRecord:
        self.records.append(record)
        self.done[record.trial.key] = record.status
        self.repeats.trial_ended(record.trial.cell.cell_id, record.wall_s, earlier=record.resumed)
        self.progress.trial_finished(record, self.index)
        self.index += 1
        return record

    # the run -----------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        if not self.backend.remote:
            # only a local run knows what is installed where it runs; a cluster backend checks its nodes
            self.skipped = skip_unavailable_cells(self.loaded)
        self.repeats.keep_only({c.cell_id for c in self.loaded.cells})
        refuse_before_running(self.loaded, self.backend, self.run_dir, self.allow)
        if not self.resuming and self._run_exists():
            raise NearmetalError(
                f"run {self.run_id} already exists in {self.store.url}",
                fix=f"continue it with `nearmetal resume {self.run_id}`, or give another --run-id",
            )
        # held until this process ends: a second `resume` of this run is refused, and `cleanup` leaves the
        # run's host objects alone while it lives
        lock = runlock.RunLock(self.run_id).acquire()
        try:
            with marked_environment(self.run_id):
                self.shield = open_shield(self)  # run.shield: the run's top-weight cgroup, or None
                return self._run_locked()
        finally:
            close_shield(self.shield)  # on every exit path (an error, Ctrl-C, SIGTERM)
            lock.release()
            if self.run_dir_fd is not None:
                os.close(self.run_dir_fd)
                self.run_dir_fd = None

    def _run_exists(self) -> bool:
        try:
            self.store.get_run(self.run_id)
        except NearmetalError:
            return False
        return True

    def _start_run(self) -> None:
        info: dict[str, Any] = {"backend_options": self.backend.options_record(), "skipped": self.skipped}
        info["shield"] = self.shield.record() if self.shield is not None else None
        record_new_run(self.store, self.loaded, self.run_id, self.run_dir, self.backend.name, self.seed, info)
        environment = run_environment(self.loaded, self.store.url)
        self.store.set_environment(self.run_id, {**environment, "energy.source": self.energy.describe()})

    def _resume(self) -> None:
        """Reopen the stored run: keep its finished trials, tidy what the dead process left, go on."""
        state, stored, self.writer.seq = load_resume_state(self.store, self.run_id, self.run_dir)
        self.resume_state, self.done = state, dict(state.done)
        for record in stored_records(self.store, self.loaded, self.run_id, self.seed, self.done):
            self.records.append(record)
            self.repeats.trial_ended(record.trial.cell.cell_id, record.wall_s, earlier=True)
        reopen_run(self.store, self.run_id, stored, self.backend.reattach(state))

    def _run_locked(self) -> RunResult:
        self.run_dir_fd = make_run_dir(self.run_dir, self.resuming, self.allow.shared_workdir)
        self.repeats.started = time.monotonic()
        self._resume() if self.resuming else self._start_run()
        total = max(0, len(self.loaded.cells) * (self.plan.warmup + self.plan.repeats.min) - len(self.done))
        self.progress.start(total, self.plan.name, self.run_id)
        if self.plan.analysis.contention_guard and not self.backend.remote:
            contention_preflight(self.loaded, self.store, self.run_id, self.progress.note)
        set_total = self.progress.set_total
        ran_here = lambda: sum(1 for r in self.records if not r.resumed)  # noqa: E731
        status = "finished"
        with interrupts_as_exceptions() as caught:
            try:
                for first, count in self.repeats.batches(lambda more: set_total(ran_here() + more)):
                    cells = list(self.repeats.active)
                    order, warmup = self.plan.order, self.plan.warmup
                    trials = schedule(
                        cells, order, warmup, first, count, self.seed, warmup_cells=self.loaded.cells
                    )
                    for _record in self.run_trials([t for t in trials if t.key not in self.done]):
                        if self._abort:
                            raise NearmetalError(f"run {self.run_id} stopped: {self._abort}")
                repair_blocks(self)  # run.repair: uneven blocks run again
            except KeyboardInterrupt:
                with contextlib.suppress(Exception):
                    self.repeats.store_stop_info(INTERRUPTED)
                self._end("interrupted", {"signal": caught.get("signal", "SIGINT")})
                raise RunInterrupted(self.run_id, caught.get("signal", "SIGINT")) from None
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    self.repeats.store_stop_info(FAILED)
                self._end("failed", {"error": str(exc)[:2000]})
                raise
        self._end(status)
        return RunResult(self.run_id, self.store.url, self.records, status, self.run_dir)

    def _end(self, status: str, detail: dict[str, Any] | None = None) -> None:
        sweep(self.store, self.run_id, "end of run")
        # a store that cannot be written any more must not hide the reason the run stopped
        with contextlib.suppress(Exception):
            if status != "finished":
                self.store.add_event(self.run_id, status, detail or {})
            self.store.finish_run(self.run_id, status)
        self.progress.finish()


def run_plan(
    plan: str | Path | LoadedPlan,
    db: str | None = None,
    workdir: str | Path = DEFAULT_WORKDIR,
    progress: Progress | None = None,
    seed: int | None = None,
    backend: Backend | None = None,
    run_id: str | None = None,
    allow: Allowances = Allowances(),
    shield: bool = False,
) -> RunResult:
    """Run a plan and store every trial (the library entry point under ``nearmetal run``). ``allow``: what
    the command line allowed (--allow-path, --allow-large, --allow-shared-workdir, --allow-network);
    ``shield``: run every trial in one top-weight cgroup (``run.shield``)."""
    loaded = plan if isinstance(plan, LoadedPlan) else load_plan(plan)
    new_file = new_sqlite_file(db)
    store = Store(db)
    try:
        return Runner(
            loaded, store, Path(workdir), backend, progress, run_id, seed, allow=allow, shield=shield
        ).run()
    except BaseException:
        if new_file is not None:
            remove_if_empty(store, new_file)
        raise
    finally:
        store.dispose()


def resume_run(
    run_id: str,
    db: str | None = None,
    plan: str | Path | LoadedPlan | None = None,
    workdir: str | Path | None = None,
    progress: Progress | None = None,
    backend: Backend | None = None,
    allow: Allowances = Allowances(),
    shield: bool = False,
    backend_options: dict[str, Any] | None = None,
) -> RunResult:
    """Continue a run that was killed, interrupted or failed: its finished trials are kept, the rest of its
    schedule (the same order: the schedule comes from the run's recorded seed) is run. With ``plan``, the
    plan must be the one the run was started with. The run's backend is built again from its stored
    options; ``backend_options`` (the command line's, None = not given) replace them."""
    store = Store(db)
    try:
        run = store.get_run(run_id)
        stored, given = plans_of_resume(run, plan)
        if run.status == "finished" and all(t.status in KEPT_ON_RESUME for t in store.trials(run.id)):
            return RunResult(run.id, store.url, [], "finished", Path(run.workdir) if run.workdir else None)
        if workdir is not None:
            base = Path(workdir)
        else:
            base = Path(run.workdir).parent if run.workdir else Path(DEFAULT_WORKDIR)
        if backend is None and run.backend and run.backend != "local":
            cli = {k: v for k, v in (backend_options or {}).items() if v is not None}
            options = {**(run.info or {}).get("backend_options", {}), **cli}
            backend = make_backend(run.backend, stored.plan, **options)
        runner = Runner(
            # the given plan equals the stored one (checked above) but keeps the secrets the store lacks
            given if given is not None else stored,
            store,
            base,
            backend=backend,
            progress=progress,
            run_id=run.id,
            seed=run.seed,
            resume=True,
            allow=allow,
            shield=shield,
        )
        return runner.run()
    finally:
        store.dispose()


__all__ = [
    "DEFAULT_WORKDIR",
    "Allowances",
    "NullProgress",
    "PlanMismatchError",
    "Progress",
    "ResumeState",
    "RunInterrupted",
    "RunResult",
    "Runner",
    "TrialRecord",
    "preflight",
    "resume_run",
    "run_plan",
    "schedule",
]
