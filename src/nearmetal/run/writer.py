"""A trial's outcome, wherever it was executed (this process, a Slurm job, a pod), into the store."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nearmetal import __version__
from nearmetal.plan import LoadedPlan, Trial
from nearmetal.redact import redact_config_text, redact_data, redact_text
from nearmetal.run.records import TrialRecord
from nearmetal.run.resume import JOB_EVENT
from nearmetal.run.trial import TrialOutcome, TrialSpec
from nearmetal.store import Store


class TrialWriter:
    """Stores the trials of one run in the order they end (``seq``)."""

    def __init__(self, store: Store, run_id: str, run_dir: Path, seq: int = 0) -> None:
        self.store = store
        self.run_id = run_id
        self.run_dir = run_dir
        self.seq = seq

    def write(self, trial: Trial, outcome: TrialOutcome) -> TrialRecord:
        cell = trial.cell
        record = TrialRecord(trial, outcome.status, outcome.wall_s, outcome.metrics, outcome.error)
        self.seq += 1
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
            seq=self.seq,
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


def record_new_run(
    store: Store,
    loaded: LoadedPlan,
    run_id: str,
    run_dir: Path,
    backend: str,
    seed: int,
    info: dict[str, Any],
) -> None:
    """The run's row: its plan (without secrets), where and how it runs; ``info`` adds to what is stored
    (the backend's options, so a resumed run goes on with the same cluster, partition, image …)."""
    plan = loaded.plan
    store.create_run(
        id=run_id,
        name=plan.name,
        description=plan.description,
        # stored without its secrets; a resume of such a run needs the plan again (resume_run)
        plan_text=redact_config_text(loaded.text),
        plan_source=loaded.source,
        plan_hash=hashlib.sha256(loaded.text.encode()).hexdigest(),
        status="running",
        started_at=time.time(),
        host=socket.gethostname(),
        backend=backend,
        seed=seed,
        nearmetal_version=__version__,
        workdir=str(run_dir),
        info={
            "order": plan.order,
            "warmup": plan.warmup,
            "repeats": plan.repeats.model_dump(),
            "cells": len(loaded.cells),
            **info,
        },
    )


class JobRecorder:
    """What a remote backend tells the runner while trials run (``backends.base.RemoteHooks``): a submitted
    job is stored as an event (a resumed run re-attaches to it, ``ResumeState.jobs``); a started one is
    progress."""

    def __init__(
        self, store: Store, run_id: str, trials: dict[str, Trial], started: Callable[[Trial], None]
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.trials = trials
        self._started = started

    def submitted(self, spec: TrialSpec, job: dict[str, Any]) -> None:
        detail = {"trial_key": spec.trial_key, "trial_dir": spec.trial_dir, **job}
        self.store.add_event(self.run_id, JOB_EVENT, detail)

    def started(self, spec: TrialSpec) -> None:
        trial = self.trials.get(spec.trial_key)
        if trial is not None:
            self._started(trial)


def run_environment(loaded: LoadedPlan, store_url: str) -> dict[str, str]:
    """What a new run records about where it ran: the host (``capture_environment``) and the versions of the
    tools its workloads use."""
    import contextlib

    from nearmetal.telemetry import capture_environment
    from nearmetal.workloads import get_workload

    tool_versions: dict[str, str] = {}
    for kind in {c.kind for c in loaded.cells}:
        with contextlib.suppress(Exception):
            tool_versions.update(get_workload(kind).tool_versions())
    plan_path = getattr(loaded, "path", None)
    plan_dir = plan_path.parent if plan_path else None
    return capture_environment(tool_versions, plan_dir=plan_dir, store_url=store_url)
