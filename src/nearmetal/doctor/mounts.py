"""Mounts that break or stall workloads: severed FUSE mounts, autofs roots that do not propagate, stale
mounts (seed 001: autofs in CSI drivers for CVMFS and EOS)."""

from __future__ import annotations

import errno
from pathlib import Path

from nearmetal.doctor.base import Finding, check
from nearmetal.host.mountinfo import read_mounts
from nearmetal.host.mountprobe import (
    STAT_TIMEOUT_S,
    describe_outcome,
    fuse_severed_findings,
    stat_with_timeout,
)

LESSON_AUTOFS = (
    "seed 001 (autofs in containers): the autofs root must be a shared mount (mount --make-shared, "
    "mountPropagation: Bidirectional) and consumers must bind it with mount --rbind --make-slave, or inner "
    "mounts show up as empty directories; unmount consumers with umount --recursive"
)
LESSON_STALE = (
    "seed 001 (autofs in containers): mounts whose server or daemon went away stay in the mount table and "
    "make every process that touches them fail or hang until they are unmounted"
)

# filesystems with no backing store to go stale; autofs is left out of stat probes on purpose (touching an
# autofs path can trigger a mount and block while its daemon answers)
PSEUDO_FILESYSTEMS = {
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "cgroup",
    "cgroup2",
    "mqueue",
    "hugetlbfs",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "nsfs",
    "rpc_pipefs",
    "efivarfs",
    "ramfs",
}


@check(
    "fuse-severed",
    inspects="/proc/self/mountinfo (fuse, fuse.* mounts); stat(2) and statfs(2) of each FUSE mount point",
    explains=("io", "failure"),
)
def check_fuse_severed(
    mountinfo: Path = Path("/proc/self/mountinfo"), timeout_s: float = STAT_TIMEOUT_S
) -> list[Finding]:
    return fuse_severed_findings(mountinfo, timeout_s)


@check(
    "autofs-propagation",
    inspects="/proc/self/mountinfo: optional fields (shared:N, master:N) of autofs mounts",
    explains=("io", "failure"),
)
def check_autofs_propagation(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Finding]:
    autofs = [m for m in read_mounts(mountinfo) if m.fstype == "autofs"]
    if not autofs:
        return [
            Finding(
                "autofs-propagation", "ok", "no autofs mounts", evidence=str(mountinfo), lesson=LESSON_AUTOFS
            )
        ]
    private = [m for m in autofs if m.propagation_mode in ("private", "unbindable")]
    if not private:
        return [
            Finding(
                "autofs-propagation",
                "ok",
                f"{len(autofs)} autofs mount(s), all shared or slave",
                evidence=", ".join(f"{m.mount_point} ({m.propagation_mode})" for m in autofs[:10]),
                lesson=LESSON_AUTOFS,
            )
        ]
    return [
        Finding(
            "autofs-propagation",
            "warning",
            f"autofs mount {m.mount_point} is {m.propagation_mode}: mounts autofs makes inside it do not reach "
            "other mount namespaces (pods see empty directories), and consumers' unmounts can reach the root",
            evidence=f"autofs {m.source} at {m.mount_point}: no shared:/master: tag in mountinfo "
            f"(optional fields: {' '.join(m.propagation) or 'none'})",
            fix=f"on the autofs root: mount --make-shared {m.mount_point} (Pod: mountPropagation: "
            f"Bidirectional); consumers: mount --rbind --make-slave {m.mount_point} <target> (Pod: "
            "mountPropagation: HostToContainer); remove consumers with umount --recursive <target>",
            lesson=LESSON_AUTOFS,
        )
        for m in private
    ]


@check(
    "stale-mounts",
    inspects="/proc/self/mountinfo; stat(2) and statfs(2) of every non-pseudo, non-FUSE mount point (network and disk "
    "filesystems) and mount roots marked //deleted",
    explains=("io", "failure"),
)
def check_stale_mounts(
    mountinfo: Path = Path("/proc/self/mountinfo"), timeout_s: float = STAT_TIMEOUT_S
) -> list[Finding]:
    mounts = read_mounts(mountinfo)
    findings = []
    probed = 0
    for mount in mounts:
        if mount.fstype in PSEUDO_FILESYSTEMS or mount.is_fuse:
            continue
        if mount.root.endswith("//deleted"):
            findings.append(
                Finding(
                    "stale-mounts",
                    "warning",
                    f"mount {mount.mount_point} shows a file or directory that was deleted on its source",
                    evidence=f"{mount.fstype} root {mount.root}",
                    fix=f"umount {mount.mount_point} and bind the current path again",
                    lesson=LESSON_STALE,
                )
            )
            continue
        probed += 1
        outcome = stat_with_timeout(mount.mount_point, timeout_s)
        if outcome is None:
            continue
        findings.append(
            Finding(
                "stale-mounts",
                "critical" if outcome in (errno.ESTALE, errno.ENOTCONN, errno.EIO, "timeout") else "warning",
                f"stale mount {mount.mount_point} ({mount.fstype}): {describe_outcome(outcome)}",
                evidence=f"{mount.fstype} from {mount.source} at {mount.mount_point}",
                fix=f"umount -f -l {mount.mount_point} and mount it again (NFS: check the server; the -l "
                "detaches it now even while processes still hold it)",
                lesson=LESSON_STALE,
            )
        )
    if not findings:
        findings.append(
            Finding(
                "stale-mounts",
                "ok",
                f"{probed} mount(s) probed, all answer",
                evidence=str(mountinfo),
                lesson=LESSON_STALE,
            )
        )
    return findings
