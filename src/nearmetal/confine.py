"""Where a path a plan names may lead when nearmetal writes there: below the trial's directory (no ``..`` that
climbs out of it) or, absolute and with every symbolic link resolved, under a root the operator allowed.

A leaf (standard library and ``nearmetal.errors`` only): ``plan.paths`` checks every written field of a plan
with it before anything runs, and a workload or layer confines the same values again when it uses them (a
link made after the check does not lead writes out). See ``plan/paths.py`` for which fields are such paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nearmetal.errors import PlanError


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or lies below it (both already resolved)."""
    return path == root or root in path.parents


def path_problem(value: str, allowed: Sequence[Path]) -> str | None:
    """Why a written path is not acceptable, or None. ``allowed`` are absolute roots."""
    if "\0" in value:
        return "a path cannot contain a NUL byte"
    path = Path(value)
    if not path.is_absolute():
        depth = 0
        for part in path.parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                return (
                    f"{value!r} climbs out of the trial's directory ('..'); give a path below it, or an "
                    "absolute path the operator allowed"
                )
        return None
    real = Path(os.path.realpath(path))
    for root in allowed:
        if inside(real, Path(os.path.realpath(root))):
            return None
    shown = ", ".join(str(r) for r in allowed) or "none"
    via = f" (it leads to {real})" if real != path else ""
    return (
        f"{value}{via} is outside the run's directory and the allowed paths ({shown}); nearmetal writes "
        f"there only when the person running it says so (--allow-path {real})"
    )


def confine(value: str | Path, base: Path, allowed: Sequence[Path] = ()) -> Path:
    """The place a plan path names, at the moment it is used: relative to ``base``, every symbolic link
    resolved, and inside ``base`` or an allowed root, else a PlanError (a link made after the plan was
    checked does not lead writes out either)."""
    path = Path(value)
    target = Path(os.path.realpath(path if path.is_absolute() else base / path))
    roots = [Path(os.path.realpath(base)), *(Path(os.path.realpath(r)) for r in allowed)]
    if not any(inside(target, root) for root in roots):
        raise PlanError([f"{value} leads to {target}, outside {', '.join(str(r) for r in roots)}"])
    return target
