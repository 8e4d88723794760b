"""A resumed run adopts the Slurm jobs its previous runner submitted (its ``backend-job`` events) instead
of submitting their trials again."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nearmetal.backends.slurm.queue import Job, JobQueue
from nearmetal.backends.slurm.script import OUTCOME_NAME, SPEC_NAME
from nearmetal.backends.spec import TrialSpec

if TYPE_CHECKING:
    from nearmetal.run.resume import ResumeState


class JobReattach(JobQueue):
    """The Slurm backend's part that re-attaches to a resumed run's jobs."""

    reattached: dict[str, Job]

    def reattached_keys(self) -> set[str]:
        return set(self.reattached)

    def reattach(self, state: ResumeState) -> set[str]:
        """Resume: adopt the jobs a previous runner of this run submitted (``state.jobs``, from its
        ``backend-job`` events) that Slurm still knows or that left an outcome. Returns their trial keys;
        ``run_trials`` then waits for those jobs instead of submitting the trials again. A job Slurm forgot
        that left no outcome is not adopted: its trial runs again."""
        by_job: dict[str, Job] = {}
        real_tasks: dict[str, set[int]] = {}
        for detail in (state.jobs or {}).values():
            if detail.get("backend") != self.name or not detail.get("job_id"):
                continue
            spec_path = Path(detail["trial_dir"]) / SPEC_NAME
            if not spec_path.exists():
                continue
            spec = TrialSpec.read(spec_path)
            job_id = str(detail["job_id"])
            task = detail.get("task")
            job = by_job.setdefault(job_id, Job(job_id, "", [], array=task is not None))
            if task is None:
                job.specs = [spec]
            else:
                while len(job.specs) <= int(task):
                    job.specs.append(spec)
                job.specs[int(task)] = spec
                real_tasks.setdefault(job_id, set()).add(int(task))
        adopted: set[str] = set()
        for job in by_job.values():
            if job.array:
                # tasks whose trials are stored already (or were never recorded) are not waited for
                job.done.update(
                    f"{job.job_id}_{i}" for i in range(len(job.specs)) if i not in real_tasks[job.job_id]
                )
            seen = self.poll([job])
            for task_id in job.task_ids():
                if task_id in job.done:
                    continue
                spec = job.spec_of(task_id)
                known = task_id in seen or any(k.startswith(f"{job.job_id}_[") for k in seen)
                if known or (Path(spec.trial_dir) / OUTCOME_NAME).exists() or self.job_details(task_id):
                    adopted.add(spec.trial_key)
                else:
                    job.done.add(task_id)  # forgotten and no outcome: the trial runs again
            if not job.finished:
                for task_id in job.task_ids():
                    if task_id not in job.done:
                        self.reattached[job.spec_of(task_id).trial_key] = job
        return adopted
