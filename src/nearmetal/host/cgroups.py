"""One interface over cgroup v1 and v2, for the layers that place a trial in a cgroup of its own.

v1 (legacy/hybrid hosts, like this project's development machine) has one hierarchy per controller
(``/sys/fs/cgroup/cpu``, ``/sys/fs/cgroup/cpuacct``, ``/sys/fs/cgroup/cpuset`` ...); v2 (current Kubernetes
nodes) has one unified tree where ``cpu.max`` holds the quota a pod's CPU limit writes. Which one is used is
detected at run time: v2 when the unified tree offers the controllers needed, v1 otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from nearmetal.errors import PrivilegeError

DEFAULT_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str:
    return path.read_text().strip()


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``cpu.stat`` style files: one ``key value`` per line."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_cpu_list(text: str) -> list[int]:
    """Kernel CPU/node lists ("0-3,8,10-11", as in cpuset.cpus) → sorted numbers; "" → []."""
    out: set[int] = set()
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise ValueError(f"{text!r} is not a CPU list such as 0-3,8") from None
        if first < 0 or last < first:
            raise ValueError(f"{text!r} is not a CPU list such as 0-3,8")
        out.update(range(first, last + 1))
    return sorted(out)


def format_cpu_list(cpus: list[int]) -> str:
    """[0, 1, 2, 3, 8] → "0-3,8"."""
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(ranges)


@dataclass(frozen=True)
class CpuStat:
    """Throttling counters in one shape for both versions."""

    nr_periods: int
    nr_throttled: int
    throttled_s: float
    usage_s: float | None

    @property
    def throttled_fraction(self) -> float:
        return self.nr_throttled / self.nr_periods if self.nr_periods else 0.0


class CgroupHierarchy:
    """A detected cgroup filesystem: where new groups go for each controller."""

    version: int
    root: Path

    def create(self, name: str, controllers: list[str]) -> Cgroup:
        raise NotImplementedError

    def parent_cpuset(self) -> tuple[str, str]:
        """(CPUs, memory nodes) a new cpuset group may use: what its parent has."""
        raise NotImplementedError


@dataclass
class CgroupV1(CgroupHierarchy):
    root: Path = DEFAULT_ROOT
    version: int = 1

    def mount_of(self, controller: str) -> Path:
        for candidate in (
            self.root / controller,
            self.root / f"{controller},cpuacct",
            self.root / f"cpu,{controller}",
        ):
            if (candidate / "cgroup.procs").exists():
                return candidate
        raise PrivilegeError(
            f"cgroup v1 controller {controller!r} is not mounted under {self.root}",
            fix=f"mount it: mount -t cgroup -o {controller} cgroup {self.root / controller}",
        )

    def create(self, name: str, controllers: list[str]) -> Cgroup:
        dirs = {c: nested(self.mount_of(c), name) for c in controllers}
        return _mkdirs(self.version, dirs)

    def parent_cpuset(self) -> tuple[str, str]:
        parent = self.mount_of("cpuset")
        cpus = _first_existing(parent, ("cpuset.effective_cpus", "cpuset.cpus"))
        mems = _first_existing(parent, ("cpuset.effective_mems", "cpuset.mems"))
        return cpus, mems


@dataclass
class CgroupV2(CgroupHierarchy):
    root: Path = DEFAULT_ROOT
    version: int = 2

    def create(self, name: str, controllers: list[str]) -> Cgroup:
        v2_controllers = [c for c in controllers if c != "cpuacct"]  # cpu.stat carries usage in v2
        path = nested(self.root, name)
        self._enable(v2_controllers)
        # a group nested in another (a layer's group inside the run's shield) needs the controllers
        # enabled in every group above it too
        for parent in reversed(path.relative_to(self.root).parents[:-1]):
            self._enable(v2_controllers, self.root / parent)
        return _mkdirs(self.version, {c: path for c in [*v2_controllers, "cpuacct"] if c in controllers})

    def parent_cpuset(self) -> tuple[str, str]:
        # the root group has only the effective files
        cpus = _first_existing(self.root, ("cpuset.cpus.effective", "cpuset.cpus"))
        mems = _first_existing(self.root, ("cpuset.mems.effective", "cpuset.mems"))
        return cpus, mems

    def _enable(self, controllers: list[str], group: Path | None = None) -> None:
        control = (group or self.root) / "cgroup.subtree_control"
        try:
            enabled = set(_read(control).split())
        except FileNotFoundError:
            enabled = set()
        missing = [c for c in controllers if c not in enabled]
        if missing:
            try:
                control.write_text(" ".join(f"+{c}" for c in missing))
            except OSError as exc:
                raise PrivilegeError(
                    f"cannot enable {missing} in {control}: {exc.strerror}",
                    fix="run as root, or delegate these controllers to nearmetal's cgroup",
                ) from None


def nested(mount: Path, name: str) -> Path:
    """Where group ``name`` goes under a hierarchy's ``mount``: a name ``parent/leaf`` nests under the parent
    group when the parent exists in this hierarchy (the run's shield, see ``run.shield``), else the leaf goes
    at the top, as without a parent (a v1 hierarchy the parent was not created in, such as cpuset)."""
    parent, _, leaf = name.rpartition("/")
    if not parent:
        return mount / name
    return mount / name if (mount / parent).is_dir() else mount / leaf


def _first_existing(directory: Path, names: tuple[str, ...]) -> str:
    for name in names:
        path = directory / name
        if path.exists():
            return _read(path)
    raise PrivilegeError(
        f"no {' or '.join(names)} in {directory}: the cpuset controller is not available there",
        fix="mount the cpuset controller (v1) or enable it in cgroup.subtree_control (v2)",
    )


def _mkdirs(version: int, dirs: dict[str, Path]) -> Cgroup:
    created: list[Path] = []
    try:
        for path in dict.fromkeys(dirs.values()):
            path.mkdir()
            created.append(path)
    except OSError as exc:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PrivilegeError(
                f"cannot create cgroup {exc.filename}: {exc.strerror}",
                fix="run nearmetal as root (or give it a delegated, writable cgroup subtree)",
            ) from None
        raise PrivilegeError(
            f"cannot create cgroup {exc.filename}: {exc.strerror}",
            fix="remove the leftover with `nearmetal cleanup` or check the cgroup mount",
        ) from None
    return Cgroup(version, dirs)


def hierarchy_for(root: Path, version: str, controllers: tuple[str, ...]) -> CgroupHierarchy:
    """The hierarchy a layer's ``version`` setting names ("v1", "v2"), or the one ``detect`` finds for
    ``controllers`` ("auto")."""
    if version == "v2":
        return CgroupV2(root)
    if version == "v1":
        return CgroupV1(root)
    return detect(root, controllers)


def detect(root: Path = DEFAULT_ROOT, controllers: tuple[str, ...] = ("cpu",)) -> CgroupHierarchy:
    """v2 when a unified tree offers every controller asked for; else v1; else a clear error."""
    for unified in (root, root / "unified"):
        controllers_file = unified / "cgroup.controllers"
        if controllers_file.exists():
            available = set(_read(controllers_file).split())
            wanted = {c for c in controllers if c != "cpuacct"}
            if wanted <= available:
                return CgroupV2(unified)
    if any((root / c / "cgroup.procs").exists() for c in controllers):
        return CgroupV1(root)
    raise PrivilegeError(
        f"no cgroup filesystem with the {', '.join(controllers)} controller(s) under {root}",
        fix="mount cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup) or the v1 controllers",
    )


@dataclass
class Cgroup:
    """One group, possibly spread over several v1 hierarchies."""

    version: int
    dirs: dict[str, Path]
    removed: bool = field(default=False)

    @property
    def paths(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def procs_files(self) -> list[Path]:
        return [p / "cgroup.procs" for p in self.paths]

    def write(self, controller: str, filename: str, value: str) -> None:
        path = self.dirs[controller] / filename
        try:
            path.write_text(value)
        except OSError as exc:
            raise PrivilegeError(
                f"cannot write {value!r} to {path}: {exc.strerror}",
                fix="check the value and that the controller is enabled",
            ) from None

    def read(self, controller: str, filename: str) -> str:
        return _read(self.dirs[controller] / filename)

    # --- cpu ---
    def set_cpu_quota(self, cpus: float, period_us: int = 100_000) -> tuple[int, int]:
        quota_us = max(1000, round(cpus * period_us))
        if self.version == 2:
            self.write("cpu", "cpu.max", f"{quota_us} {period_us}")
        else:
            self.write("cpu", "cpu.cfs_period_us", str(period_us))
            self.write("cpu", "cpu.cfs_quota_us", str(quota_us))
        return quota_us, period_us

    def cpu_stat(self) -> CpuStat:
        stat = parse_flat_keyed(self.read("cpu", "cpu.stat"))
        if self.version == 2:
            usage = stat.get("usage_usec")
            return CpuStat(
                stat.get("nr_periods", 0),
                stat.get("nr_throttled", 0),
                stat.get("throttled_usec", 0) / 1e6,
                usage / 1e6 if usage is not None else None,
            )
        usage_s = None
        if "cpuacct" in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                usage_s = int(self.read("cpuacct", "cpuacct.usage")) / 1e9
        return CpuStat(
            stat.get("nr_periods", 0),
            stat.get("nr_throttled", 0),
            stat.get("throttled_time", 0) / 1e9,
            usage_s,
        )

    # --- cpuset ---
    def set_cpuset(self, cpus: str, mems: str) -> None:
        """Confine the group to CPUs and memory nodes. In v1 a new cpuset group starts with both empty and
        refuses tasks until both are written (cpus first: the kernel checks mems against them)."""
        self.write("cpuset", "cpuset.cpus", cpus)
        self.write("cpuset", "cpuset.mems", mems)

    def effective_cpus(self) -> str:
        names = (
            ("cpuset.effective_cpus", "cpuset.cpus")
            if self.version == 1
            else ("cpuset.cpus.effective", "cpuset.cpus")
        )
        return _first_existing(self.dirs["cpuset"], names)

    # --- freezer (what `docker pause` / a paused pod uses) ---
    def freeze(self, timeout_s: float = 5.0) -> None:
        """Stop every task of the group (v1 ``freezer.state`` FROZEN, v2 ``cgroup.freeze`` 1) and wait until
        the kernel says they are all frozen."""
        path = self.dirs.get("freezer") or self.paths[0]
        if (path / "freezer.state").exists():
            self.write_file(path / "freezer.state", "FROZEN")
            state, frozen = path / "freezer.state", "FROZEN"
        else:
            self.write_file(path / "cgroup.freeze", "1")
            state, frozen = path / "cgroup.events", "frozen 1"
        deadline = time.monotonic() + timeout_s
        while frozen not in _read(state) and time.monotonic() < deadline:
            time.sleep(0.005)

    def thaw(self) -> None:
        """Let frozen tasks run again; safe on a group that is not frozen or has no freezer. A frozen task
        cannot even die of SIGKILL, so removal thaws first."""
        for path in self.paths:
            for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                if (path / name).exists():
                    with contextlib.suppress(OSError):
                        (path / name).write_text(value)

    def write_file(self, path: Path, value: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise PrivilegeError(
                f"cannot write {value!r} to {path}: {exc.strerror}", fix="run as root"
            ) from None

    # --- lifecycle ---
    def pids(self) -> set[int]:
        out: set[int] = set()
        for path in self.paths:
            for sub in _walk_bottom_up(path):
                with contextlib.suppress(OSError, ValueError):
                    out.update(int(x) for x in _read(sub / "cgroup.procs").split())
        return out

    def kill_all(self, timeout_s: float = 5.0) -> None:
        """SIGKILL every process still in the group (workloads that escaped their process group)."""
        deadline = time.monotonic() + timeout_s
        # never this process (a runner that joined the group it removes: run.shield)
        while (pids := self.pids() - {os.getpid()}) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self, timeout_s: float = 5.0) -> None:
        """Kill what is left, then remove the group (and any child groups the workload made)."""
        if self.removed:
            return
        self.thaw()
        self.kill_all(timeout_s)
        for path in self.paths:
            remove_tree(path, timeout_s)
        self.removed = True


def _walk_bottom_up(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    subs = [p for p in path.iterdir() if p.is_dir()]
    out: list[Path] = []
    for sub in subs:
        out.extend(_walk_bottom_up(sub))
    out.append(path)
    return out


def remove_tree(path: Path, timeout_s: float = 5.0) -> None:
    """rmdir a cgroup and its children, deepest first; EBUSY is retried while exiting tasks drain."""
    for sub in _walk_bottom_up(path):
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sub.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                if exc.errno == errno.ENOTEMPTY:
                    # only a plain directory laid out like a cgroup tree says ENOTEMPTY (cgroupfs says
                    # EBUSY): its interface files are ordinary files that must go first
                    for child in sub.iterdir():
                        if child.is_file():
                            child.unlink()
                    continue
                raise
