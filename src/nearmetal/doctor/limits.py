"""Resource limits that break programs: systemd's LimitMEMLOCK and MPI (seed 000); containerd's infinite
RLIMIT_NOFILE and CentOS-7-era programs in GitLab CI runners (seed 001)."""

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


@check(
    "memlock",
    inspects="getrlimit(RLIMIT_MEMLOCK) of this process",
    explains=("failure", "network"),
)
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


LESSON_NOFILE = (
    "seed 001 (GitLab runners on Kubernetes): containerd set the pods' open-files limit (ulimit -n) to "
    "infinity; jobs on CentOS 7 images that ran in minutes hung for an hour and were killed. The runners' "
    "pre_build_script injected a lower ulimit"
)
# above this a program that closes or polls every possible descriptor (rpm/yum, python2 subprocess with
# close_fds, old daemons) spends seconds to hours in close() loops; systemd's default hard limit is 2^19
NOFILE_HUGE = 1 << 19
NOFILE_SOFT_ADVISED = 1024
NOFILE_HARD_ADVISED = 1 << 19


def _count(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else f"{value:,}"


@check(
    "nofile",
    inspects="getrlimit(RLIMIT_NOFILE) of this process; /proc/sys/fs/nr_open",
    explains=("startup", "cpu", "failure"),
)
def check_nofile(limits: tuple[int, int] | None = None) -> list[Finding]:
    soft, hard = limits if limits is not None else resource.getrlimit(resource.RLIMIT_NOFILE)
    evidence = f"RLIMIT_NOFILE soft {_count(soft)}, hard {_count(hard)}"
    try:
        with open("/proc/sys/fs/nr_open") as f:
            evidence += f"; fs.nr_open {int(f.read()):,}"
    except (OSError, ValueError):
        pass
    if soft == resource.RLIM_INFINITY or soft > NOFILE_HUGE:
        return [
            Finding(
                "nofile",
                "warning",
                f"open-files limit is huge ({_count(soft)}): programs that close or scan every possible "
                "descriptor (CentOS 7 rpm/yum, python2 subprocess, old daemons) crawl or hang",
                evidence=evidence + f"; such a program makes {_count(soft)} close() calls per fork+exec",
                fix=f"use soft {NOFILE_SOFT_ADVISED}, hard {NOFILE_HARD_ADVISED} (systemd's default; programs "
                f"that need more raise their soft limit themselves): shell `ulimit -n {NOFILE_SOFT_ADVISED}`"
                " (GitLab runner: in pre_build_script); containerd: LimitNOFILE in its systemd unit or the "
                f"runtime's rlimits; docker: --ulimit nofile={NOFILE_SOFT_ADVISED}:{NOFILE_HARD_ADVISED}",
                lesson=LESSON_NOFILE,
            )
        ]
    if soft < 1024:
        return [
            Finding(
                "nofile",
                "warning",
                f"open-files limit is low ({soft}): servers, MPI and parallel builds fail with EMFILE",
                evidence=evidence,
                fix=f"ulimit -n {NOFILE_SOFT_ADVISED} (or up to the hard limit {_count(hard)})",
                lesson=LESSON_NOFILE,
            )
        ]
    return [
        Finding(
            "nofile",
            "ok",
            "open-files limit is in the sane range",
            evidence=evidence,
            lesson=LESSON_NOFILE,
        )
    ]
