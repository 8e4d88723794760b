"""The Slurm backend: submit each trial (or a cell's repeats, as a job array) as a batch job, poll, collect
the outcome the job wrote, cancel every job still queued or running on every exit."""

from __future__ import annotations

import sys
import time
from collections.abc import Generator, Iterator
from typing import Any

from pydantic import BaseModel

from nearmetal.backends.base import RemoteHooks, register_backend
from nearmetal.backends.slurm.check import SlurmCheck
from nearmetal.backends.slurm.commands import SlurmError
from nearmetal.backends.slurm.options import SlurmOptions
from nearmetal.backends.slurm.outcome import JobOutcomes
from nearmetal.backends.slurm.queue import FINAL_STATES, NEVER_STARTS, Job
from nearmetal.backends.slurm.reattach import JobReattach
from nearmetal.backends.slurm.script import DEFAULT_TEMPLATE
from nearmetal.backends.spec import TrialOutcome, TrialSpec


@register_backend
class SlurmBackend(JobReattach, JobOutcomes, SlurmCheck):
    """Submit each trial as a batch job; poll; collect the outcome the job wrote; cancel on every exit."""

    name = "slurm"
    summary = "batch jobs"
    Options = SlurmOptions

    @classmethod
    def from_plan(cls, plan: BaseModel | None = None, **given: Any) -> SlurmBackend:
        """Batch jobs: the plan's ``slurm:`` options, overridden by the command line's."""
        return cls(cls.options_from(plan, given), template=given.get("template"))

    def __init__(
        self,
        options: SlurmOptions | None = None,
        python: str | None = None,
        template: str | None = None,
        setup: str = "",
    ) -> None:
        self.options = options or SlurmOptions()
        self.python = python or sys.executable
        self.template = template or DEFAULT_TEMPLATE
        self.setup = setup
        self._accounting = None
        self._never_starts: dict[tuple[str, ...], str] = {}
        self._live = {}
        # trial key -> a job a resumed run adopted (see reattach); run_trials waits for it, submits nothing
        self.reattached = {}

    def options_record(self) -> dict[str, Any]:
        return self.options.model_dump(mode="json")

    # --- the loop -------------------------------------------------------------------------------------
    def _batches(self, specs: list[TrialSpec]) -> list[tuple[list[TrialSpec], bool]]:
        """Submission units in schedule order: single trials, or (parallel + array) a cell's trials."""
        if self.options.parallel <= 1 or not self.options.array:
            return [([s], False) for s in specs]
        groups: dict[tuple[str, ...], list[TrialSpec]] = {}
        order: list[tuple[str, ...]] = []
        for spec in specs:
            # a cell's repeats across the blocks of this batch (trials overlap anyway when parallel > 1)
            key = (spec.trial_key.split("-")[0], str(spec.warmup), *self.sbatch_options(spec))
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(spec)
        return [(groups[k], len(groups[k]) > 1) for k in order]

    def run_trials(
        self, specs: list[TrialSpec], hooks: RemoteHooks
    ) -> Generator[tuple[TrialSpec, TrialOutcome], None, None]:
        """Submit, poll and collect; yields (spec, outcome) as jobs end. Closing the generator (Ctrl-C, an
        error in the runner) cancels every job still queued or running."""
        adopted = [s for s in specs if s.trial_key in self.reattached]
        pending = self._batches([s for s in specs if s.trial_key not in self.reattached])
        jobs: list[Job] = []
        for spec in adopted:
            job = self.reattached.pop(spec.trial_key)
            if job not in jobs:
                jobs.append(job)
            hooks.started(spec)
        try:
            while pending or any(not j.finished for j in jobs):
                in_flight = sum(len(j.specs) - len(j.done) for j in jobs)
                while pending and (in_flight == 0 or in_flight + len(pending[0][0]) <= self.options.parallel):
                    batch, array = pending.pop(0)
                    key = tuple(self.sbatch_options(batch[0]))
                    if key in self._never_starts:
                        for spec in batch:
                            yield spec, self._refused(spec, self._never_starts[key])
                        continue
                    try:
                        job = self.submit(batch, array)
                    except SlurmError as exc:
                        self._never_starts[key] = str(exc)
                        for spec in batch:
                            yield spec, self._refused(spec, str(exc))
                        continue
                    jobs.append(job)
                    in_flight += len(batch)
                    for i, spec in enumerate(batch):
                        hooks.submitted(
                            spec,
                            {"backend": self.name, "job_id": job.job_id, "task": i if array else None},
                        )
                        hooks.started(spec)
                active = [j for j in jobs if not j.finished]
                if not active:
                    continue
                yield from self._collect(active)
                if any(not j.finished for j in active):
                    time.sleep(self._interval(active))
        finally:
            self.cancel([j for j in jobs if not j.finished])

    def _interval(self, active: list[Job]) -> float:
        """Poll soon after a submission (short trials end in seconds), then every ``poll_s``."""
        age = time.time() - max(j.submitted_at for j in active)
        return min(self.options.poll_s, max(0.2, age / 4))

    def _collect(self, active: list[Job]) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
        """Outcomes of the tasks of these jobs that ended since the last poll."""
        seen = self.poll(active)
        for job in active:
            for task_id in job.task_ids():
                if task_id in job.done:
                    continue
                state, reason = seen.get(task_id, ("", ""))
                if job.array and not state:
                    # a pending array shows as one line (123_[0-4]) until its tasks start
                    pend = next((v for k, v in seen.items() if k.startswith(f"{job.job_id}_[")), None)
                    if pend:
                        state, reason = pend
                job.states[task_id] = (state, reason)
                if state == "PENDING" and reason in NEVER_STARTS:
                    self.cancel([job])
                    key = tuple(self.sbatch_options(job.specs[0]))
                    self._never_starts[key] = f"Slurm can never start this request ({reason})"
                    for tid in job.task_ids():
                        if tid not in job.done:
                            job.done.add(tid)
                            yield job.spec_of(tid), self._never_starts_outcome(job, tid, reason)
                    break
                if state in FINAL_STATES or not state:
                    # not listed any more: gone from squeue's memory; scontrol/sacct/the outcome tell
                    job.done.add(task_id)
                    yield job.spec_of(task_id), self.outcome(job, task_id, state, reason)
            if job.finished:
                self._live.pop(job.job_id, None)
