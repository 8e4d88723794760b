"""MPI point-to-point and collective measurements between 2 ranks: ping-pong latency and bandwidth over
message sizes, and allreduce time.

Ranks are launched by MPICH's hydra (``mpiexec.hydra``, Debian ``mpich``) in MPMD form, one command per
rank (``ProcessSpec.ranks``): rank 0 has role ``server`` and rank 1 role ``main``, so the network layers put
them in different namespaces. Why hydra: its ranks reach their local proxy through an inherited file
descriptor (PMI_FD), which works in any network namespace, while Open MPI 4's ranks reach their PMIx
server over TCP on the host's loopback, which a rank in another namespace cannot reach. ``transport: tcp``
(the default) sets ``MPIR_CVAR_NOLOCAL=1`` and ``UCX_TLS=tcp,self`` so the ranks talk TCP even on one host
(otherwise they would use shared memory and never touch the network), over ``UCX_NET_DEVICES`` = the
interface the layer names (``endpoints["iface"]``; loopback on bare metal).

``kind: mpi`` runs ``nearmetal.tools.osu`` (mpi4py; the OSU micro-benchmarks are not in Debian) with OSU's
output shape; ``kind: osu`` runs one real OSU binary (``osu_latency``, ``osu_bw``, ``osu_allreduce``…) from
``osu_dir``. Both are parsed by ``parse_osu`` (``nearmetal parse osu FILE`` for output made elsewhere).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
    register_workload,
)

ITERATIONS_RE = re.compile(r"^#\s*nearmetal-(?P<kind>iterations|ranks|load)\s+(?P<doc>\{.*\})\s*$")
HEADER_RE = re.compile(r"^#\s*OSU\s+(?:MPI|OpenSHMEM|UPC\+*)(?:-\w+)?\s+(?P<title>.+?)\s+Test\b(?P<rest>.*)$")
VERSION_RE = re.compile(r"v(\d+(?:\.\d+)*)")
NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")

# OSU test title → (short name, unit of its first value column, direction)
TITLES: dict[str, tuple[str, str, Literal["higher", "lower"]]] = {
    "latency": ("latency", "us", "lower"),
    "bandwidth": ("bw", "MBps", "higher"),
    "bi-directional bandwidth": ("bibw", "MBps", "higher"),
    "multiple bandwidth / message rate": ("mbw_mr", "MBps", "higher"),
    "allreduce latency": ("allreduce", "us", "lower"),
    "reduce latency": ("reduce", "us", "lower"),
    "bcast latency": ("bcast", "us", "lower"),
    "allgather latency": ("allgather", "us", "lower"),
    "alltoall latency": ("alltoall", "us", "lower"),
    "barrier latency": ("barrier", "us", "lower"),
}
UNIT_LABEL = {"us": "µs", "MBps": "MB/s"}


def size_label(size: int) -> str:
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


@dataclass
class OsuSection:
    name: str
    unit: str
    direction: Literal["higher", "lower"]
    version: str | None
    rows: list[tuple[int, float]] = field(default_factory=list)


def parse_osu_sections(text: str) -> list[OsuSection]:
    sections: list[OsuSection] = []
    current: OsuSection | None = None
    # a byte-order mark (a file saved by Windows tools starts with one; files joined with cat carry it
    # mid-text) is not whitespace to str.strip() and would hide the "# OSU" header behind it
    for raw in text.replace("\ufeff", "").splitlines():
        line = raw.strip()
        header = HEADER_RE.match(line)
        if header:
            title = header.group("title").strip().lower()
            name, unit, direction = TITLES.get(
                title, (re.sub(r"[^a-z0-9]+", "_", title).strip("_"), "us", "lower")
            )
            version = VERSION_RE.search(header.group("rest"))
            current = OsuSection(name, unit, direction, version.group(1) if version else None)
            sections.append(current)
            continue
        if current is None or not line or line.startswith("#"):
            continue
        cols = line.split()
        if len(cols) >= 2 and cols[0].isdigit() and NUMBER_RE.match(cols[1]):
            current.rows.append((int(cols[0]), float(cols[1])))
    return [s for s in sections if s.rows]


def parse_osu(text: str) -> list[Metric]:
    """Metrics from OSU micro-benchmark output (one or several tests, OSU 5.x to 7.x, or nearmetal's
    mpi4py form): ``<test>_<size>_<unit>`` per message size, plus ``<test>_small_…`` (smallest size > 0)
    and ``<test>_large_…`` (largest size)."""
    sections = parse_osu_sections(text)
    if not sections:
        if "OSU" in text:
            raise ParseError("OSU output has a test header but no result lines (did the benchmark abort?)")
        raise ParseError("no '# OSU MPI … Test' header: not OSU micro-benchmark output")
    metrics: dict[str, Metric] = {}
    for sec in sections:
        unit = UNIT_LABEL.get(sec.unit, sec.unit)
        for size, value in sec.rows:
            name = f"{sec.name}_{size_label(size)}_{sec.unit}"
            metrics[name] = Metric(name, value, unit, sec.direction, source="osu")
        nonzero = [r for r in sec.rows if r[0] > 0] or sec.rows
        small, large = min(nonzero), max(sec.rows)
        for which, (_, value) in (("small", small), ("large", large)):
            name = f"{sec.name}_{which}_{sec.unit}"
            metrics[name] = Metric(name, value, unit, sec.direction, source="osu")
    for metric in iteration_metrics(text):
        metrics.setdefault(metric.name, metric)
    return list(metrics.values())


def nearmetal_lines(text: str, kind: str) -> list[dict[str, Any]]:
    """The JSON documents of nearmetal's own comment lines (``# nearmetal-<kind> {…}``) in OSU-shaped output."""
    docs = []
    for raw in text.splitlines():
        match = ITERATIONS_RE.match(raw.strip().lstrip("\ufeff"))
        if match and match.group("kind") == kind:
            try:
                doc = json.loads(match.group("doc"))
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                docs.append(doc)
    return docs


