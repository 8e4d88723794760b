"""Host objects that dead runs left behind (a SIGKILLed runner cannot tear its layers down)."""

from __future__ import annotations

from nearmetal.doctor.base import Finding, check

LESSON = (
    "a run killed with SIGKILL, by the OOM killer or a lost node cannot remove its cgroups, namespaces, "
    "mounts and processes; left there they skew every later measurement on the host"
)


@check(
    "leftovers",
    inspects="/proc/*/environ (NEARMETAL_RUN_ID), /sys/fs/cgroup, nearmetal run lock files and every other "
    "finder in nearmetal.cleanup.FINDERS",
    explains=("cpu", "variance", "failure"),
)
def check_leftovers() -> list[Finding]:
    from nearmetal.cleanup import find_leftovers, partition_live, run_id_of
    from nearmetal.runlock import live_runs

    dead, kept = partition_live(find_leftovers())
    findings: list[Finding] = []
    by_run: dict[str, list] = {}
    for leftover in dead:
        by_run.setdefault(run_id_of(leftover) or "?", []).append(leftover)
    for run_id, objects in sorted(by_run.items()):
        kinds: dict[str, int] = {}
        for leftover in objects:
            kinds[leftover.kind] = kinds.get(leftover.kind, 0) + 1
        only_locks = set(kinds) == {"lock file"}
        summary = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(kinds.items()))
        names = [str(leftover) for leftover in objects]
        evidence = "; ".join(names[:6]) + (f"; … and {len(names) - 6} more" if len(names) > 6 else "")
        target = run_id if run_id != "?" else ""
        findings.append(
            Finding(
                "leftovers",
                "info" if only_locks else "warning",
                f"run {run_id} is dead but left {summary} on this host",
                evidence=evidence,
                fix=f"nearmetal cleanup {target}".strip()
                + (f" (or continue the run: nearmetal resume {run_id})" if target else ""),
                lesson=LESSON,
            )
        )
    live = live_runs()
    for run in live.values():
        objects = sum(1 for leftover, _ in kept if leftover.belongs_to(run.run_id))
        findings.append(
            Finding(
                "leftovers",
                "info",
                f"run {run.run_id} is running ({run.describe()}) with {objects} host object(s)",
                evidence="measurements taken on this host now share it with that run",
            )
        )
    if not findings:
        findings.append(Finding("leftovers", "ok", "no host objects left by dead nearmetal runs"))
    return findings
