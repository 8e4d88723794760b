"""The workload contract: what a program needs, how it is run, and how its output becomes metrics.

A workload knows nothing of layers or backends: it describes processes (argv, env, role) and parses what
they printed. Layers and backends decide where and how those processes run.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from nearmetal.metrics import Metric
from nearmetal.registry import Registry


class WorkloadParams(BaseModel):
    """Base of every workload's parameter model; unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")


ParamsT = TypeVar("ParamsT", bound=WorkloadParams)


@dataclass(frozen=True)
class Requirement:
    """A program or module a workload needs, and where it comes from."""

    tool: str
    package: str
    # "device": hardware this host must have (tool "cuda": torch sees a CUDA GPU; "nvml": the NVIDIA
    # driver answers); ``package`` then says where to run instead
    # "manual": not packaged anywhere nearmetal installs from; ``package`` says how to get it
    manager: Literal["debian", "pypi", "device", "manual"] = "debian"
    purpose: str = ""
    # optional: a cell that lacks it is skipped with the reason (stored with the run) instead of stopping
    # the whole run (e.g. builders that may or may not be installed)
    optional: bool = False
    # the install command to show instead of the package manager's plain one (torch: the pinned CPU build)
    hint: str = ""

    def available(self) -> bool:
        if self.manager == "pypi":
            return importlib.util.find_spec(self.tool) is not None
        if self.manager == "device":
            from nearmetal.host.gpu import device_available

            return device_available(self.tool)
        return shutil.which(self.tool) is not None

    def install_hint(self) -> str:
        # quoted: the hint is a command users paste, and a package name can come from a plan
        if self.hint:
            return self.hint
        if self.manager == "pypi":
            return f"pip install {shlex.quote(self.package)}"
        if self.manager in ("device", "manual"):
            return self.package
        return f"apt-get install -y {shlex.quote(self.package)}"

    def missing_text(self) -> str:
        """Why the requirement is not met here, in words (the preflight error's first half)."""
        if self.manager == "device":
            from nearmetal.host.gpu import unavailable_reason

            return f"{self.purpose or self.tool} is not available: {unavailable_reason(self.tool)}"
        return f"{self.tool} is not installed"


@dataclass
class ProcessSpec:
    """One process of a trial. ``role`` lets layers place processes differently (a server in one network
    namespace, the client in another); ``main`` is the measured one, others run in the background."""

    argv: list[str]
    role: str = "main"
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    # files a layer wants the process's pid written into before it execs (cgroup.procs of each hierarchy)
    cgroup_procs: list[Path] = field(default_factory=list)
    # a background process is ready when this regex appears in its stdout (or after ready_delay_s)
    ready_pattern: str | None = None
    ready_delay_s: float = 0.0
    ready_timeout_s: float = 30.0
    name: str = ""
    # an MPMD launcher's per-rank commands (``mpiexec -n 1 A : -n 1 B``): layers place each rank like a
    # process of its role (a rank with role "server" goes where a server goes), and ``command()`` joins
    # them after ``argv`` in the launcher's syntax
    ranks: list[ProcessSpec] = field(default_factory=list)

    def label(self) -> str:
        return self.name or self.role

    def command(self) -> list[str]:
        """The argv to execute: ``argv``, then each rank as ``-n 1 [-env NAME VALUE]… ARGV``, ranks
        separated by ``:`` (the MPMD syntax of MPICH's hydra ``mpiexec``)."""
        if not self.ranks:
            return list(self.argv)
        out = list(self.argv)
        for i, rank in enumerate(self.ranks):
            if i:
                out.append(":")
            out += ["-n", "1"]
            for name, value in rank.env.items():
                out += ["-env", name, value]
            out += rank.argv
        return out


@dataclass
class WorkloadContext:
    """What a workload may know about the trial it runs in."""

    trial_dir: Path
    is_root: bool
    # addresses and ports a layer may change (a client in a namespace reaches the server at another address)
    endpoints: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    # how MPI programs start (the backend decides): "mpirun", or "srun-pmix" inside a Slurm allocation
    # (`srun --mpi=pmix -n RANKS program`); see mpi_launch_argv
    mpi: str = "mpirun"
    # set by the runner, so a workload can name the host objects it makes (see host_name)
    run_id: str = ""
    trial_key: str = ""

    def host_name(self, *parts: str) -> str:
        """``nearmetal-<run id>-<trial key>-<parts>``: the name ``nearmetal cleanup`` traces to its run."""
        return "-".join(["nearmetal", self.run_id, self.trial_key, *parts])


@dataclass
class ProcessOutput:
    role: str
    stdout: str
    stderr: str
    returncode: int | None


@dataclass
class TrialOutput:
    """Everything a trial's processes left behind, as the parser sees it."""

    stdout: str
    stderr: str
    files: dict[str, Path] = field(default_factory=dict)
    processes: list[ProcessOutput] = field(default_factory=list)
    wall_s: float | None = None


