"""A freezer cgroup of a fault's own: processes moved in, frozen (``docker pause``), thawed and moved back to
the cgroups they came from. The v1 ``freezer`` hierarchy, or a v2 group with ``cgroup.freeze``."""

from __future__ import annotations

import contextlib
from pathlib import Path

from nearmetal.errors import PrivilegeError
from nearmetal.host import cgroups


class Freezer:
    """A freezer cgroup of the fault's own (v1 ``freezer`` hierarchy, or a v2 group with ``cgroup.freeze``):
    processes are moved in, frozen, thawed and moved back where they were."""

    def __init__(self, name: str) -> None:
        root = cgroups.DEFAULT_ROOT
        if (root / "freezer" / "cgroup.procs").exists():
            self.hierarchy = root / "freezer"
        elif (root / "cgroup.controllers").exists():
            self.hierarchy = root
        else:
            raise PrivilegeError(
                "no cgroup freezer here (neither a v1 freezer hierarchy nor cgroup v2)",
                fix="mount the freezer controller: mount -t cgroup -o freezer freezer /sys/fs/cgroup/freezer",
            )
        self.path = self.hierarchy / name
        self.group = cgroups.Cgroup(2 if self.hierarchy == root else 1, {"freezer": self.path})
        self.origins: dict[int, Path] = {}

    def _origin(self, pid: int) -> Path:
        text = Path(f"/proc/{pid}/cgroup").read_text()
        for line in text.splitlines():
            _, controllers, path = line.split(":", 2)
            v1 = self.hierarchy.name == "freezer" and "freezer" in controllers.split(",")
            if v1 or (self.hierarchy.name != "freezer" and controllers == ""):
                return self.hierarchy / path.lstrip("/")
        return self.hierarchy

    def freeze(self, pids: list[int]) -> list[int]:
        self.path.mkdir(exist_ok=True)
        moved = []
        for pid in pids:
            try:
                origin = self._origin(pid)
                (self.path / "cgroup.procs").write_text(str(pid))
            except (OSError, ValueError):
                continue  # gone meanwhile
            self.origins[pid] = origin
            moved.append(pid)
        self.group.freeze()
        return moved

    def thaw(self) -> None:
        if self.path.exists():
            self.group.thaw()

    def remove(self) -> None:
        """Thaw, move every process back to where it was, remove the group."""
        if not self.path.exists():
            return
        self.thaw()
        for pid in self.group.pids():
            origin = self.origins.get(pid, self.hierarchy)
            for where in (origin, self.hierarchy):
                with contextlib.suppress(OSError):
                    (where / "cgroup.procs").write_text(str(pid))
                    break
        with contextlib.suppress(OSError):
            cgroups.remove_tree(self.path)
