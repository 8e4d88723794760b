"""LAMMPS (Debian ``lammps``, binary ``lmp``) running a Lennard-Jones melt, serial or under ``mpirun``.

The parser reads the lines every LAMMPS version prints at the end of a run, in all their historical shapes:

    Loop time of 0.756589 on 2 procs for 100 steps with 32000 atoms
    Loop time of 2.1 on 4 procs (2 MPI x 2 OpenMP) for 100 steps with 32000 atoms     (2014-2016)
    Performance: 57098.345 tau/day, 132.172 timesteps/s                                (lj units, 2016-2021)
    Performance: 0.249 ns/day, 96.476 hours/ns, 28.792 timesteps/s, 70.023 katom-step/s  (metal, 2022+)
    98.8% CPU use with 2 MPI tasks x 1 OpenMP threads
    99.6% CPU use with 4 MPI tasks x no OpenMP threads                                 (built without OpenMP)

"x no OpenMP threads" gives the CPU % and the MPI tasks but no ``omp_threads`` metric (the binary has no
OpenMP; no thread count is claimed for it).
"""

from __future__ import annotations

import os
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from nearmetal.host import hostcmd
from nearmetal.metrics import Metric
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
    mpi_launch_argv,
    register_workload,
)

LOOP_RE = re.compile(
    r"Loop time of\s+(?P<time>[0-9.eE+-]+)\s+on\s+(?P<procs>\d+)\s+procs"
    r"(?:\s+\((?P<mpi>\d+)\s+MPI\s+x\s+(?P<omp>\d+)\s+OpenMP\))?"
    r"\s+for\s+(?P<steps>\d+)\s+steps\s+with\s+(?P<atoms>\d+)\s+atoms"
)
PERF_RE = re.compile(r"^Performance:\s*(?P<body>.+)$", re.MULTILINE)
PERF_ITEM_RE = re.compile(r"([0-9.eE+-]+)\s+([A-Za-z/%-]+)")
CPU_RE = re.compile(r"([0-9.]+)%\s+CPU use with\s+(\d+)\s+MPI tasks?\s+x\s+(\d+|no)\s+OpenMP threads?")

# unit as printed → (metric name, unit, direction, factor to the stored unit)
PERF_UNITS: dict[str, tuple[str, str, Literal["higher", "lower"], float]] = {
    "ns/day": ("ns_per_day", "ns/day", "higher", 1.0),
    "hours/ns": ("hours_per_ns", "h/ns", "lower", 1.0),
    "tau/day": ("tau_per_day", "tau/day", "higher", 1.0),
    "timesteps/s": ("timesteps_per_s", "steps/s", "higher", 1.0),
    "katom-step/s": ("katom_steps_per_s", "katom-step/s", "higher", 1.0),
    "Matom-step/s": ("katom_steps_per_s", "katom-step/s", "higher", 1000.0),
    "atom-step/s": ("katom_steps_per_s", "katom-step/s", "higher", 0.001),
}


class LammpsParams(WorkloadParams):
    ranks: int = Field(2, ge=0, le=4096, description="MPI ranks; 0 runs lmp serially without mpirun")
    atoms: int = Field(
        32000, ge=32, le=2_000_000_000, description="atoms in the LJ melt (rounded to fcc cells)"
    )
    steps: int = Field(100, ge=1, le=100_000_000, description="timesteps")
    threads: int = Field(1, ge=1, le=1024, description="OpenMP threads per rank (OMP_NUM_THREADS)")
    binary: str = Field("lmp", pattern=r"^[A-Za-z0-9_./-]+$", description="LAMMPS executable")
    mpirun: str = Field("mpirun", pattern=r"^[A-Za-z0-9_./-]+$", description="MPI launcher")
    bind_to: Literal["default", "core", "socket", "none"] = Field(
        "default", description="OpenMPI --bind-to (default: OpenMPI's own choice)"
    )
    oversubscribe: bool | None = Field(None, description="allow more ranks than cores (default: when needed)")

    @model_validator(mode="after")
    def _shape(self) -> LammpsParams:
        if self.atoms < 4:
            raise ValueError("atoms must be ≥ 4")
        return self

    @property
    def cells(self) -> int:
        return max(1, round(float((self.atoms / 4) ** (1 / 3))))


