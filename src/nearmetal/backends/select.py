"""Choosing a backend by name, with the plan's options and the command line's overrides."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from nearmetal.backends.base import BACKENDS, Backend


def make_backend(name: str, plan: BaseModel | None = None, **overrides: Any) -> Backend:
    """A registered backend (``local``: this machine, ``slurm``: batch jobs, ``kubernetes``: batch/v1 Jobs …).
    ``overrides`` are the command line's options (None = not given): they win over the plan's section of
    the backend's name (``slurm:``, ``kubernetes:``)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return BACKENDS.get_or_fail(name).from_plan(plan, **given)
