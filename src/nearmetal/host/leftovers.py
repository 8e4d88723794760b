"""What a run leaves on the host, and the finders that trace it back to its run.

A leaf module (standard library and the registry only), so the layers and backends that create host objects
can register a finder for them (``@finder``) without importing ``cleanup``, which reads every finder.
Everything nearmetal creates on the host carries ``nearmetal-<run id>-`` in its name, and every process a run
starts carries ``NEARMETAL_RUN_ID=<run id>`` in its environment."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nearmetal.registry import Registry

HOST_PREFIX = "nearmetal"
# the environment variable every process of a run inherits (``runlock.RUN_ENV`` is the same name)
RUN_ENV = "NEARMETAL_RUN_ID"


@dataclass
class Leftover:
    kind: str
    name: str
    remove: Callable[[], None]
    # the run it belongs to, when the finder knows it (else it is matched by name against live runs)
    run_id: str | None = None
    # removal order: processes first (they keep mounts busy and cgroups populated), cgroups late
    priority: int = 50

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"

    def belongs_to(self, run_id: str) -> bool:
        if self.run_id is not None:
            return self.run_id == run_id
        return f"{HOST_PREFIX}-{run_id}-" in self.name


# what ``TrialContext.host_name`` makes: nearmetal-<run id>-<cell id: 10 hex>-<w|r><repeat>-<what>
HOST_NAME_RE = re.compile(rf"{HOST_PREFIX}-(?P<run>[A-Za-z0-9][A-Za-z0-9_.-]*?)-[0-9a-f]{{10}}-[wr]\d+")


# objects of the services nearmetal's scripts start (scripts/services/slurm.sh --nodes 2: its nodes'
# namespaces, bridge and links, ``nearmetal-slurm<port>-…``): they belong to no run and live across runs, so
# no finder reports them and ``cleanup`` never removes them (the script's ``stop`` does)
SERVICE_RE = re.compile(rf"^{HOST_PREFIX}-slurm\d+-(node\d+|mgmt|wire)")


def is_service_object(name: str) -> bool:
    return SERVICE_RE.match(name) is not None


def run_id_of(leftover: Leftover) -> str | None:
    """The run a leftover belongs to, from its finder or from its name."""
    if leftover.run_id is not None:
        return leftover.run_id
    match = HOST_NAME_RE.search(leftover.name)
    return match.group("run") if match else None


def host_prefix(run_id: str | None) -> str:
    """The start of every host object name of a run (or of any run). The trailing '-' keeps run ``ab`` from
    matching run ``abc``."""
    return f"{HOST_PREFIX}-{run_id}-" if run_id else f"{HOST_PREFIX}-"


def process_env(pid: int, names: tuple[bytes, ...]) -> dict[str, str]:
    """The given variables of a process's environment (empty when it is gone or not readable)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for entry in environ.split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name in names:
            found[name.decode()] = value.decode(errors="replace")
    return found


def process_run_id(pid: int) -> str | None:
    return process_env(pid, (RUN_ENV.encode(),)).get(RUN_ENV)


Finder = Callable[[str | None], list[Leftover]]
# every kind of host object a run can leave has a finder: ``finder(run_id or None) -> [Leftover]``
FINDERS: Registry[Finder] = Registry(
    "leftover finder",
    packages=("nearmetal.layers", "nearmetal.backends"),
    modules=("nearmetal.host.cleanup", "nearmetal.workloads.image_build"),
)


def finder(fn: Finder) -> Finder:
    """Register a finder of leftovers (named by its module and function)."""
    return FINDERS.add(f"{fn.__module__}:{fn.__name__}", fn)
