"""Paths in plans: nearmetal writes only into the run's directory, or where the person running it allowed.

A plan is often written by someone else (a colleague's study, a shared repository), and nearmetal runs as
root. So every plan value that names a place nearmetal *writes* (files it creates, fills and deletes: fio's
data directory, a cgroup root) is checked before anything runs:

- a relative path stays below the trial's directory (no ``..`` that climbs out of it);
- an absolute path, with every symbolic link resolved, must lie under the field's own default (a layer's
  ``cgroup_root`` may be anywhere below ``/sys/fs/cgroup``) or under a directory the operator allowed with
  ``--allow-path DIR`` (or ``NEARMETAL_ALLOW_PATHS``, ``:``-separated). The plan itself cannot allow paths.

Which fields are such places: every field typed ``Path`` in a layer's ``Config`` or a workload's ``Params``
(unless marked ``json_schema_extra={"nearmetal_path": "reads"}``), every field marked
``{"nearmetal_path": "writes"}``, and the string fields listed in ``WRITTEN_FIELDS``. Programs a plan names
(``command.argv``, ``lammps.binary``) are not paths nearmetal writes: a plan chooses what runs, see
SECURITY.md.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from nearmetal.confine import path_problem
from nearmetal.errors import PlanError

ALLOW_ENV = "NEARMETAL_ALLOW_PATHS"
MARK = "nearmetal_path"
# string-typed fields that name a place nearmetal writes: (workload kind or layer kind, field)
WRITTEN_FIELDS: set[tuple[str, str]] = {("fio", "directory")}


def allowed_from_environment() -> list[Path]:
    value = os.environ.get(ALLOW_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def _is_path_type(annotation: Any) -> bool:
    if annotation is Path or (isinstance(annotation, type) and issubclass(annotation, Path)):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, set, frozenset, typing.Annotated):
        return any(_is_path_type(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return False


def written_fields(model: type[BaseModel], kind: str) -> dict[str, list[Path]]:
    """Fields of a layer's Config or a workload's Params that name places nearmetal writes, each with the
    roots its own default allows."""
    out: dict[str, list[Path]] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        mark = extra.get(MARK)
        if mark == "reads":
            continue
        if mark == "writes" or (kind, name) in WRITTEN_FIELDS or _is_path_type(info.annotation):
            default = info.default
            roots = [Path(default)] if isinstance(default, str | Path) and Path(default).is_absolute() else []
            out[name] = roots
    return out


def _values(value: Any) -> Iterable[str]:
    if value is None:
        return []
    if isinstance(value, str | Path):
        return [str(value)]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def check_plan_paths(loaded: Any, allowed: Sequence[Path] = ()) -> None:
    """Every written path of every cell, checked before anything runs; one line per problem."""
    from nearmetal.layers import layer_class
    from nearmetal.plan.load import format_problem
    from nearmetal.workloads import workload_class

    extra_allowed = [Path(os.path.abspath(p)) for p in [*allowed, *allowed_from_environment()]]
    try:
        root = yaml.compose(loaded.text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        root = None
    problems: list[str] = []
    for cell in loaded.cells:
        checks: list[tuple[tuple[Any, ...], BaseModel, str]] = [
            (("workloads", cell.workload, "params"), cell.params, cell.kind)
        ]
        checks += [
            (("variants", cell.variant, "layers", i), config, config.layer)
            for i, config in enumerate(cell.layers)
        ]
        for loc, model, kind in checks:
            cls = workload_class(kind).Params if loc[0] == "workloads" else layer_class(kind).Config
            for field, roots in written_fields(cls, kind).items():
                for value in _values(getattr(model, field, None)):
                    problem = path_problem(value, [*roots, *extra_allowed])
                    if problem:
                        line = format_problem(loaded.source, root, (*loc, field), problem)
                        if line not in problems:
                            problems.append(line)
    if problems:
        raise PlanError(problems)
