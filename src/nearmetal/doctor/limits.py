"""Resource limits that break HPC programs (seed 000: systemd's LimitMEMLOCK and MPI)."""

from __future__ import annotations

import resource

from nearmetal.doctor.base import Finding, check

LESSON_MEMLOCK = (
    "seed 000: Flux started as a systemd service inherited a locked-memory limit and MPI failed "
    "with memory errors for a month; LimitMEMLOCK=infinity in the unit file fixed it"
)
# RDMA/EFA register buffers with the kernel; a few GiB is the least anything MPI-heavy needs
MEMLOCK_ENOUGH = 1 << 32


def _fmt(value: int) -> str:
    if value == resource.RLIM_INFINITY:
        return "unlimited"
    if value >= 1 << 20:
        return f"{value / (1 << 20):.0f} MiB"
    return f"{value / 1024:.0f} KiB"


@check("memlock")
def check_memlock(limits: tuple[int, int] | None = None) -> list[Finding]:
    soft, hard = limits if limits is not None else resource.getrlimit(resource.RLIMIT_MEMLOCK)
    evidence = f"RLIMIT_MEMLOCK soft {_fmt(soft)}, hard {_fmt(hard)}"
    if soft == resource.RLIM_INFINITY or soft >= MEMLOCK_ENOUGH:
        return [
            Finding(
                "memlock",
                "ok",
                "locked-memory limit is high enough for MPI/RDMA",
                evidence=evidence,
                lesson=LESSON_MEMLOCK,
            )
        ]
    return [
        Finding(
            "memlock",
            "warning",
            f"locked memory is limited to {_fmt(soft)}: MPI over RDMA/EFA/InfiniBand can fail to "
            "register buffers",
            evidence=evidence,
            fix="systemd service: LimitMEMLOCK=infinity; shell: ulimit -l unlimited (as root, or raise "
            "the hard limit in /etc/security/limits.conf); containers: --ulimit memlock=-1",
            lesson=LESSON_MEMLOCK,
        )
    ]
