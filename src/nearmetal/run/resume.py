"""What a resumed run knows before its first trial, and what it checks: the stored plan loads, a plan given
again is the same one."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.errors import NearmetalError, PlanError
from nearmetal.host.cleanup import cleanup
from nearmetal.plan import LoadedPlan, load_plan, parse_plan_text
from nearmetal.redact import REDACTED, redact_data
from nearmetal.run.records import TrialRecord
from nearmetal.run.schedule import schedule

# what a remote backend records when it submits a trial's job (an event of the run)
JOB_EVENT = "backend-job"

# statuses a resumed run keeps: the trial ran and its outcome is a measurement (a crash and a timeout are
# outcomes too). "error" means nearmetal could not run it (a layer's set-up failed): it is run again.
KEPT_ON_RESUME = frozenset({"ok", "failed", "timeout", "invalid", "repaired"})


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


def load_resume_state(store: Any, run_id: str, run_dir: Path) -> tuple[ResumeState, list[Any], int]:
    """(what the resumed run knows, its stored trials, the last stored ``seq``)."""
    run = store.get_run(run_id)
    stored = store.trials(run_id)
    done = {t.trial_key: t.status for t in stored if t.status in KEPT_ON_RESUME}
    jobs: dict[str, dict[str, Any]] = {}
    for event in store.events(run_id):
        detail = event["detail"] or {}
        if event["kind"] == JOB_EVENT and detail.get("trial_key") not in done:
            jobs[detail["trial_key"]] = detail
    resumes = len((run.info or {}).get("resumes", [])) + 1
    state = ResumeState(run_id, run_dir, done, dict(run.info or {}), resumes, jobs)
    return state, stored, max((t.seq for t in stored), default=0)


def plans_of_resume(run: Any, plan: str | Path | LoadedPlan | None) -> tuple[LoadedPlan, LoadedPlan | None]:
    """(the stored plan, the plan given again or None); a given plan must be the stored one, and a plan
    whose secrets were not stored must be given."""
    if plan is None and REDACTED in run.plan_text:
        raise NearmetalError(
            f"run {run.id}'s plan held secrets, which nearmetal does not store, so the stored plan "
            "cannot run again by itself",
            fix=f"give the plan it was started with: nearmetal run PLAN --resume {run.id}",
        )
    stored = load_stored_plan(run)
    given = None if plan is None else plan if isinstance(plan, LoadedPlan) else load_plan(plan)
    if given is not None and (differences := plan_differences(stored, given)):
        shown = differences[:8] + ([f"… and {len(differences) - 8} more"] if len(differences) > 8 else [])
        raise PlanMismatchError(
            f"{given.source} is not the plan run {run.id} was started with; resuming would mix two "
            "experiments:\n  " + "\n  ".join(shown),
            fix=f"resume with the stored plan (nearmetal resume {run.id}), or start a new run "
            f"(nearmetal run {given.source})",
        )
    return stored, given


def stored_records(
    store: Any, loaded: LoadedPlan, run_id: str, seed: int, done: dict[str, str]
) -> list[TrialRecord]:
    """The records of the trials an earlier attempt finished (``done``), as this attempt's runner keeps them."""
    repeats = loaded.plan.repeats
    blocks = max(repeats.max or 0, repeats.min)
    # adaptive blocks beyond the fixed part are found by key too: keys do not depend on order
    by_key = {
        t.key: t for t in schedule(loaded.cells, loaded.plan.order, loaded.plan.warmup, 0, blocks, seed)
    }
    metrics = store.trial_metrics(run_id)
    return [
        TrialRecord(
            by_key[row.trial_key],
            row.status,
            row.ended_at - row.started_at,
            metrics.get(row.trial_key, []),
            row.error,
            row.id,
            resumed=True,
        )
        for row in store.trials(run_id)
        if row.trial_key in done and row.trial_key in by_key
    ]


def reopen_run(store: Any, run_id: str, stored: list[Any], reattached: set[str]) -> None:
    """Tidy what the dead process left and mark the run running again. The dead process could not tear down
    its last trial: its processes may still be running (and would disturb the measurements), its cgroups and
    namespaces are still there; objects of jobs a backend re-attached to are spared."""
    previous = store.get_run(run_id).status
    tidied = cleanup(run_id, include_live=True, keep=lambda x: any(key in x.name for key in reattached))
    detail = {
        "at": time.time(),
        "previous_status": previous,
        "kept_trials": sum(1 for t in stored if t.status in KEPT_ON_RESUME),
        "rerun_errors": sum(1 for t in stored if t.status not in KEPT_ON_RESUME),
        "removed_leftovers": [str(x) for x in tidied.removed],
        "failed_leftovers": [f"{x}: {err}" for x, err in tidied.failed],
        "reattached": sorted(reattached),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    store.reopen_run(run_id, detail)
    store.add_event(run_id, "resumed", detail)
