"""What a run left on the host, seen from outside nearmetal: the tables the kernel keeps.

Only objects that carry the run's id are looked at (other engineers' tests and runs create nearmetal-*
objects on the same machine at the same time). Interface names cannot hold a run id (15 characters), so a
link counts when its name or its alias (``ip link set … alias``) holds it. Every finder registered in
``nearmetal.host.cleanup.FINDERS`` is asked as well, so a new kind of host object is covered as soon as its
layer registers a finder.
"""

from __future__ import annotations

import os
from pathlib import Path

from nearmetal.host.cleanup import find_leftovers

CGROUP_ROOT = Path("/sys/fs/cgroup")
TEMP_DIRS = [
    Path("/tmp"),
    Path("/var/tmp"),
    Path("/dev/shm"),
    Path("/run"),
    Path("/run/nearmetal"),
    Path("/var/lib/nearmetal/rootless"),  # rootless trials' staging (nearmetal.layers.rootless.STAGING_BASE)
]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def cgroups(run_id: str, max_depth: int = 4) -> set[str]:
    found = set()
    if not CGROUP_ROOT.is_dir():
        return found
    for top, dirs, _ in os.walk(CGROUP_ROOT):
        depth = len(Path(top).relative_to(CGROUP_ROOT).parts)
        for name in dirs:
            if run_id in name:
                found.add(f"cgroup {Path(top) / name}")
        if depth >= max_depth:
            dirs.clear()
        else:
            # descend only into directories that could hold a layer's groups (not every systemd unit)
            dirs[:] = [
                d for d in dirs if run_id not in d and not d.endswith((".service", ".scope", ".mount"))
            ]
    return found


def network_namespaces(run_id: str) -> set[str]:
    netns = Path("/run/netns")
    try:
        return {f"netns {p.name}" for p in netns.iterdir() if run_id in p.name}
    except OSError:
        return set()


def links(run_id: str) -> set[str]:
    found = set()
    try:
        interfaces = list(Path("/sys/class/net").iterdir())
    except OSError:
        return found
    for iface in interfaces:
        if run_id in iface.name or run_id in _read(iface / "ifalias"):
            found.add(f"link {iface.name}")
    return found


def mounts(run_id: str) -> set[str]:
    found = set()
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        if run_id in line:
            fields = line.split()
            found.add(f"mount {fields[4] if len(fields) > 4 else line}")
    return found


def namespace_mounts(run_id: str) -> set[str]:
    """Mounts that carry the run id in any mount namespace but ours (a rootless trial mounts inside its own
    user's namespace, which the host's mount table does not show), read from each process's mountinfo."""
    found = set()
    try:
        own = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return found
    seen: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ns = os.readlink(entry / "ns" / "mnt")
        except OSError:
            continue
        if ns == own or ns in seen:
            continue
        seen.add(ns)
        for line in _read(entry / "mountinfo").splitlines():
            fields = line.split()
            if len(fields) > 4 and run_id in fields[4]:
                found.add(f"mount {fields[4]} in {ns} (process {entry.name})")
    return found


def runtime_dir_files(run_id: str) -> set[str]:
    """Files named for the run in users' runtime directories (/run/user/UID: XDG_RUNTIME_DIR)."""
    found = set()
    for base in Path("/run/user").glob("*"):
        try:
            found |= {f"file {p}" for p in base.iterdir() if run_id in p.name}
        except OSError:
            continue
    return found


def processes(run_id: str) -> set[str]:
    """Processes whose environment carries the run (NEARMETAL_RUN_ID) or whose command line names it."""
    found = set()
    me = os.getpid()
    marker = f"NEARMETAL_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        stat = _read(entry / "stat")
        if not stat or stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
            continue  # gone, or a zombie waiting for its parent (not running, holds nothing)
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") or run_id.encode() in cmdline:
            found.add(f"process {entry.name} ({_read(entry / 'comm').strip()})")
    return found


def temp_files(run_id: str) -> set[str]:
    found = set()
    for directory in TEMP_DIRS:
        try:
            found |= {f"file {p}" for p in directory.iterdir() if run_id in p.name}
        except OSError:
            continue
    return found


def registered_finders(run_id: str) -> set[str]:
    return {f"{leftover} [finder]" for leftover in find_leftovers(run_id)}


def host_objects(run_id: str) -> set[str]:
    """Everything on the host that carries the run id."""
    return (
        cgroups(run_id)
        | network_namespaces(run_id)
        | links(run_id)
        | mounts(run_id)
        | namespace_mounts(run_id)
        | processes(run_id)
        | temp_files(run_id)
        | runtime_dir_files(run_id)
        | registered_finders(run_id)
    )
