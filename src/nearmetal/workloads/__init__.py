"""Workloads: one module per program. ``get_workload(kind)`` returns an instance."""

from __future__ import annotations

import importlib

from nearmetal.errors import NearmetalError
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
)

# kind -> "module:Class"; modules are imported on first use so a missing optional library only
# matters to the workload that needs it.
WORKLOAD_CLASSES: dict[str, str] = {
    "command": "nearmetal.workloads.command:CommandWorkload",
    "image-build": "nearmetal.workloads.image_build:ImageBuildWorkload",
    "ddp": "nearmetal.workloads.ddp:DdpWorkload",
    "flops": "nearmetal.workloads.flops:FlopsWorkload",
    "fio": "nearmetal.workloads.fio:FioWorkload",
    "iperf3": "nearmetal.workloads.iperf3:Iperf3Workload",
    "lammps": "nearmetal.workloads.lammps:LammpsWorkload",
    "particles": "nearmetal.workloads.particles:ParticlesWorkload",
    "stress-ng": "nearmetal.workloads.stress_ng:StressNgWorkload",
    "train": "nearmetal.workloads.train:TrainWorkload",
    "mpi": "nearmetal.workloads.mpi:MpiWorkload",
    "osu": "nearmetal.workloads.mpi:OsuWorkload",
    "tcp-rr": "nearmetal.workloads.tcprr:TcpRrWorkload",
    "http-load": "nearmetal.workloads.service:HttpLoadWorkload",
    "io-probe": "nearmetal.workloads.service:IoProbeWorkload",
}


def workload_class(kind: str) -> type[Workload]:
    try:
        target = WORKLOAD_CLASSES[kind]
    except KeyError:
        known = ", ".join(sorted(WORKLOAD_CLASSES))
        raise NearmetalError(f"unknown workload kind {kind!r}", fix=f"use one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_workload(kind: str) -> Workload:
    return workload_class(kind)()


def all_workload_classes() -> dict[str, type[Workload]]:
    return {kind: workload_class(kind) for kind in WORKLOAD_CLASSES}


__all__ = [
    "WORKLOAD_CLASSES",
    "ParseError",
    "ProcessSpec",
    "Requirement",
    "TrialOutput",
    "Workload",
    "WorkloadContext",
    "WorkloadParams",
    "all_workload_classes",
    "get_workload",
    "workload_class",
]
