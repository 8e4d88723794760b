"""The shield (issue 29): every trial of a run — baseline included — in one cgroup with the highest CPU weight
the hierarchy allows (and the highest I/O weight where the host has an I/O weight), so work outside the run
gets the CPU only when the trial does not want it.

A weight is not a limit: the layers' own cgroups (a CPU quota, a cpuset) are created *inside* the shield
(``TrialContext.cgroup_parent``), so a quota still binds — it caps the trial's share of what the shield won.
Processes join the shield's groups first and then the layer's (``cgroup_procs`` in that order), so in every
v1 hierarchy a process ends up in the deepest group that exists there.

The shield is named ``nearmetal-<run id>-shield`` and removed at the end of the run on every exit path; a
run killed by SIGKILL leaves it to ``nearmetal cleanup`` / the next ``resume`` (the cgroup finder matches
the run id prefix).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.errors import PrivilegeError
from nearmetal.host import cgroups
from nearmetal.layers.base import HOST_PREFIX

V1_MAX_SHARES = 262144  # kernel MAX_SHARES (1 << 18); the default is 1024
V2_MAX_WEIGHT = 10000  # cpu.weight and io.weight range 1–10000; the default is 100
# I/O weight files by preference, with their maximum: v1 CFQ/BFQ, v2 io / BFQ
IO_WEIGHTS_V1 = (("blkio.bfq.weight", 1000), ("blkio.weight", 1000))
IO_WEIGHTS_V2 = (("io.weight", 10000), ("io.bfq.weight", 1000))


def shield_name(run_id: str) -> str:
    return f"{HOST_PREFIX}-{run_id}-shield"


@dataclass
class Shield:
    """The shield cgroup of one run (``create`` … ``remove``; a context manager)."""

    run_id: str
    root: Path = cgroups.DEFAULT_ROOT
    group: cgroups.Cgroup | None = None
    settings: dict[str, str] = field(default_factory=dict)  # file → value written
    leaf: Path | None = None  # v2: where processes go that no layer places
    # where this process was before it joined the shield (``enter``): cgroup.procs files to go back to
    returned: list[tuple[Path, Path]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return shield_name(self.run_id)

    def create(self) -> Shield:
        hierarchy = cgroups.detect(self.root, ("cpu",))
        try:
            if hierarchy.version == 1:
                self._create_v1(hierarchy)  # type: ignore[arg-type]
            else:
                self._create_v2(hierarchy)  # type: ignore[arg-type]
        except BaseException:
            self.remove()
            raise
        return self

    def _create_v1(self, hierarchy: cgroups.CgroupV1) -> None:
        controllers = ["cpu"]
        # cpuacct and blkio are separate hierarchies on some hosts: the shield is there too, so a layer's
        # group in them nests under it as well
        for extra in ("cpuacct", "blkio"):
            with contextlib.suppress(PrivilegeError):
                if hierarchy.mount_of(extra) != hierarchy.mount_of("cpu"):
                    controllers.append(extra)
        self.group = hierarchy.create(self.name, controllers)
        self.group.write("cpu", "cpu.shares", str(V1_MAX_SHARES))
        self.settings["cpu.shares"] = str(V1_MAX_SHARES)
        blkio = self.group.dirs.get("blkio")
        for name, top in IO_WEIGHTS_V1:
            if blkio is not None and (blkio / name).exists():
                with contextlib.suppress(OSError):
                    (blkio / name).write_text(str(top))
                    self.settings[name] = str(top)
                    break

    def _create_v2(self, hierarchy: cgroups.CgroupV2) -> None:
        wanted = ["cpu"]
        available = set((hierarchy.root / "cgroup.controllers").read_text().split())
        if "io" in available:
            wanted.append("io")
        self.group = hierarchy.create(self.name, wanted)
        path = self.group.paths[0]
        self.group.write_file(path / "cpu.weight", str(V2_MAX_WEIGHT))
        self.settings["cpu.weight"] = str(V2_MAX_WEIGHT)
        for name, top in IO_WEIGHTS_V2:
            if (path / name).exists():
                with contextlib.suppress(OSError):
                    (path / name).write_text(f"default {top}" if name == "io.weight" else str(top))
                    self.settings[name] = str(top)
                    break
        # v2 lets no process sit in a group whose children have controllers: trials without a layer group
        # go into a leaf of the shield, the layers' groups beside it
        hierarchy._enable(wanted, path)
        self.leaf = path / f"{self.name}-trials"
        self.leaf.mkdir()

    def spec(self) -> dict[str, Any]:
        """What a trial needs (``TrialSpec.shield``): the group its layers' cgroups go inside, and the
        cgroup.procs files each process joins first."""
        return {"parent": self.name, "procs": self.procs_files()} if self.group is not None else {}

    def procs_files(self) -> list[str]:
        if self.group is None:
            return []
        if self.leaf is not None:
            return [str(self.leaf / "cgroup.procs")]
        return [str(p) for p in self.group.procs_files()]

    def enter(self) -> None:
        """Move this process (the runner: its samplers) into the shield. Below the shield's weight its
        sampler threads would wait behind the trial they sample and miss the counters of threads that end;
        inside, they compete with the trial as equals and use well under 1% of a CPU. ``leave`` (and
        ``remove``) moves it back where it was."""
        if self.group is None or self.returned:
            return
        here = _own_cgroups()
        back: list[tuple[Path, Path]] = []
        for procs in self.procs_files():
            mount = Path(procs).parent.parent if self.leaf is None else self.root_of(Path(procs))
            rel = here.get(str(mount))
            if rel is None:
                continue
            back.append((mount / rel.lstrip("/") / "cgroup.procs", mount / "cgroup.procs"))
        self.returned = back
        for procs in self.procs_files():
            Path(procs).write_text(str(os.getpid()))

    def root_of(self, procs: Path) -> Path:
        return procs.parent.parent.parent  # v2: <root>/<shield>/<leaf>/cgroup.procs

    def leave(self) -> None:
        for procs, top in self.returned:
            try:
                procs.write_text(str(os.getpid()))
            except OSError:
                # the group it came from is gone: the hierarchy's top, never left inside the shield (whose
                # removal kills what is in it)
                with contextlib.suppress(OSError):
                    top.write_text(str(os.getpid()))
        self.returned = []

    def remove(self) -> None:
        """Move this process out, kill what is left in it and remove it with every group inside
        (idempotent)."""
        self.leave()
        if self.group is not None:
            self.group.remove()
            self.group = None
            self.leaf = None

    def record(self) -> dict[str, Any]:
        """What the run stores about its shield (and the table header shows)."""
        return {
            "cgroup": self.name,
            "paths": [str(p) for p in self.group.paths] if self.group is not None else [],
            "settings": dict(self.settings),
            "io_weight": any(k != "cpu.shares" and k != "cpu.weight" for k in self.settings),
        }

    def __enter__(self) -> Shield:
        return self if self.group is not None else self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def open_shield(runner: Any) -> Shield | None:
    """The shield of ``runner``'s run when asked for, or when the run being resumed had one (None otherwise);
    the runner joins it. A resumed run keeps how it measured; the local backend only; no rootless variants."""
    from nearmetal.errors import NearmetalError

    run_id, store, loaded, backend = runner.run_id, runner.store, runner.loaded, runner.backend
    wanted, resuming = runner.want_shield, runner.resuming
    stored = False
    if resuming:
        with contextlib.suppress(NearmetalError):
            stored = bool((store.get_run(run_id).info or {}).get("shield"))
        if wanted and not stored:
            raise NearmetalError(
                f"run {run_id} was started without a shield and a resumed run keeps how it measured",
                fix="drop --shield, or start a new run with --shield",
            )
    if not (wanted or stored):
        return None
    if backend.remote:
        raise NearmetalError(
            f"--shield works with the local backend only (this run uses {backend.name})",
            fix="drop --shield; on a cluster, ask the scheduler for whole nodes instead",
        )
    rootless = sorted({c.variant for c in loaded.cells if any(x.layer == "rootless" for x in c.layers)})
    if rootless:
        raise NearmetalError(
            f"--shield cannot hold rootless trials (variants {', '.join(rootless)} run as another user)",
            fix="drop --shield or the rootless variants",
        )
    if resuming:
        # the dead process's shield (SIGKILL leaves it): the run's lock is held, so it is no one else's
        from nearmetal.host.cleanup import find_cgroups

        for leftover in find_cgroups(run_id):
            if leftover.name.endswith("/" + shield_name(run_id)):
                leftover.remove()
    shield = Shield(run_id).create()
    # the runner's samplers beside the trials, not below them (see Shield.enter)
    shield.enter()
    return shield


def close_shield(shield: Shield | None) -> None:
    """Remove the run's shield (the runner moves out first); never raises: the run's own outcome counts."""
    if shield is not None:
        with contextlib.suppress(Exception):
            shield.remove()


def repair_blocks(runner: Any) -> None:
    """``run.repair.repair_blocks`` for a runner (kept here so the runner stays short)."""
    from nearmetal.run.repair import repair_blocks as repair

    def run_blocks(trials: list[Any]) -> None:
        from nearmetal.errors import NearmetalError

        for _record in runner.run_trials([t for t in trials if t.key not in runner.done]):
            if runner._abort:
                raise NearmetalError(f"run {runner.run_id} stopped: {runner._abort}")

    repair(runner.store, runner.run_id, runner.loaded, runner.seed, run_blocks, runner.backend)


def _own_cgroups() -> dict[str, str]:
    """Mount point of each hierarchy this process is in → its group's path there (from /proc/self/cgroup)."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            for mount in (cgroups.DEFAULT_ROOT, cgroups.DEFAULT_ROOT / "unified"):
                if (mount / "cgroup.controllers").exists():
                    out[str(mount)] = path
        else:
            for name in controllers.split(","):
                out[str(cgroups.DEFAULT_ROOT / name.removeprefix("name="))] = path
            out[str(cgroups.DEFAULT_ROOT / controllers)] = path
    return out


def describe(record: dict[str, Any] | None) -> str:
    """The header line of a shielded run: 'on: cgroup nearmetal-…-shield, cpu.shares 262144 (the highest);
    no I/O weight on this host'."""
    if not record:
        return "off"
    settings = record.get("settings") or {}
    parts = ", ".join(f"{k} {v}" for k, v in settings.items())
    io = "" if record.get("io_weight") else "; no I/O weight on this host"
    return (
        f"on: every trial (baseline included) in cgroup {record.get('cgroup', '?')} with {parts} (the highest);"
        f" layers' cgroups nested inside{io}"
    )