@register_workload
class LammpsWorkload(Workload[LammpsParams]):
    kind = "lammps"
    Params = LammpsParams
    description = "LAMMPS Lennard-Jones melt (like LAMMPS's bench/in.lj), serial or MPI"
    primary_metric = "timesteps_per_s"

    def requires(self, params: LammpsParams) -> list[Requirement]:
        reqs = [Requirement(params.binary, "lammps", purpose="the LAMMPS binary")]
        if params.ranks > 0:
            reqs.append(Requirement(params.mpirun, "openmpi-bin", purpose="MPI launcher"))
        return reqs

    def check_resources(self, params: LammpsParams, workdir: Path) -> None:
        """Ranks × threads against the CPUs, atoms against the memory (measured on LAMMPS 2022: about
        330 bytes per LJ atom plus ~40 MiB per process; 400 bytes are counted)."""
        from nearmetal.host.machine import check_memory, check_processes

        processes = max(1, params.ranks) * params.threads
        check_processes(
            f"lammps ranks={params.ranks} × threads={params.threads}",
            processes,
            "lower lammps ranks or threads",
        )
        atoms = 4 * params.cells**3
        check_memory(
            f"lammps atoms={params.atoms:,} on {max(1, params.ranks)} rank(s)",
            atoms * 400 + max(1, params.ranks) * 40 * 2**20,
            "lower lammps atoms",
        )

    def prepare(self, params: LammpsParams, ctx: WorkloadContext) -> None:
        text = resources.files("nearmetal.workloads").joinpath("inputs/in.lj").read_text()
        (ctx.trial_dir / "in.lj").write_text(text)

    def processes(self, params: LammpsParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        lmp = [
            params.binary,
            "-in",
            "in.lj",
            "-log",
            "none",
            "-nocite",
            "-var",
            "cells",
            str(params.cells),
            "-var",
            "steps",
            str(params.steps),
        ]
        env = {"OMP_NUM_THREADS": str(params.threads)}
        if params.ranks == 0:
            return [ProcessSpec(argv=lmp, env=env, cwd=ctx.trial_dir)]
        options: list[str] = []
        oversubscribe = params.oversubscribe
        if oversubscribe is None:
            oversubscribe = params.ranks * params.threads > (os.cpu_count() or 1)
        if oversubscribe:
            options.append("--oversubscribe")
        if params.bind_to != "default":
            options += ["--bind-to", params.bind_to]
        options += ["-x", "OMP_NUM_THREADS"]
        argv = mpi_launch_argv(ctx, params.ranks, lmp, params.mpirun, options)
        return [ProcessSpec(argv=argv, env=env, cwd=ctx.trial_dir)]

    def resources(self, params: LammpsParams) -> dict[str, int]:
        return {"tasks": max(1, params.ranks), "cpus_per_task": params.threads}

    def parse(self, output: TrialOutput, params: LammpsParams | None = None) -> list[Metric]:
        return parse_lammps_log(output.stdout + "\n" + output.stderr)

    def tool_versions(self) -> dict[str, str]:
        versions = {}
        if shutil.which("lmp") and (found := hostcmd.version(["lmp", "-h"], r"Simulator - (.+)")):
            versions["lammps"] = found
        if shutil.which("mpirun") and (out := hostcmd.output(["mpirun", "--version"], 20)) is not None:
            versions["mpirun"] = out.splitlines()[0].strip() if out else ""
        return versions


def parse_lammps_log(text: str) -> list[Metric]:
    """Metrics of the last run in a LAMMPS log or screen output (older and newer formats)."""
    perf_matches = list(PERF_RE.finditer(text))
    loops = list(LOOP_RE.finditer(text))
    if not perf_matches and not loops:
        raise ParseError(
            "no 'Loop time of …' or 'Performance:' line: the LAMMPS run did not finish a 'run' "
            "command (see the trial's stderr)"
        )
    metrics: dict[str, Metric] = {}
    if loops:
        loop = loops[-1]
        loop_s = float(loop.group("time"))
        steps = int(loop.group("steps"))
        atoms = int(loop.group("atoms"))
        metrics["loop_s"] = Metric("loop_s", loop_s, "s", "lower")
        metrics["atoms"] = Metric("atoms", atoms, "atoms", "higher")
        metrics["procs"] = Metric("procs", int(loop.group("procs")), "procs", "higher")
        if loop_s > 0:
            metrics["timesteps_per_s"] = Metric("timesteps_per_s", steps / loop_s, "steps/s", "higher")
            metrics["katom_steps_per_s"] = Metric(
                "katom_steps_per_s", steps * atoms / loop_s / 1000, "katom-step/s", "higher"
            )
    if perf_matches:
        for value, unit in PERF_ITEM_RE.findall(perf_matches[-1].group("body")):
            if unit in PERF_UNITS:
                name, stored_unit, direction, factor = PERF_UNITS[unit]
                # the printed value wins over the one derived from the loop time (same run, more digits)
                metrics[name] = Metric(name, float(value) * factor, stored_unit, direction)
    cpu = CPU_RE.findall(text)
    if cpu:
        pct, mpi, omp = cpu[-1]
        metrics["lammps_cpu_use_pct"] = Metric("lammps_cpu_use_pct", float(pct), "%", "higher")
        metrics["mpi_tasks"] = Metric("mpi_tasks", int(mpi), "tasks", "higher")
        if omp != "no":
            metrics["omp_threads"] = Metric("omp_threads", int(omp), "threads", "higher")
    if "timesteps_per_s" not in metrics:
        raise ParseError("LAMMPS output has no timesteps/s (neither a 'Performance:' value nor a loop time)")
    return list(metrics.values())
