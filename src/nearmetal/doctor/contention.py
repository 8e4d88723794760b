"""What else keeps this host's CPUs busy right now, and what to stop before a CPU study (issue 17 item 3).

Uses the sampler every local trial runs (``telemetry.contention``), so doctor and the per-trial evidence agree
on what "outside work" is, and the same threshold as the contention guard (``analysis.contention``)."""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path

from nearmetal.analysis.contention import DEFAULT_MAX_OUTSIDE_CPU_PCT, TrialNoise, trial_contended
from nearmetal.doctor.base import Finding, check
from nearmetal.telemetry.contention import HostSampler, busiest

LESSON = (
    "issue 17: on a host kept busy by other work (load 4–5 on 2 CPUs) the 1-CPU partition came out 3.3× "
    "faster than the 2-CPU one and two ranks on one CPU beat one per CPU: physically backwards results, "
    "printed as findings. Interleaving spreads steady noise; it cannot undo a host that is oversubscribed"
)
SAMPLE_S = 2.0


def _describe(pid: int) -> tuple[str, str]:
    """(command line, how to stop it) of a live process; a systemd unit is stopped as a unit."""
    cmdline = ""
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        cmdline = " ".join(shlex.quote(a.decode(errors="replace")) for a in raw if a)[:120]
    unit = ""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            last = line.rsplit("/", 1)[-1]
            if last.endswith(".service") and "user@" not in last:
                unit = last
                break
    return cmdline, f"systemctl stop {unit}" if unit else f"kill {pid}"


@check(
    "host-contention",
    inspects=f"CPU time of every process outside this one over {SAMPLE_S:g} s (/proc/<pid>/stat, counting"
    " reaped children), steal from /proc/stat, /proc/loadavg, /proc/<pid>/cmdline and cgroup of the busiest",
    explains=("cpu", "variance"),
)
def check_host_contention(sample_s: float = SAMPLE_S) -> list[Finding]:
    sampler = HostSampler(interval_s=0.25)
    with sampler:
        import time

        time.sleep(sample_s)
    ev = sampler.evidence()
    busy = trial_contended(
        TrialNoise(ev.outside_cpu_pct, ev.steal_pct, ev.loadavg, ev.cpus), DEFAULT_MAX_OUTSIDE_CPU_PCT
    )
    top = busiest(sampler, 5)
    lines, fixes = [], []
    for pid, name, cpu_s in top:
        cmdline, stop = _describe(pid)
        lines.append(
            f"{name} (pid {pid}) {100 * cpu_s / ev.seconds:.0f}% of a CPU"
            + (f": {cmdline}" if cmdline else "")
        )
        if cmdline and 100 * cpu_s / ev.seconds >= 5:
            fixes.append(stop)
    evidence = ev.describe() + ("; busiest: " + "; ".join(lines) if lines else "")
    if not busy:
        return [
            Finding(
                "host-contention",
                "ok",
                f"outside work takes {ev.outside_cpu_pct:.0f}% of one CPU: below the contention guard's"
                f" {DEFAULT_MAX_OUTSIDE_CPU_PCT:g}%",
                evidence=evidence,
                lesson=LESSON,
            )
        ]
    stop = "; ".join(dict.fromkeys(fixes)) or "stop the processes listed in the evidence"
    return [
        Finding(
            "host-contention",
            "critical" if ev.outside_cpu_pct >= 100 else "warning",
            f"outside work takes {ev.outside_cpu_pct:.0f}% of one CPU (steal {ev.steal_pct:.1f}%): CPU studies"
            " run now will read 'contended — not interpretable'",
            evidence=evidence,
            fix=f"stop what is busy before measuring ({stop}), or run on an idle host / an exclusive cpuset;"
            f" check again with `nearmetal doctor --check host-contention`",
            lesson=LESSON,
        )
    ]
