"""particles: a compute-intensive particle-tracking simulation (seed 001's simpletrack, parts 3–5).

Particles through a ring of drift + thin-quadrupole/sextupole cells and an RF cavity for ``turns`` turns
(see ``programs/particles_program.py``). On a CPU the particles go in cache-sized chunks to ``workers``
processes (default: one per CPU the trial may use, so a cpuset partition of k CPUs gets k workers); on a
GPU torch tracks them all at once. Metrics: ``tracking_s`` (the seed's seconds) and
``particle_turns_per_s``; ``survived`` and ``checksum`` let runs on different hosts be checked against
each other (the same particles on every backend).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from nearmetal.metrics import Metric
from nearmetal.workloads.base import WorkloadContext, register_workload
from nearmetal.workloads.pyprogram import DeviceParams, ProgramWorkload


class ParticlesParams(DeviceParams):
    particles: int = Field(100_000, ge=1, le=1_000_000_000)
    turns: int = Field(100, ge=1, le=10_000_000)
    elements: int = Field(16, ge=1, le=10_000, description="FODO cells per turn")
    chunk: int = Field(8192, ge=64, le=10_000_000, description="particles per chunk on a CPU")
    workers: int | None = Field(None, ge=1, le=4096, description="CPU processes (default: one per CPU)")


@register_workload
class ParticlesWorkload(ProgramWorkload[ParticlesParams]):
    kind = "particles"
    Params = ParticlesParams
    description = "simpletrack-like particle tracking: seconds and particle-turns/s (numpy CPU, torch GPU)"
    primary_metric = "tracking_s"
    program = "particles"

    def arguments(self, params: ParticlesParams, ctx: WorkloadContext) -> list[str]:
        args = [
            f"--particles={params.particles}",
            f"--turns={params.turns}",
            f"--elements={params.elements}",
            f"--chunk={params.chunk}",
            f"--backend={'torch' if params.on_gpu else 'numpy'}",
            f"--device={params.device}",
            f"--seed={params.seed}",
        ]
        if params.workers:
            args.append(f"--workers={params.workers}")
        return args

    def longer_params(self, params: ParticlesParams, factor: float) -> dict[str, Any]:
        return {"turns": math.ceil(params.turns * factor)}

    def metrics(self, doc: dict[str, Any]) -> list[Metric]:
        out = [
            Metric("tracking_s", float(doc["tracking_s"]), "s", "lower"),
            Metric("particle_turns_per_s", float(doc["particle_turns_per_s"]), "particle-turns/s", "higher"),
            Metric("survived", float(doc["survived"]), "particles", "higher"),
        ]
        if doc.get("checksum") is not None:
            out.append(Metric("checksum", float(doc["checksum"]), "m²", "higher"))
        return out
