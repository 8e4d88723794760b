"""What every filesystem layer shares: where its directories go, mounting and unmounting, FUSE daemons it
starts and stops, and the finders ``nearmetal cleanup`` uses for mounts and processes a killed run left.

The test-directory convention (docs/design.md): a filesystem layer mounts something and points
``ctx.endpoints["test_dir"]`` (the path the workload uses) and ``ctx.endpoints["test_dir_host"]`` (the same
directory seen from the host) at its mount point. A layer stacked on another filesystem layer uses the
previous ``test_dir_host`` as its source, so ``[overlayfs, bindfs]`` is bindfs over an overlay. A container
or VM layer changes ``test_dir`` to the path inside the guest and keeps ``test_dir_host``; a filesystem layer
stacked after one of those refuses (it would mount on the host at a guest path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field

from nearmetal.errors import NearmetalError, PrivilegeError
from nearmetal.host import hostcmd
from nearmetal.host.leftovers import HOST_NAME_RE, Leftover, finder, process_run_id
from nearmetal.host.mountinfo import Mount, is_mounted, mounts_or_none, unmount_below, unmount_mount
from nearmetal.host.userns import host_uid, in_user_namespace, uid_map
from nearmetal.layers.base import HOST_PREFIX, Layer, LayerConfig, TrialContext
from nearmetal.metrics import Metric

MOUNT_TIMEOUT_S = 20.0
UMOUNT_TIMEOUT_S = 30.0
# FUSE daemons and helpers a layer starts; the process finder only ever looks at these programs
LAYER_PROGRAMS = frozenset(
    {"fuse-overlayfs", "bindfs", "squashfuse", "squashfuse_ll", "virtiofsd", "qemu-system-x86_64"}
)


class FilesystemConfig(LayerConfig):
    base_dir: Path | None = Field(
        None,
        description="where the layer's directories (upper, work, backing store) go; default: the trial's "
        "directory, or the previous filesystem layer's mount",
    )


def mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount this process sees, in mount order."""
    return [(m.mount_point, m.fstype) for m in mounts_or_none()]


def run_tool(argv: list[str], what: str, timeout: float = MOUNT_TIMEOUT_S) -> None:
    """Run a mount helper; a failure becomes an error naming what it was for, the command and its message."""
    hostcmd.run(argv, timeout, check=True, what=what)


def unmount(path: Path) -> None:
    """Unmount ``path`` (and anything mounted below it); lazily when it stays busy. By what was mounted
    (``mountinfo.unmount_below``): a link swapped in on the way never redirects it."""
    unmount_below(path)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def remove_tree(path: Path) -> None:
    """Remove a layer's directory, never crossing into a mount that is still there."""
    if not path.exists():
        return
    target = str(path)
    if any(p == target or p.startswith(target + "/") for p, _ in mounts()):
        unmount(path)
    shutil.rmtree(path, ignore_errors=True)


FilesystemConfigT = TypeVar("FilesystemConfigT", bound=FilesystemConfig)


