"""Probing a mount point without hanging on it: stat(2) and statfs(2) in a thread with a timeout, and the
severed-FUSE-mount finding built on it (doctor's ``fuse-severed`` check; the fault layer runs the same probe on
the mount whose daemon it killed, and its watchdog probes with ``stat_with_timeout``).

Standard library, ``nearmetal.findings`` and ``host.mountinfo`` only.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from nearmetal.findings import Finding
from nearmetal.host.mountinfo import read_mounts

LESSON_FUSE = (
    "seed 001 (autofs in containers): when the CSI node plugin pod died, the FUSE daemons behind the CVMFS "
    "mounts died with it; the mounts stayed in the table but every access failed with ENOTCONN, and autofs "
    "did not expire them. A sidecar that scans for severed FUSE mounts and unmounts them restored access"
)

STAT_TIMEOUT_S = 2.0


def stat_with_timeout(path: str, timeout_s: float = STAT_TIMEOUT_S) -> int | str | None:
    """None when stat succeeds, the errno when it fails, ``"timeout"`` when it does not return in time
    (a hung FUSE daemon or NFS server: the probing thread is left behind as a daemon thread)."""
    result: list[int | None] = []

    def probe() -> None:
        try:
            os.stat(path)
            # statfs always asks the filesystem (a FUSE daemon, an NFS server): stat alone can be answered
            # from attributes the kernel cached before the daemon died
            os.statvfs(path)
            result.append(None)
        except OSError as exc:
            result.append(exc.errno)

    thread = threading.Thread(target=probe, name=f"nearmetal-stat-{path}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        return "timeout"
    return result[0]


def describe_outcome(outcome: int | str | None) -> str:
    if outcome == "timeout":
        return f"stat/statfs did not return within {STAT_TIMEOUT_S:g}s"
    if isinstance(outcome, int):
        return f"stat/statfs failed with {errno.errorcode.get(outcome, outcome)} ({os.strerror(outcome)})"
    return "ok"


def fuse_severed_findings(
    mountinfo: Path = Path("/proc/self/mountinfo"), timeout_s: float = STAT_TIMEOUT_S
) -> list[Finding]:
    """Every FUSE mount in ``mountinfo`` probed: severed (ENOTCONN: its daemon is gone), hung, or all answering."""
    fuse = [m for m in read_mounts(mountinfo) if m.is_fuse]
    if not fuse:
        return [Finding("fuse-severed", "ok", "no FUSE mounts", evidence=str(mountinfo), lesson=LESSON_FUSE)]
    severed, hung = [], []
    for mount in fuse:
        outcome = stat_with_timeout(mount.mount_point, timeout_s)
        if outcome == errno.ENOTCONN:
            severed.append(mount)
        elif outcome == "timeout":
            hung.append(mount)
    findings = []
    for mount in severed:
        findings.append(
            Finding(
                "fuse-severed",
                "critical",
                f"severed FUSE mount {mount.mount_point}: its daemon is gone, every access fails with "
                "ENOTCONN",
                evidence=f"{mount.fstype} from {mount.source} at {mount.mount_point}: "
                f"{describe_outcome(errno.ENOTCONN)}",
                fix=f"fusermount -uz {mount.mount_point} (or umount -l {mount.mount_point}), then remount it "
                "(under autofs the next access remounts it); in a CSI driver run a sidecar that unmounts "
                "severed mounts",
                lesson=LESSON_FUSE,
            )
        )
    for mount in hung:
        findings.append(
            Finding(
                "fuse-severed",
                "warning",
                f"FUSE mount {mount.mount_point} does not answer: its daemon is stopped or stuck",
                evidence=f"{mount.fstype} from {mount.source}: {describe_outcome('timeout')}",
                fix=f"check the daemon serving {mount.mount_point}; if it is gone: umount -l {mount.mount_point}",
                lesson=LESSON_FUSE,
            )
        )
    if not findings:
        findings.append(
            Finding(
                "fuse-severed",
                "ok",
                f"{len(fuse)} FUSE mount(s), all answering",
                evidence=", ".join(m.mount_point for m in fuse[:10]),
                lesson=LESSON_FUSE,
            )
        )
    return findings
