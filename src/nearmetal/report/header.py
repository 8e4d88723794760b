"""The lines at the top of a report: the run, its plan and status, the host, the trials, what was skipped or
repaired, the host before the run, the shield and how repeats were chosen; and the failed trials' lines."""

from __future__ import annotations

from typing import Any

from nearmetal.api import Results


def run_header(results: Results) -> list[tuple[str, str]]:
    run = results.run
    env = results.environment
    counts = results.trial_counts()
    header = [
        ("run", run.id),
        ("plan", f"{run.name} ({run.plan_source})"),
        ("status", run.status),
        (
            "host",
            f"{run.host}: {env.get('cpu.model', '?')}, {env.get('cpu.logical', '?')} CPUs, "
            f"kernel {env.get('os.kernel', '?')}, cgroup {env.get('cgroup.version', '?')}",
        ),
        (
            "trials",
            f"{counts['measured_ok']} measured ok, {counts['warmup']} warm-up, {counts['failed']} failed"
            + (f", {counts['repaired']} repaired (run again)" if counts.get("repaired") else ""),
        ),
        *skipped_lines(results),
        *preflight_lines(results),
    ]
    info = run.info or {}
    if info.get("repaired"):
        header.append(("repaired blocks", repaired_line(info["repaired"], results)))
    if info.get("shield"):
        from nearmetal.run.shield import describe as describe_shield

        header.append(("shield", describe_shield(info["shield"])))
    repeats = info.get("repeats") or {}
    if repeats:
        target = results.target
        order = info.get("order", "?")
        if target is not None:
            header.append(
                (
                    "repeats",
                    f"adaptive: {repeats.get('min')}–{repeats.get('max')} blocks until every interval is within"
                    f" ±{target:.1%}"
                    + (f", budget {repeats['budget']:g} s" if repeats.get("budget") else "")
                    + f"; order {order}",
                )
            )
        else:
            header.append(("repeats", f"fixed: {repeats.get('min')} per cell; order {order}"))
    return header


def repaired_line(repaired: list[dict[str, Any]], results: Results) -> str:
    """'2 run again (block 3: lammps/limit-1.2 waited 45% of its runnable time, its partners 3%; …)'."""
    keys = {c.cell_id: c.key for c in results.cells}
    shown = "; ".join(
        f"block {d.get('block')}: {keys.get(str(d.get('cell_id')), d.get('cell_id'))} waited"
        f" {d.get('cpu_wait_pct', 0):.0f}% of its runnable time, its partners {d.get('partners_cpu_wait_pct', 0):.0f}%"
        f" (run again as block {d.get('rerun_as')})"
        for d in repaired
    )
    return f"{len(repaired)} run again, their first trials left out ({shown})"


def preflight_lines(results: Results) -> list[tuple[str, str]]:
    """The CPU study's look at the host before its first trial (``run.hygiene.contention_preflight``)."""
    pre = next((e["detail"] for e in results.events if e.get("kind") == "contention-preflight"), None)
    if not pre:
        return []
    top = ", ".join(f"{t['name']} {t['cpu_s']:.1f} s" for t in pre.get("top") or [])
    return [
        (
            "host before the run",
            f"{'BUSY: ' if pre.get('busy') else ''}outside processes used {pre.get('outside_cpu_pct', 0):.0f}% of"
            f" one CPU over {pre.get('seconds', 0):.1f} s"
            + (f" ({top})" if top else "")
            + f", steal {pre.get('steal_pct', 0):.1f}%, load average {pre.get('loadavg_1m', 0):.2f}",
        )
    ]


def failure_lines(results: Results, limit: int = 10) -> list[str]:
    failed, total = results.failed_trials(limit)
    out = []
    for t in failed:
        what = "warm-up" if t["is_warmup"] else f"#{t['repeat_index']}"
        out.append(
            f"{t['cell_key']} {what}: {t['status']}: {(t['error'] or '').splitlines()[0][:200] if t['error'] else ''}"
        )
    if total > limit:
        out.append(f"… and {total - limit} more")
    return out


def skipped_lines(results: Results) -> list[tuple[str, str]]:
    """Cells the run left out because an optional tool (an image builder …) is not installed here."""
    skipped = (results.run.info or {}).get("skipped") or {}
    return [("skipped", f"{cell}: {why}") for cell, why in skipped.items()]