class ParseError(Exception):
    """The output does not contain what the parser needs; the message says what was missing."""


class Workload(ABC, Generic[ParamsT]):
    """Subclasses set ``kind``, ``Params`` and ``primary_metric`` and implement ``processes`` and ``parse``;
    ``Workload[XParams]`` types the ``params`` every method gets as ``XParams`` (the class ``Params`` names)."""

    kind: ClassVar[str]
    Params: ClassVar[type[WorkloadParams]] = WorkloadParams
    description: ClassVar[str] = ""
    # the metric loss tables lead with
    primary_metric: ClassVar[str] = "wall_s"

    def requires(self, params: ParamsT) -> list[Requirement]:
        return []

    def check_resources(self, params: ParamsT, workdir: Path) -> None:
        """Before a run: raise NearmetalError when the host cannot hold what a trial of these parameters
        needs (disk for data files, memory for buffers); ``workdir`` is where trial directories go."""

    def prepare(self, params: ParamsT, ctx: WorkloadContext) -> None:
        """Write input files into ``ctx.trial_dir`` before the trial starts."""

    @abstractmethod
    def processes(self, params: ParamsT, ctx: WorkloadContext) -> list[ProcessSpec]:
        """The processes of one trial; exactly one has role ``main``."""

    @abstractmethod
    def parse(self, output: TrialOutput, params: ParamsT | None = None) -> list[Metric]:
        """Turn a trial's output into metrics. Raise ParseError when it has none."""

    def parse_file(self, path: Path) -> list[Metric]:
        """Parse an output file made elsewhere (``nearmetal parse``)."""
        text = path.read_text(errors="replace")
        return self.parse(TrialOutput(stdout=text, stderr="", files={path.name: path}))

    def cleanup(self, params: ParamsT, ctx: WorkloadContext) -> None:
        """Remove what ``prepare`` or the run left that must not outlive the cell (big data files)."""

    def tool_versions(self) -> dict[str, str]:
        """Versions of the programs this workload runs, for the environment record."""
        return {}

    def longer_params(self, params: ParamsT, factor: float) -> dict[str, Any]:
        """Parameter values that make this workload run about ``factor`` times as long as ``params`` do
        (co-located neighbours must outlast the measured copy); {} when it cannot be made longer."""
        return {}

    def placement(self, output: TrialOutput, params: ParamsT | None = None) -> dict[str, Any]:
        """Where the workload says it ran (devices, ranks per host), merged into the trial's placement.
        Called after a successful ``parse``; must not raise."""
        return {}

    def events(self, output: TrialOutput, params: ParamsT | None = None) -> list[dict[str, Any]]:
        """Things the workload saw at moments of the trial, for the events table (a request timeline:
        ``{"time": epoch seconds, "kind": "timeline", "detail": {...}}``). Called after a successful
        ``parse``; must not raise."""
        return []

    def resources(self, params: ParamsT) -> dict[str, Any]:
        """What a batch scheduler should allocate for one trial, as keys of ``plan.models.Resources``
        (``tasks`` = MPI ranks, ``cpus_per_task``, ``memory_mib``, ``gpus``, …). The default: one task, one
        CPU. A plan's ``resources`` override it; the local backend ignores it."""
        return {}


def mpi_launch_argv(
    ctx: WorkloadContext,
    ranks: int,
    program: list[str],
    mpirun: str = "mpirun",
    mpirun_options: Sequence[str] = (),
) -> list[str]:
    """The argv that starts ``program`` as ``ranks`` MPI processes the way the backend asked: ``mpirun -np``
    (with its options) by default, or ``srun --mpi=pmix -n`` inside a Slurm allocation (Debian's OpenMPI
    speaks PMIx, not PMI2)."""
    if ctx.mpi == "srun-pmix":
        return ["srun", "--mpi=pmix", "-n", str(ranks), *program]
    argv = [mpirun, "-np", str(ranks)]
    if ctx.is_root:
        argv.append("--allow-run-as-root")
    return [*argv, *mpirun_options, *program]


# kind -> workload class; every module of nearmetal.workloads registers its workloads with
# ``@register_workload``
WORKLOADS: Registry[type[Workload[Any]]] = Registry(
    "workload kind", packages=("nearmetal.workloads",), by_name=True
)


WorkloadClass = TypeVar("WorkloadClass", bound="type[Workload[Any]]")


def register_workload(cls: WorkloadClass) -> WorkloadClass:
    """Class decorator: the workload is known by its ``kind`` (what a plan's ``kind:`` names)."""
    own_kind = cls.__dict__.get("kind")
    if not isinstance(own_kind, str):
        raise RuntimeError(f"workload {cls.__name__} sets no kind of its own")
    WORKLOADS.add(cls.kind, cls)
    return cls
