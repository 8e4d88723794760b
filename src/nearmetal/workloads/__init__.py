"""Workloads: one module per program, each registering its classes with ``@register_workload``
(``WORKLOADS``); ``get_workload(kind)`` returns an instance."""

from __future__ import annotations

from typing import Any

from nearmetal.workloads.base import (
    WORKLOADS,
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
    register_workload,
)


def workload_class(kind: str) -> type[Workload[Any]]:
    return WORKLOADS.get_or_fail(kind)


def get_workload(kind: str) -> Workload[Any]:
    return workload_class(kind)()


def primary_metric_of(kind: str) -> str:
    """The metric a kind's loss tables lead with (``wall_s`` for a kind no longer registered)."""
    return WORKLOADS[kind].primary_metric if kind in WORKLOADS else "wall_s"


def all_workload_classes() -> dict[str, type[Workload[Any]]]:
    return dict(WORKLOADS)


__all__ = [
    "WORKLOADS",
    "ParseError",
    "ProcessSpec",
    "Requirement",
    "TrialOutput",
    "Workload",
    "WorkloadContext",
    "WorkloadParams",
    "all_workload_classes",
    "get_workload",
    "primary_metric_of",
    "register_workload",
    "workload_class",
]
