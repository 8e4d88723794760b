"""Finding and removing what a dead run left on the host.

Everything nearmetal creates on the host carries ``nearmetal-<run id>-`` in its name, and every process a
run starts carries ``NEARMETAL_RUN_ID=<run id>`` in its environment (descendants inherit it), so a run
killed by SIGKILL (which cannot clean up after itself) leaves objects that can be traced back and removed.
Each kind of host object has a finder (``leftovers.FINDERS``): the layers and backends that create a kind
register theirs with ``@finder`` where they create it.

Objects of runs that are still alive on this host (their lock is held, see ``runlock``) are never touched
unless asked for explicitly, so ``nearmetal cleanup`` is safe to run while other runs measure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from nearmetal.host import cgroups, hostnet, runlock
from nearmetal.host.leftovers import (
    FINDERS,
    HOST_NAME_RE,
    HOST_PREFIX,
    Leftover,
    finder,
    host_prefix,
    is_service_object,
    process_env,
    process_run_id,
    run_id_of,
)
from nearmetal.host.procstat import read_stat


@dataclass
class CleanupReport:
    removed: list[Leftover] = field(default_factory=list)
    failed: list[tuple[Leftover, str]] = field(default_factory=list)
    # objects of runs still alive on this host: left alone
    skipped: list[tuple[Leftover, str]] = field(default_factory=list)


@finder
def find_cgroups(run_id: str | None = None, root: Path = cgroups.DEFAULT_ROOT) -> list[Leftover]:
    prefix = host_prefix(run_id)
    found: list[Leftover] = []
    if not root.is_dir():
        return found
    hierarchies = [root] + [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(HOST_PREFIX)]
    for hierarchy in hierarchies:
        try:
            children = list(hierarchy.iterdir())
        except OSError:
            continue
        for path in children:
            if path.is_dir() and path.name.startswith(prefix):

                def remove(path: Path = path) -> None:
                    cgroups.Cgroup(0, {"": path}).remove()

                found.append(Leftover("cgroup", str(path), remove, priority=90))
    return found


def _ancestors(pid: int) -> set[int]:
    out = {pid}
    while pid > 1:
        stat = read_stat(pid)
        if stat is None:
            break
        pid = stat.ppid
        out.add(pid)
    return out


def _kill(pid: int, start_time: str) -> None:
    """SIGKILL a process, unless its pid now belongs to another process (pid reuse)."""
    with contextlib.suppress(OSError):
        if _start_time(pid) != start_time:
            return
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _start_time(pid) == start_time and not _is_zombie(pid):
        time.sleep(0.01)


def _start_time(pid: int) -> str | None:
    stat = read_stat(pid)
    return str(stat.starttime) if stat is not None else None


def _is_zombie(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is None or stat.gone


@finder
def find_processes(run_id: str | None = None) -> list[Leftover]:
    """Processes started by a run (``NEARMETAL_RUN_ID`` in their environment), not this process or its
    ancestors (a runner started from inside a trial)."""
    mine = _ancestors(os.getpid())
    own_job = os.environ.get("SLURM_JOB_ID")  # a runner inside an allocation owns that job's processes
    found: list[Leftover] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        pid = int(entry.name)
        env = process_env(pid, (runlock.RUN_ENV.encode(), b"SLURM_JOB_ID"))
        owner = env.get(runlock.RUN_ENV)
        if owner is None or (run_id is not None and owner != run_id) or _is_zombie(pid):
            continue
        if env.get("SLURM_JOB_ID", own_job) != own_job:
            # a step of a batch job the run submitted: the job is Slurm's to end (find_slurm_jobs cancels
            # it), and a resume that re-attaches to it must find it alive
            continue
        start = _start_time(pid)
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        found.append(
            Leftover(
                "process",
                f"{pid} ({comm})",
                partial(_kill, pid, start or ""),
                run_id=owner,
                priority=10,
            )
        )
    return found


@finder
def find_stale_locks(run_id: str | None = None) -> list[Leftover]:
    found = []
    for path in runlock.stale_lock_files():
        owner = path.name.removesuffix(".lock")
        if run_id is None or owner == run_id:
            found.append(
                Leftover("lock file", str(path), partial(runlock.remove_stale_lock, path), owner, priority=99)
            )
    return found


# user-mode network stacks (slirp4netns, pasta) a layer started: their command line names the namespace
USERNET_PROGRAMS = ("slirp4netns", "pasta", "passt")


@finder
def find_usernet_processes(run_id: str | None = None) -> list[Leftover]:
    found = []
    for pid, cmdline in hostnet.processes_with(
        str(hostnet.NETNS_DIR / host_prefix(run_id)), USERNET_PROGRAMS
    ):
        match = HOST_NAME_RE.search(cmdline)
        found.append(
            Leftover(
                "process",
                f"{pid} ({cmdline[:100]})",
                partial(hostnet.stop_pid, pid),
                run_id=match.group("run") if match else None,
                priority=20,
            )
        )
    return found


@finder
def find_net_links(run_id: str | None = None) -> list[Leftover]:
    """Links in the host namespace whose alias names a run (a veth or VXLAN device left between its creation
    and its move into a namespace); links inside namespaces go with their namespace."""
    prefix = host_prefix(run_id)
    return [
        Leftover(
            "link",
            f"{link.ifname} ({link.alias})",
            partial(hostnet.delete_link, None, link.ifname),
            priority=60,
        )
        for link in hostnet.list_links()
        if link.alias.startswith(prefix) and not is_service_object(link.alias)
    ]


def _remove_netns(name: str) -> None:
    # a killed run's trial processes may still run inside (orphaned when the runner died): end them too
    for pid in hostnet.netns_pids(name):
        hostnet.stop_pid(pid, grace_s=1.0)
    hostnet.delete_netns(name)
    # the control socket a killed slirp4netns left (its stack was stopped by find_usernet_processes)
    with contextlib.suppress(OSError):
        hostnet.api_socket_path(name).unlink()


@finder
def find_netns(run_id: str | None = None) -> list[Leftover]:
    return [
        Leftover("netns", name, partial(_remove_netns, name), priority=70)
        for name in hostnet.list_netns(host_prefix(run_id))
        if not is_service_object(name)
    ]


def find_leftovers(run_id: str | None = None) -> list[Leftover]:
    """Every host object of the run (or of every run), whether or not the run is still alive."""
    out: list[Leftover] = []
    for find in FINDERS.values():
        out += find(run_id)
    return sorted(out, key=lambda leftover: leftover.priority)


UNKNOWN_OWNER = (
    "the run it belongs to cannot be told (no run id in its name, arguments or environment); "
    "remove it with `nearmetal cleanup RUN` once you know the run"
)


def partition_live(
    leftovers: list[Leftover], run_id: str | None = None
) -> tuple[list[Leftover], list[tuple[Leftover, str]]]:
    """(objects of dead runs, [(object left alone, why)]). Left alone: objects of runs still alive on this
    host, and, when no ``run_id`` was named (the finders then return every run's objects), objects whose run
    cannot be told, since they might be a live run's."""
    live = runlock.live_runs()
    dead: list[Leftover] = []
    kept: list[tuple[Leftover, str]] = []
    for leftover in leftovers:
        owner_id = run_id_of(leftover) or (run_id if run_id and leftover.belongs_to(run_id) else None)
        if owner_id is None:
            owner = next((run for run in live.values() if leftover.belongs_to(run.run_id)), None)
            if owner is None:
                kept.append((leftover, UNKNOWN_OWNER))
                continue
        else:
            owner = live.get(owner_id)
            if owner is None:
                owner = next((run for run in live.values() if leftover.belongs_to(run.run_id)), None)
        if owner is None:
            dead.append(leftover)
        else:
            kept.append((leftover, f"run {owner.run_id} is still running ({owner.describe()})"))
    return dead, kept


def cleanup(
    run_id: str | None = None,
    include_live: bool = False,
    keep: Callable[[Leftover], bool] | None = None,
) -> CleanupReport:
    """Remove what dead runs (or the given run) left on the host. Objects of live runs are skipped unless
    ``include_live``; ``keep`` spares objects a caller still needs (jobs a resumed run re-attached to)."""
    report = CleanupReport()
    leftovers = find_leftovers(run_id)
    if keep is not None:
        leftovers = [leftover for leftover in leftovers if not keep(leftover)]
    if include_live:
        targets = leftovers
    else:
        targets, report.skipped = partition_live(leftovers, run_id)
    for leftover in targets:
        try:
            leftover.remove()
            report.removed.append(leftover)
        except Exception as exc:
            report.failed.append((leftover, str(exc)))
    return report


__all__ = [
    "HOST_NAME_RE",
    "UNKNOWN_OWNER",
    "CleanupReport",
    "Leftover",
    "cleanup",
    "find_leftovers",
    "host_prefix",
    "partition_live",
    "process_run_id",
    "run_id_of",
]