# per-iteration fields → (metric suffix, unit, direction); p50/p99 per size, the rest for small/large only
ITERATION_FIELDS: dict[str, tuple[str, str, Literal["higher", "lower"]]] = {
    "p50": ("p50_us", "µs", "lower"),
    "p99": ("p99_us", "µs", "lower"),
    "bimodal": ("bimodal", "flag", "lower"),
    "slow_pct": ("slow_pct", "%", "lower"),
    "mode_ratio": ("mode_ratio", "×", "lower"),
}


def iteration_metrics(text: str) -> list[Metric]:
    """Metrics from nearmetal's per-iteration lines (``nearmetal.tools.osu``): ``<test>_<size>_p50_us`` and
    ``_p99_us`` per size, and for the smallest (> 0) and largest sizes also ``_bimodal`` (1 when the
    iterations formed two groups far apart), ``_slow_pct`` (% of iterations in the slow group) and
    ``_mode_ratio`` (slow group's median / fast group's). Empty for OSU's own binaries."""
    by_test: dict[str, dict[int, dict[str, Any]]] = {}
    for doc in nearmetal_lines(text, "iterations"):
        if isinstance(doc.get("test"), str) and isinstance(doc.get("size"), int) and doc.get("n"):
            by_test.setdefault(doc["test"], {})[doc["size"]] = doc
    out: list[Metric] = []
    for test, per_size in by_test.items():
        nonzero = [s for s in per_size if s > 0] or list(per_size)
        labels: list[tuple[int, str, tuple[str, ...]]] = [
            (size, size_label(size), ("p50", "p99")) for size in sorted(per_size)
        ]
        labels += [
            (min(nonzero), "small", tuple(ITERATION_FIELDS)),
            (max(per_size), "large", tuple(ITERATION_FIELDS)),
        ]
        for size, label, fields in labels:
            for key in fields:
                value = per_size[size].get(key)
                if isinstance(value, int | float):
                    suffix, unit, direction = ITERATION_FIELDS[key]
                    out.append(
                        Metric(f"{test}_{label}_{suffix}", float(value), unit, direction, source="osu")
                    )
    return out


def find_library(soname: str) -> Path | None:
    """Where the dynamic linker finds a library (from ``ldconfig -p``)."""
    out = hostcmd.output(["ldconfig", "-p"], 20) or ""
    for line in out.splitlines():
        name, _, target = line.strip().partition(" => ")
        if name.split(" ", 1)[0] == soname and target:
            return Path(target.strip())
    for directory in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        candidate = Path(directory) / soname
        if candidate.exists():
            return candidate
    return None


