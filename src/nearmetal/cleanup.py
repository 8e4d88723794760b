"""Finding and removing what a dead run left on the host.

Everything nearmetal creates on the host carries ``nearmetal-<run id>`` in its name, so a run killed by
SIGKILL (which cannot clean up after itself) leaves objects that can be traced back and removed. Each kind
of host object has a finder; layers that create new kinds add theirs to ``FINDERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nearmetal.layers import cgroups
from nearmetal.layers.base import HOST_PREFIX


@dataclass
class Leftover:
    kind: str
    name: str
    remove: Callable[[], None]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def _prefix(run_id: str | None) -> str:
    return f"{HOST_PREFIX}-{run_id}" if run_id else f"{HOST_PREFIX}-"


def find_cgroups(run_id: str | None = None, root: Path = cgroups.DEFAULT_ROOT) -> list[Leftover]:
    prefix = _prefix(run_id)
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

                found.append(Leftover("cgroup", str(path), remove))
    return found


FINDERS: list[Callable[[str | None], list[Leftover]]] = [find_cgroups]


def find_leftovers(run_id: str | None = None) -> list[Leftover]:
    out: list[Leftover] = []
    for finder in FINDERS:
        out += finder(run_id)
    return out


def cleanup(run_id: str | None = None) -> tuple[list[Leftover], list[tuple[Leftover, str]]]:
    """Remove leftovers; returns (removed, [(leftover, error)])."""
    removed, failed = [], []
    for leftover in find_leftovers(run_id):
        try:
            leftover.remove()
            removed.append(leftover)
        except Exception as exc:
            failed.append((leftover, str(exc)))
    return removed, failed
