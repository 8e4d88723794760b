"""A trial's outcome from what its job wrote (``outcome.json``, the job's log) and what Slurm says of the job
(its end state, reason, exit code, node list, queue wait): Slurm's word wins where the job ended badly."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from nearmetal.backends.slurm.commands import _timestamp
from nearmetal.backends.slurm.queue import NEVER_STARTS, STATE_STATUS, Job, JobQueue
from nearmetal.backends.slurm.script import OUTCOME_NAME
from nearmetal.backends.spec import TrialOutcome, TrialSpec
from nearmetal.host.slurmnodes import hostnames


class JobOutcomes(JobQueue):
    """The Slurm backend's part that turns an ended job into a ``TrialOutcome``."""

    def _log_tail(self, job: Job, task_id: str, spec: TrialSpec, limit: int = 2000) -> str:
        if job.array:
            array_id, _, index = task_id.partition("_")
            base = Path(spec.trial_dir).parent / f"slurm-{array_id}_{index}"
        else:
            base = Path(spec.trial_dir) / f"slurm-{job.job_id}"
        text = ""
        for suffix in (".err", ".out"):
            path = base.with_name(base.name + suffix)
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")[-limit:]
        return text[-limit:]

    def outcome(self, job: Job, task_id: str, state: str, reason: str) -> TrialOutcome:
        """The trial's outcome from what the job wrote and what Slurm says of the job."""
        spec = job.spec_of(task_id)
        details = self.job_details(task_id)
        state = (details.get("JobState") or state or "UNKNOWN").split()[0]
        reason = details.get("Reason") or reason
        out_path = Path(spec.trial_dir) / OUTCOME_NAME
        outcome: TrialOutcome | None = None
        if out_path.exists():
            with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
                outcome = TrialOutcome.read(out_path)
        submitted = _timestamp(details.get("SubmitTime")) or job.submitted_at
        started = _timestamp(details.get("StartTime"))
        ended = _timestamp(details.get("EndTime")) or time.time()
        slurm = {
            "job_id": task_id,
            "job_name": job.name,
            "state": state,
            "reason": reason,
            "exit_code": details.get("ExitCode"),
            "partition": details.get("Partition") or self.options.partition,
            "nodelist": details.get("NodeList"),
            "queue_wait_s": round(started - submitted, 3) if started and submitted else None,
        }
        slurm = {k: v for k, v in slurm.items() if v not in (None, "", "(null)")}
        if outcome is None:
            status = STATE_STATUS.get(state, "error")
            tail = self._log_tail(job, task_id, spec)
            error = f"Slurm job {task_id} ended {state}" + (
                f" ({reason})" if reason and reason != "None" else ""
            )
            if state == "COMPLETED":
                error = f"Slurm job {task_id} completed but wrote no {OUTCOME_NAME}"
            if tail.strip():
                error += ": " + tail.strip().splitlines()[-1][:300]
            nodes = hostnames(details.get("NodeList", ""))
            outcome = TrialOutcome(
                status=status,
                wall_s=max(0.0, ended - (started or ended)),
                error=error,
                stderr_tail=tail or None,
                placement={"backend": "slurm", "nodes": nodes, "host": nodes[0] if nodes else ""},
                started_at=started or submitted,
                ended_at=ended,
                output_dir=spec.trial_dir,
            )
        elif state in STATE_STATUS and state != "FAILED":
            # the job ended badly although the trial wrote an outcome (the OOM killer took the workload, the
            # node failed, scancel or the time limit stopped it): Slurm's word wins, the trial's are kept
            outcome.status = STATE_STATUS[state]
            outcome.error = f"Slurm job {task_id} ended {state}" + (
                f": {outcome.error}" if outcome.error else ""
            )
        outcome.placement = {**outcome.placement, "backend": "slurm"}
        outcome.placement["slurm"] = {**outcome.placement.get("slurm", {}), **slurm}
        outcome.output_dir = outcome.output_dir or spec.trial_dir
        return outcome

    def _never_starts_outcome(self, job: Job, task_id: str, reason: str) -> TrialOutcome:
        spec = job.spec_of(task_id)
        why = NEVER_STARTS.get(reason, reason)
        now = time.time()
        return TrialOutcome(
            status="error",
            wall_s=0.0,
            error=f"Slurm job {task_id} can never start ({reason}: {why}); it was cancelled. "
            "fix: lower the plan's resources or time, or pick another --partition",
            placement={
                "backend": "slurm",
                "slurm": {"job_id": task_id, "state": "PENDING", "reason": reason},
            },
            started_at=job.submitted_at,
            ended_at=now,
            output_dir=spec.trial_dir,
        )

    def _refused(self, spec: TrialSpec, message: str) -> TrialOutcome:
        now = time.time()
        return TrialOutcome(
            status="error",
            wall_s=0.0,
            error=message,
            placement={"backend": "slurm"},
            started_at=now,
            ended_at=now,
            output_dir=spec.trial_dir,
        )