class MpiParams(WorkloadParams):
    benchmarks: list[Literal["latency", "bw", "allreduce"]] = Field(
        default_factory=lambda: ["latency", "bw", "allreduce"],  # type: ignore[arg-type]  # literals, as listed
        min_length=1,
        description="what to measure",
    )
    min_size: int = Field(8, ge=1, le=1 << 30, description="smallest message in bytes")
    max_size: int = Field(1 << 20, ge=1, le=1 << 30, description="largest message in bytes (powers of two)")
    sizes: list[int] | None = Field(
        None,
        min_length=1,
        description="exactly these message sizes instead of min_size…max_size, e.g. [8, 65536]",
    )
    iterations: int = Field(1000, ge=1, le=10_000_000, description="iterations per small message size")
    skip: int = Field(100, ge=0, le=1_000_000, description="unmeasured iterations first (small messages)")
    large_iterations: int = Field(100, ge=1, le=10_000_000, description="iterations above 8 KiB")
    large_skip: int = Field(10, ge=0, le=1_000_000, description="unmeasured iterations above 8 KiB")
    seconds: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="latency: measure each size for at least this long (beyond `iterations`); a trial that "
        "spans many CFS periods (100 ms) shows a CPU limit's throttling in its mean every time, not by chance",
    )
    pin: bool = Field(
        True,
        description="rank r on the r-th CPU it may use (one CPU each where there are two): MPICH ranks "
        "busy-poll, and two of them left on one CPU take turns by scheduler time slices (ms, not µs)",
    )
    transport: Literal["tcp", "shm"] = Field(
        "tcp",
        description="tcp: ranks talk TCP over the layer's interface (loopback on bare metal); shm: MPICH's "
        "default, shared memory between ranks on one host (no network at all)",
    )
    mpiexec: str = Field("mpiexec.hydra", pattern=r"^[A-Za-z0-9_./-]+$", description="MPICH hydra launcher")
    python: str = Field(
        default_factory=lambda: sys.executable, description="Python interpreter with mpi4py (≥ 4, MPICH ABI)"
    )

    @model_validator(mode="after")
    def _sizes(self) -> MpiParams:
        if self.sizes and any(not 1 <= s <= 1 << 30 for s in self.sizes):
            raise ValueError("every message size must be between 1 byte and 1 GiB")
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) must be ≥ min_size ({self.min_size})")
        return self


def mpi_env(params: MpiParams | OsuParams, ctx: WorkloadContext) -> dict[str, str]:
    if params.transport == "shm":
        return {}
    env = {"MPIR_CVAR_NOLOCAL": "1", "UCX_TLS": "tcp,self"}
    if "iface" in ctx.endpoints:
        env["UCX_NET_DEVICES"] = str(ctx.endpoints["iface"])
    elif ctx.mpi != "srun-pmix":
        # both ranks on this host: loopback (under srun they may be on two nodes: UCX picks a path)
        env["UCX_NET_DEVICES"] = "lo"
    return env


def srun_ranks(rank_argv: list[str], env: dict[str, str], ctx: WorkloadContext) -> ProcessSpec:
    """The two ranks started by Slurm inside the job's allocation (on one node or two, as the job's
    resources say): ``srun --mpi=pmi2`` (MPICH's ranks speak PMI-2 to slurmstepd; no hydra)."""
    argv = ["srun", "--mpi=pmi2", "--ntasks=2", *rank_argv]
    return ProcessSpec(argv=argv, env=env, cwd=ctx.trial_dir, name="srun")


def two_ranks(launcher: str, rank_argv: list[str], env: dict[str, str], ctx: WorkloadContext) -> ProcessSpec:
    ranks = [
        ProcessSpec(argv=list(rank_argv), role="server", name="rank0"),
        ProcessSpec(argv=list(rank_argv), role="main", name="rank1"),
    ]
    return ProcessSpec(argv=[launcher], env=env, cwd=ctx.trial_dir, ranks=ranks, name="mpiexec")