class FilesystemLayer(Layer[FilesystemConfigT]):
    """Base of the mount layers: a directory named with the run id holding everything the layer makes,
    a mount point ``mnt`` inside it that becomes the test directory, a FUSE daemon when there is one."""

    family = "filesystem"

    needs_root = True
    fstype: ClassVar[str] = ""

    def __init__(self, config: FilesystemConfigT) -> None:
        super().__init__(config)
        self.layer_dir: Path | None = None
        self.mountpoint: Path | None = None
        self.source: Path | None = None
        self.daemon: hostcmd.Process[bytes] | None = None
        self.daemon_log: Path | None = None

    # subclasses ------------------------------------------------------------------------------------------
    def mount(self, ctx: TrialContext) -> None:
        raise NotImplementedError

    def mount_options(self) -> dict[str, Any]:
        return {}

    def backing_dir(self, ctx: TrialContext) -> Path | None:
        """The host directory the data really lands in (an overlay's upper directory, a FUSE
        passthrough's source), for measuring its disk; None: the mounted filesystem itself (tmpfs)."""
        return None

    # shared ----------------------------------------------------------------------------------------------
    def setup(self, ctx: TrialContext) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError(
                f"the {self.kind} layer mounts a filesystem and needs root", fix="run as root"
            )
        seen, host = ctx.endpoints.get("test_dir"), ctx.endpoints.get("test_dir_host")
        if seen is not None and host is not None and str(seen) != str(host):
            raise NearmetalError(
                f"the {self.kind} layer comes after a layer that moved the workload into a guest ({seen})",
                fix="list filesystem layers before the container or vm layer in the variant",
            )
        self.source = Path(str(host)) if host else None
        base = self.config.base_dir or (self.source.parent if self.source else ctx.trial_dir.resolve())
        self.layer_dir = Path(base).resolve() / ctx.host_name(self.kind)
        self.layer_dir.mkdir(parents=True, exist_ok=False)
        self.mountpoint = self.layer_dir / "mnt"
        self.mountpoint.mkdir()
        self.mount(ctx)
        if not is_mounted(self.mountpoint):
            raise NearmetalError(f"{self.kind}: nothing is mounted at {self.mountpoint} after mounting")
        ctx.endpoints["test_dir"] = ctx.endpoints["test_dir_host"] = str(self.mountpoint)
        # where the workload's files really are (fio reads that disk's counters: workloads/fio/disk.py)
        ctx.endpoints["test_dir_backing"] = str(self.backing_dir(ctx) or self.mountpoint)
        ctx.placement[self.kind] = {
            "mountpoint": str(self.mountpoint),
            "fstype": next((t for p, t in mounts() if p == str(self.mountpoint)), self.fstype),
            **({"source": str(self.source)} if self.source else {}),
            **self.mount_options(),
        }
        if in_user_namespace():
            # the rootless form (layers/rootless.py): mounted in the user's own namespace, where the host's
            # mount table does not show it, by a daemon whose uid on the host is the user's
            info = ctx.placement[self.kind]
            info["user_namespace"] = True
            if self.daemon is not None:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    status = Path(f"/proc/{self.daemon.pid}/status").read_text()
                    uid = int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])
                    info["daemon_uid_host"] = host_uid(uid, uid_map())

    def start_daemon(self, argv: list[str], ctx: TrialContext) -> None:
        """Start a FUSE daemon in the foreground (``-f``) as our own child, and wait for its mount."""
        assert self.mountpoint is not None
        self.daemon_log = ctx.trial_dir / f"{self.kind}.log"
        with open(self.daemon_log, "wb") as log:
            self.daemon = hostcmd.start(
                argv, stdout=log, stderr=log, new_session=True, context=f"layer {self.kind}"
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while time.monotonic() < deadline:
            if is_mounted(self.mountpoint):
                return
            if self.daemon.poll() is not None:
                text = self.daemon_log.read_text(errors="replace").strip().splitlines()
                raise NearmetalError(
                    f"{argv[0]} exited ({self.daemon.returncode}) before mounting: {text[-1] if text else ''}"
                )
            time.sleep(0.02)
        raise NearmetalError(f"{argv[0]} did not mount {self.mountpoint} within {MOUNT_TIMEOUT_S:g}s")

    def teardown(self, ctx: TrialContext) -> None:
        if self.mountpoint is not None:
            unmount(self.mountpoint)
        if self.daemon is not None:
            hostcmd.stop(self.daemon)
            self.daemon = None
        if self.layer_dir is not None:
            remove_tree(self.layer_dir)
            self.layer_dir = None

    def collect(self, ctx: TrialContext) -> list[Metric]:
        return []


# --- leftovers ------------------------------------------------------------------------------------------


def _named_for(path: str, prefix: str) -> bool:
    return any(part.startswith(prefix) for part in path.split("/"))


@finder
def find_mounts(run_id: str | None = None) -> list[Leftover]:
    """Mounts whose mount point lies in a directory named for nearmetal (for one run, or any)."""

    prefix = f"{HOST_PREFIX}-{run_id}-" if run_id else f"{HOST_PREFIX}-"
    found = []
    # deepest first, so nested mounts go before the ones they sit on; of mounts stacked on one point, the
    # last mounted (the one the path leads to) first
    listed = list(enumerate(mounts_or_none()))
    for _, mount in sorted(listed, key=lambda im: (-im[1].mount_point.count("/"), -im[0])):
        point, fstype = mount.mount_point, mount.fstype
        # a named network namespace's own nsfs mount belongs to the netns finder, which first ends the
        # processes still inside (found through that mount: unmounted first, they were orphaned)
        if fstype == "nsfs" and point.startswith("/run/netns/"):
            continue
        if _named_for(point, prefix):

            def remove(mount: Mount = mount) -> None:
                # this mount, by its ID, reached without following links (issue 26: a parent directory
                # swapped for a link made `umount PATH` unmount whatever the link pointed at)
                unmount_mount(mount)
                if mount.mount_id in {m.mount_id for m in mounts_or_none()}:
                    raise OSError(f"{mount.mount_point} is still mounted")

            # after processes and containers (they keep mounts busy), before cgroups
            found.append(Leftover(f"mount ({fstype})", point, remove, priority=30))
    return found


@finder
def find_layer_processes(run_id: str | None = None) -> list[Leftover]:
    """FUSE daemons, virtiofsd and QEMU processes whose arguments name a nearmetal host object. Each carries
    its run's id, read from the ``nearmetal-<run>-<trial>-…`` path in its arguments or, failing that, from
    ``NEARMETAL_RUN_ID`` in its environment; one whose run cannot be told is reported, never removed by a
    cleanup that names no run (``cleanup.partition_live``)."""

    prefix = f"{HOST_PREFIX}-{run_id}-" if run_id else f"{HOST_PREFIX}-"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0]:
            continue
        program = os.path.basename(argv[0].decode(errors="replace"))
        if program not in LAYER_PROGRAMS:
            continue
        args = [arg.decode(errors="replace") for arg in argv[1:]]
        named = next((arg for arg in args if prefix in arg), None)
        if named is None:
            continue
        pid = int(entry.name)
        match = HOST_NAME_RE.search(named)
        owner = match.group("run") if match else process_run_id(pid)
        if run_id is not None and owner is not None and owner != run_id:
            continue

        def remove(pid: int = pid) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, 9)

        found.append(
            Leftover(
                "process", f"{pid} {program} ({named[-120:]})", remove, run_id=owner or run_id, priority=10
            )
        )
    return found
