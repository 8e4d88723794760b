"""The one reader of ``/proc/self/mountinfo``: every part of nearmetal that asks what is mounted where (the
filesystem layers, cleanup, doctor, the disk counters, the image builder's storage) parses it here, so they
all see the same mount points, unescaped the same way.

Every unmount nearmetal does goes through here and ``safefs.unmount`` (by mount ID, never through a link):
:func:`unmount_below`, :func:`unmount_mount`, and :func:`unmount_fuse` (a user's FUSE mount, where only
``fusermount`` may unmount). No other module builds an ``umount``/``fusermount`` command line
(``tests/unit/test_house_hostcmd.py``)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Mount:
    mount_id: int
    mount_point: str
    root: str
    fstype: str
    source: str
    options: str
    propagation: tuple[str, ...] = field(default=())  # shared:N, master:N, propagate_from:N, unbindable
    device: str = ""  # major:minor of the filesystem's device

    @property
    def is_fuse(self) -> bool:
        return self.fstype == "fuse" or self.fstype.startswith("fuse.") or self.fstype == "fuseblk"

    @property
    def propagation_mode(self) -> str:
        tags = {t.split(":")[0] for t in self.propagation}
        if "shared" in tags and "master" in tags:
            return "shared+slave"
        if "shared" in tags:
            return "shared"
        if "master" in tags:
            return "slave"
        if "unbindable" in tags:
            return "unbindable"
        return "private"


def unescape(field_text: str) -> str:
    """A path as mountinfo writes it: space, tab, newline and backslash escaped as \\ooo octal."""
    out, i = [], 0
    while i < len(field_text):
        if field_text[i] == "\\" and i + 3 < len(field_text) and field_text[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts or len(parts) < 10:
            continue
        sep = parts.index("-")
        mounts.append(
            Mount(
                mount_id=int(parts[0]),
                device=parts[2],
                root=unescape(parts[3]),
                mount_point=unescape(parts[4]),
                options=parts[5],
                propagation=tuple(parts[6:sep]),
                fstype=parts[sep + 1],
                source=unescape(parts[sep + 2]),
            )
        )
    return mounts


def read_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Mount]:
    return parse_mountinfo(mountinfo.read_text())


def mounts_or_none(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    """Every mount, in mount order ([] when mountinfo cannot be read)."""
    with contextlib.suppress(OSError):
        return read_mounts(mountinfo)
    return []


def is_mounted(path: Path | str) -> bool:
    target = str(path)
    return any(m.mount_point == target for m in mounts_or_none())


def mounts_under(path: Path | str) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path).rstrip("/")
    points = [m.mount_point for m in mounts_or_none()]
    inside = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(inside, key=lambda p: p.count("/"), reverse=True)


def mount_of(path: Path | str) -> Mount | None:
    """The mount that holds ``path`` (the last mount of the deepest point in mount order: the one seen)."""
    target = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts_or_none():
        point = m.mount_point
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = m
    return best


def unmount_below(path: Path | str) -> list[str]:
    """Unmount every mount at or below ``path`` (deepest first, lazily when one stays busy), each by what was
    mounted: its mount ID as listed here, reached without following links (``safefs.unmount``), so a
    directory another user swaps for a link meanwhile cannot turn it against another mount. The mount points
    that are still there."""
    from nearmetal.host.safefs import unmount_path

    prefix = str(path).rstrip("/") or "/"
    listed = [
        m for m in mounts_or_none() if m.mount_point == prefix or m.mount_point.startswith(prefix + "/")
    ]
    # deepest first; of mounts stacked on one point, the last mounted (the one seen) first
    order = sorted(enumerate(listed), key=lambda im: (im[1].mount_point.count("/"), im[0]), reverse=True)
    for _, mount in order:
        unmount_path(mount.mount_point, mount.mount_id)
    left = {m.mount_id for m in mounts_or_none()}
    return [m.mount_point for m in listed if m.mount_id in left]


def unmount_mount(mount: Mount) -> None:
    """Unmount exactly ``mount`` (as listed by :func:`read_mounts`); ``NearmetalError`` naming why not."""
    from nearmetal.errors import NearmetalError
    from nearmetal.host.safefs import UnsafePathError, unmount

    try:
        unmount(mount.mount_point, mount.mount_id)
    except UnsafePathError:
        raise
    except OSError as exc:
        if exc.errno != 16:  # EBUSY: detach it
            raise NearmetalError(f"could not unmount {mount.mount_point}: {exc.strerror}") from None
        try:
            unmount(mount.mount_point, mount.mount_id, lazy=True)
        except OSError as again:
            raise NearmetalError(f"could not unmount {mount.mount_point}: {again.strerror}") from None


FUSERMOUNTS = ("fusermount3", "fusermount")
FUSERMOUNT_TIMEOUT_S = 20.0


def unmount_fuse(mount_point: str, *, lazy: bool = False, timeout: float = FUSERMOUNT_TIMEOUT_S) -> bool:
    """Unmount a FUSE mount (and what is below it). As root by what was mounted (:func:`unmount_below`);
    as a user, whom the kernel lets unmount only through the setuid ``fusermount``: ``fusermount3 -u``
    (not when ``lazy``), then ``-uz`` (lazily: a severed mount whose daemon is gone), each with
    ``fusermount3`` then ``fusermount``. True when it is gone (as a user: when a helper said so)."""
    if os.geteuid() == 0:
        return not unmount_below(mount_point)
    from nearmetal.errors import NearmetalError
    from nearmetal.host import hostcmd

    for flag in ("-uz",) if lazy else ("-u", "-uz"):
        for program in FUSERMOUNTS:
            with contextlib.suppress(NearmetalError):
                if hostcmd.run([program, flag, mount_point], timeout).returncode == 0:
                    return True
    return False
