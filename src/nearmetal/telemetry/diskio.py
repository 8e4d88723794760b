"""Which block device holds a directory, and how many bytes it has read and written: the kernel's own
counters (``/sys/dev/block/MAJ:MIN/stat``, in 512-byte sectors whatever the device's block size). The fio
workload reads them before and after a trial to say what share of the bytes fio moved really reached the
disk, so a row served from the page cache says "cached" instead of passing for direct I/O.

The counters are the whole device's: on a shared host other processes' I/O during the trial is counted too
(a few MiB per second on a busy machine, more just after caches were dropped), which is why the shares are
read as "direct" or "cached" with wide margins (see ``io_mode``), never as precise figures.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nearmetal.host.mountinfo import mount_of

SECTOR_BYTES = 512
# filesystems whose data lives in memory: no disk under them
MEMORY_FS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})
# share of the workload's bytes the disk moved: at or above DIRECT_MIN_PCT the I/O reached the disk, below
# CACHED_MAX_PCT it came from (or went to) the page cache; between, both
DIRECT_MIN_PCT = 70.0
CACHED_MAX_PCT = 30.0


@dataclass(frozen=True)
class Backing:
    """What holds a directory: ``kind`` "disk" (``device`` names it), "memory", or "unknown"."""

    kind: str
    fstype: str
    device: str = ""
    majmin: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mount_of(path: Path) -> tuple[str, str, str] | None:
    """(major:minor, filesystem type, mount source) of the mount that holds ``path``."""
    mount = mount_of(path)
    return (mount.device, mount.fstype, mount.source) if mount else None


def _device_name(majmin: str) -> str | None:
    sysfs = Path("/sys/dev/block") / majmin
    if not (sysfs / "stat").exists():
        return None
    with contextlib.suppress(OSError):
        return sysfs.resolve().name
    return None


def backing_of(path: Path) -> Backing:
    """The block device (or memory) that holds ``path``, or the nearest existing directory above it."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    found = _mount_of(path)
    if found is None:
        return Backing("unknown", "")
    majmin, fstype, source = found
    if fstype in MEMORY_FS:
        return Backing("memory", fstype)
    name = _device_name(majmin)
    if name is None and source.startswith("/dev/"):
        # btrfs and others report an anonymous device: the mount's source names the real one
        with contextlib.suppress(OSError):
            st = os.stat(source)
            majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            name = _device_name(majmin)
    if name is None:
        return Backing("unknown", fstype)
    return Backing("disk", fstype, name, majmin)


def counters(majmin: str) -> tuple[int, int] | None:
    """(bytes read, bytes written) since boot by the block device ``major:minor``."""
    try:
        fields = (Path("/sys/dev/block") / majmin / "stat").read_text().split()
        return int(fields[2]) * SECTOR_BYTES, int(fields[6]) * SECTOR_BYTES
    except (OSError, IndexError, ValueError):
        return None


def boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def io_mode(share_pct: float | None) -> str:
    """ "direct" (the disk moved about as many bytes as the workload), "cached", or "mixed"."""
    if share_pct is None:
        return "?"
    if share_pct >= DIRECT_MIN_PCT:
        return "direct"
    if share_pct < CACHED_MAX_PCT:
        return "cached"
    return "mixed"
