"""The fault layer's ``kill-fuse`` action, its parts: the FUSE daemon behind a mount found and its command line
kept, doctor's severed-mount probe run on that mount once the daemon is gone, and the remount (lazy unmount,
then the daemon's own command line again) that heals it (seed 001's severed CVMFS mounts)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from nearmetal.errors import NearmetalError
from nearmetal.findings import Finding
from nearmetal.host import hostcmd, hostnet
from nearmetal.host.mountinfo import read_mounts
from nearmetal.host.mountprobe import fuse_severed_findings
from nearmetal.layers.targets import FaultTarget, is_zombie

REMOUNT_TIMEOUT_S = 20.0
# how long a fault's own command (kill, ip, umount …) may take
FAULT_COMMAND_TIMEOUT_S = 20.0


class MountTarget(FaultTarget):
    """A FUSE mount and the daemon behind it (any FUSE filesystem whose daemon names the mount point on its
    command line: bindfs, fuse-overlayfs, squashfuse, sshfs …)."""

    def __init__(self, mountpoint: str) -> None:
        self.name = f"mount:{mountpoint}"
        self.mountpoint = mountpoint
        self.description = f"the FUSE daemon of {mountpoint}"

    def pids(self) -> list[int]:
        return fuse_daemons(self.mountpoint)


def fuse_daemons(mountpoint: str) -> list[int]:
    """Processes holding /dev/fuse open whose command line names the mount point."""
    out = []
    for pid, _cmdline in hostnet.processes_with(mountpoint):
        if is_zombie(pid):
            continue
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fd) == "/dev/fuse" for fd in fds.iterdir()):
                out.append(pid)
    return sorted(out)


def fuse_mount(mountpoint: str) -> Any | None:
    """The mountinfo entry of a FUSE mount at ``mountpoint`` (the last one mounted there), or None."""
    found = [m for m in read_mounts() if m.mount_point == mountpoint]
    return found[-1] if found and found[-1].is_fuse else None


def daemon_state(pid: int) -> dict[str, Any]:
    """What it takes to start a FUSE daemon again: its argv, working directory and environment (bytes)."""
    return {
        "argv": Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0"),
        "cwd": os.readlink(f"/proc/{pid}/cwd"),
        "env": dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        ),
    }


def severed_findings(mountpoint: str, trial_dir: Path) -> tuple[float, list[Finding]]:
    """doctor's severed-mount check on this mount only, once its daemon is gone: (when it ran, findings). The
    mount's mountinfo lines are kept as ``fault-mountinfo.txt`` in the trial's directory."""
    deadline = time.time() + 5.0
    while fuse_daemons(mountpoint) and time.time() < deadline:
        time.sleep(0.01)
    lines = [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {mountpoint} " in line
    ]
    copy = trial_dir / "fault-mountinfo.txt"
    copy.write_text("\n".join(lines) + "\n")
    checked = time.time()
    return checked, fuse_severed_findings(copy, timeout_s=2.0)


def start_daemon(saved: dict[str, Any], log_path: Path) -> hostcmd.Process[bytes]:
    """Start a killed FUSE daemon again with its own command line, directory and environment."""
    log = open(log_path, "ab")  # noqa: SIM115
    try:
        return hostcmd.start(
            [a.decode() for a in saved["argv"]],
            cwd=saved["cwd"],
            env={k.decode(errors="replace"): v.decode(errors="replace") for k, v in saved["env"].items()},
            stdout=log,
            stderr=log,
            new_session=True,
            context="remounting a severed FUSE mount",
        )
    finally:
        log.close()


def wait_mounted(mountpoint: str, daemon: hostcmd.Process[bytes]) -> None:
    """Wait until ``mountpoint`` is a FUSE mount again with a daemon behind it."""
    deadline = time.monotonic() + REMOUNT_TIMEOUT_S
    while time.monotonic() < deadline:
        if fuse_mount(mountpoint) is not None and fuse_daemons(mountpoint):
            return
        if daemon.poll() is not None:
            raise NearmetalError(f"the remounted FUSE daemon exited ({daemon.returncode})")
        time.sleep(0.01)
    raise NearmetalError(f"{mountpoint} was not mounted again within {REMOUNT_TIMEOUT_S:g}s")
