"""What this machine has (CPUs this process may use, memory available, free disk), for the checks that
refuse a plan too large for it before anything runs (``nearmetal run --allow-large`` overrides them)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nearmetal.errors import NearmetalError

# more busy processes than this many per CPU is not a measurement any more (and may exhaust pids/memory)
MAX_PROCESSES_PER_CPU = 16
ALLOW_LARGE_FIX = "pass --allow-large to run it anyway"


class TooLargeError(NearmetalError):
    """A plan value asks for more than this machine has."""


def usable_cpus() -> int:
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def mem_available_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def free_disk_bytes(path: Path) -> int | None:
    while not path.exists() and path != path.parent:
        path = path.parent
    with contextlib.suppress(OSError):
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
    return None


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def check_processes(what: str, processes: int, fix: str) -> None:
    cpus = usable_cpus()
    if processes > MAX_PROCESSES_PER_CPU * cpus:
        raise TooLargeError(
            f"{what} start {processes} busy processes on {cpus} CPU(s) (more than "
            f"{MAX_PROCESSES_PER_CPU} per CPU)",
            fix=f"{fix}, or {ALLOW_LARGE_FIX}",
        )


def check_memory(what: str, needed_bytes: float, fix: str) -> None:
    available = mem_available_bytes()
    if available is not None and needed_bytes > 0.9 * available:
        raise TooLargeError(
            f"{what} need about {_mib(needed_bytes)} of memory and {_mib(available)} is available",
            fix=f"{fix}, or {ALLOW_LARGE_FIX}",
        )
