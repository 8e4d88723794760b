"""Host objects that dead runs left behind (a SIGKILLed runner cannot tear its layers down)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nearmetal.doctor.base import Finding, check

if TYPE_CHECKING:
    from nearmetal.host.leftovers import Leftover

LESSON = (
    "a run killed with SIGKILL, by the OOM killer or a lost node cannot remove its cgroups, namespaces, "
    "mounts and processes; left there they skew every later measurement on the host"
)


@check(
    "leftovers",
    inspects="/proc/*/environ (NEARMETAL_RUN_ID), /sys/fs/cgroup, nearmetal run lock files and every other "
    "finder in nearmetal.host.cleanup.FINDERS",
    explains=("cpu", "variance", "failure"),
)
def check_leftovers() -> list[Finding]:
    from nearmetal.host.cleanup import UNKNOWN_OWNER, find_leftovers, partition_live, run_id_of
    from nearmetal.host.runlock import live_runs

    dead, kept = partition_live(find_leftovers())
    findings: list[Finding] = []
    by_run: dict[str, list[Leftover]] = {}
    for leftover in dead:
        # partition_live keeps objects whose run cannot be told: every dead one has a run id
        by_run.setdefault(run_id_of(leftover) or "?", []).append(leftover)
    for run_id, objects in sorted(by_run.items()):
        kinds: dict[str, int] = {}
        for leftover in objects:
            kinds[leftover.kind] = kinds.get(leftover.kind, 0) + 1
        only_locks = set(kinds) == {"lock file"}
        summary = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(kinds.items()))
        names = [str(leftover) for leftover in objects]
        evidence = "; ".join(names[:6]) + (f"; … and {len(names) - 6} more" if len(names) > 6 else "")
        findings.append(
            Finding(
                "leftovers",
                "info" if only_locks else "warning",
                f"run {run_id} is dead but left {summary} on this host",
                evidence=evidence,
                # always the run's own id: a bare `nearmetal cleanup` is never the advice
                fix=f"nearmetal cleanup {run_id} (or continue the run: nearmetal resume {run_id})",
                lesson=LESSON,
            )
        )
    unknown = [leftover for leftover, why in kept if why == UNKNOWN_OWNER]
    if unknown:
        names = [str(leftover) for leftover in unknown]
        findings.append(
            Finding(
                "leftovers",
                "warning",
                f"{len(unknown)} host object(s) named for nearmetal whose run cannot be told",
                evidence="; ".join(names[:6]) + (f"; … and {len(names) - 6} more" if len(names) > 6 else ""),
                fix="find the run that made it (nearmetal runs) and, once it is not running, "
                "nearmetal cleanup RUN; a bare `nearmetal cleanup` leaves it alone",
                lesson=LESSON,
            )
        )
    live = live_runs()
    for run in live.values():
        owned = sum(1 for leftover, _ in kept if leftover.belongs_to(run.run_id))
        findings.append(
            Finding(
                "leftovers",
                "info",
                f"run {run.run_id} is running ({run.describe()}) with {owned} host object(s)",
                evidence="measurements taken on this host now share it with that run",
            )
        )
    if not findings:
        findings.append(Finding("leftovers", "ok", "no host objects left by dead nearmetal runs"))
    return findings