@register_workload
class MpiWorkload(Workload[MpiParams]):
    kind = "mpi"
    Params = MpiParams
    description = "MPI ping-pong latency/bandwidth and allreduce between 2 ranks (mpi4py, OSU output shape)"
    # the median of a trial's iterations: a few iterations that lost their CPU for a time slice move the
    # mean (``latency_small_us``, OSU's figure, kept) by orders of magnitude and the median not at all
    primary_metric = "latency_small_p50_us"

    def requires(self, params: MpiParams) -> list[Requirement]:
        return [
            Requirement(params.mpiexec, "mpich", purpose="MPICH's hydra launcher and libmpich"),
            Requirement("mpi4py", "mpi4py>=4", manager="pypi", purpose="MPI from Python"),
        ]

    def prepare(self, params: MpiParams, ctx: WorkloadContext) -> None:
        # mpi4py's MPICH-ABI module links libmpi.so.12; Debian's libmpich12 ships only libmpich.so.12
        # (libmpi.so.12 comes with libmpich-dev), so point a private libmpi.so.12 at it
        if find_library("libmpi.so.12") is None:
            real = find_library("libmpich.so.12")
            if real is not None:
                shim = ctx.trial_dir.resolve() / "mpich-abi"
                shim.mkdir(exist_ok=True)
                link = shim / "libmpi.so.12"
                if not link.exists():
                    link.symlink_to(real)

    def processes(self, params: MpiParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        rank_argv = [
            params.python, "-m", "nearmetal.tools.osu", "--benchmarks", ",".join(params.benchmarks),
            "-m", ",".join(map(str, params.sizes)) if params.sizes else f"{params.min_size}:{params.max_size}",
            "-i", str(params.iterations), "-x", str(params.skip),
            "--large-iterations", str(params.large_iterations), "--large-skip", str(params.large_skip),
            "--pin" if params.pin else "--no-pin",
        ]  # fmt: skip
        if params.seconds:
            rank_argv += ["--seconds", f"{params.seconds:g}"]
        env = {"MPI4PY_MPIABI": "mpich", **mpi_env(params, ctx)}
        shim = ctx.trial_dir.resolve() / "mpich-abi"
        if (shim / "libmpi.so.12").exists() or find_library("libmpi.so.12") is None:
            env["LD_LIBRARY_PATH"] = str(shim)
        if ctx.mpi == "srun-pmix":
            return [srun_ranks(rank_argv, env, ctx)]
        return [two_ranks(params.mpiexec, rank_argv, env, ctx)]

    def resources(self, params: MpiParams) -> dict[str, Any]:
        # two ranks: two tasks (a plan's `resources: {nodes: 2}` puts one on each node)
        return {"tasks": 2}

    def parse(self, output: TrialOutput, params: MpiParams | None = None) -> list[Metric]:
        return parse_osu(output.stdout)

    def parse_file(self, path: Path) -> list[Metric]:
        return parse_osu(path.read_text(errors="replace"))

    def placement(self, output: TrialOutput, params: MpiParams | None = None) -> dict[str, Any]:
        """Where each rank ran (CPUs it was pinned to) and the host's load average at start and end."""
        out: dict[str, Any] = {}
        ranks = nearmetal_lines(output.stdout, "ranks")
        if ranks:
            out["mpi_ranks"] = ranks[-1]
        loads = [d["load_avg"] for d in ranks + nearmetal_lines(output.stdout, "load") if "load_avg" in d]
        if loads:
            out["load_avg"] = {"start": loads[0], "end": loads[-1]}
        return out

    def tool_versions(self) -> dict[str, str]:
        versions = {}
        if shutil.which("mpichversion") and (
            found := hostcmd.version(["mpichversion"], r"MPICH Version:\s*(\S+)")
        ):
            versions["mpich"] = found
        try:
            from importlib.metadata import version

            versions["mpi4py"] = version("mpi4py")
        except Exception:
            pass
        return versions


class OsuParams(WorkloadParams):
    benchmark: str = Field(
        "osu_latency", pattern=r"^osu_[a-z_]+$", description="OSU binary: osu_latency, osu_bw, osu_allreduce…"
    )
    osu_dir: str = Field(
        "/usr/local/libexec/osu-micro-benchmarks/mpi",
        description="directory holding the OSU binary (or its pt2pt/collective subdirectories)",
    )
    min_size: int = Field(8, ge=0, le=1 << 30)
    max_size: int = Field(1 << 20, ge=1, le=1 << 30)
    iterations: int = Field(1000, ge=1, le=10_000_000)
    skip: int = Field(100, ge=0, le=1_000_000)
    transport: Literal["tcp", "shm"] = "tcp"
    mpiexec: str = Field("mpiexec.hydra", pattern=r"^[A-Za-z0-9_./-]+$")

    def binary(self) -> str:
        base = Path(self.osu_dir)
        for sub in ("", "pt2pt", "collective", "pt2pt/standard", "collective/blocking"):
            candidate = base / sub / self.benchmark
            if candidate.exists():
                return str(candidate)
        return str(base / self.benchmark)


@register_workload
class OsuWorkload(MpiWorkload):
    kind = "osu"
    Params = OsuParams  # type: ignore[assignment]  # one binary, its own parameters
    description = "one real OSU micro-benchmark binary (built from source; not in Debian) between 2 ranks"
    primary_metric = "latency_small_us"  # OSU's binaries print the mean only

    def requires(self, params: OsuParams) -> list[Requirement]:  # type: ignore[override]
        return [
            Requirement(params.mpiexec, "mpich", purpose="MPICH's hydra launcher"),
            Requirement(
                params.binary(),
                "build osu-micro-benchmarks against MPICH (no Debian package has it)",
                manager="manual",
                purpose="OSU",
            ),
        ]

    def prepare(self, params: OsuParams, ctx: WorkloadContext) -> None:  # type: ignore[override]
        pass

    def processes(self, params: OsuParams, ctx: WorkloadContext) -> list[ProcessSpec]:  # type: ignore[override]
        rank_argv = [params.binary(), "-m", f"{params.min_size}:{params.max_size}"]
        rank_argv += ["-i", str(params.iterations), "-x", str(params.skip)]
        if ctx.mpi == "srun-pmix":
            return [srun_ranks(rank_argv, mpi_env(params, ctx), ctx)]
        return [two_ranks(params.mpiexec, rank_argv, mpi_env(params, ctx), ctx)]
