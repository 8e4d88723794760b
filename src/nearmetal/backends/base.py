"""Backends: where a trial runs. The interface every backend implements, the registry that names them, and
what a backend returns for one trial (outputs of its processes, how they ended, where they ran).

Two kinds: a ``HostBackend`` runs a trial's processes on this host (the runner stacks the layers around
it: ``trial.execute_trial``); a ``RemoteBackend`` (Slurm, Kubernetes) takes whole trials and runs them
elsewhere, yielding their outcomes as its jobs end. The runner uses only these interfaces."""

from __future__ import annotations

import os
import signal as signal_mod
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from nearmetal.metrics import Metric
from nearmetal.registry import Registry
from nearmetal.workloads.base import ProcessSpec

if TYPE_CHECKING:
    from nearmetal.backends.spec import TrialOutcome, TrialSpec
    from nearmetal.plan import LoadedPlan

STDERR_TAIL_BYTES = 4000
# a process's output goes to a file as it is written; what parsers see of it is at most this much: the
# first OUTPUT_HEAD_BYTES and the rest from the end, with a line saying how much was left out between.
# Memory stays flat in the output's size (a workload writing 2 GB to stdout costs the runner ~100 MB)
OUTPUT_READ_BYTES = 32 << 20
OUTPUT_HEAD_BYTES = 8 << 20


def _open_output(path: Path) -> int | None:
    """The output file opened for reading: a regular file, not followed through a symbolic link, never
    a FIFO that would block; None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _read_at(fd: int, offset: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_output(path: Path, limit: int = OUTPUT_READ_BYTES, head: int = OUTPUT_HEAD_BYTES) -> str:
    """At most ``limit`` bytes of an output file as text: all of it when it is smaller, else its first
    ``head`` bytes, a line naming how many bytes were left out, and its last ``limit - head`` bytes."""
    fd = _open_output(path)
    if fd is None:
        return ""
    try:
        size = os.fstat(fd).st_size
        if size <= limit:
            return _read_at(fd, 0, limit).decode(errors="replace")
        first = _read_at(fd, 0, head).decode(errors="replace")
        last = _read_at(fd, size - (limit - head), limit - head).decode(errors="replace")
        return f"{first}\n[nearmetal: {size - limit:,} bytes of this output left out here]\n{last}"
    finally:
        os.close(fd)


def read_tail(path: Path, limit: int) -> str:
    """The last ``limit`` bytes of an output file as text (nothing before them is read)."""
    fd = _open_output(path)
    if fd is None:
        return ""
    try:
        size = os.fstat(fd).st_size
        return _read_at(fd, max(0, size - limit), limit).decode(errors="replace")
    finally:
        os.close(fd)


@dataclass
class ProcessResult:
    role: str
    label: str
    argv: list[str]
    stdout_path: Path
    stderr_path: Path
    returncode: int | None = None
    timed_out: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    ready_at: float | None = None  # a background process: when its readiness check passed

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal_mod.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def read_stdout(self) -> str:
        """The process's stdout, at most OUTPUT_READ_BYTES of it (its head and tail)."""
        return read_output(self.stdout_path)

    def read_stderr(self) -> str:
        return read_output(self.stderr_path)

    def stderr_tail(self, limit: int = STDERR_TAIL_BYTES) -> str:
        return read_tail(self.stderr_path, limit)


@dataclass
class Execution:
    """The outcome of running a trial's processes."""

    main: ProcessResult
    others: list[ProcessResult] = field(default_factory=list)
    wall_s: float = 0.0
    metrics: list[Metric] = field(default_factory=list)  # telemetry
    placement: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a problem outside the main process (a background process died early)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.main.timed_out and self.main.returncode == 0


class Backend(ABC):
    """Where a trial runs."""

    name: ClassVar[str]
    # a remote backend runs whole trials elsewhere (see RemoteBackend); a host backend runs processes here
    remote: ClassVar[bool] = False

    def options_record(self) -> dict[str, Any]:
        """What a resumed run needs to go on with the same backend (cluster, partition, image …); stored
        with the run."""
        return {}


class HostBackend(Backend):
    """Runs a trial's processes on this host; the layers around them are stacked by ``trial.execute_trial``."""

    @abstractmethod
    def execute(self, processes: list[ProcessSpec], trial_dir: Path, timeout_s: float) -> Execution: ...


class RemoteHooks(Protocol):
    """What a remote backend tells the runner while trials run."""

    def submitted(self, spec: TrialSpec, job: dict[str, Any]) -> None:
        """A trial's job was submitted (stored, so a resumed run can re-attach to it)."""

    def started(self, spec: TrialSpec) -> None:
        """A trial's job started running (progress)."""


class RemoteBackend(Backend):
    """Runs whole trials as jobs elsewhere (a batch system, a cluster), several at once where it can."""

    remote = True

    @abstractmethod
    def check(self, loaded: LoadedPlan) -> None:
        """Refuse, before anything runs, a plan this backend cannot run (its own tools and privileges)."""

    @abstractmethod
    def run_trials(
        self, specs: list[TrialSpec], hooks: RemoteHooks
    ) -> Generator[tuple[TrialSpec, TrialOutcome], None, None]:
        """Run the trials, yielding each outcome as its job ends. Closing the generator early (an error,
        Ctrl-C) cancels every job it still has."""

    def reattach(self, state: Any) -> set[str]:
        """A resumed run's ``ResumeState``, before anything runs: the keys of trials whose jobs this backend
        re-attached to (it completes them itself when asked for them, instead of starting them again)."""
        return set()

    def reattached_keys(self) -> set[str]:
        """Keys of trials re-attached by ``reattach`` and not collected yet."""
        return set()


BackendFactory = Callable[..., Backend]
# name -> factory(plan, **options given on the command line); every module of nearmetal.backends registers
# its backend with ``@register_backend(name)``
BACKENDS: Registry[BackendFactory] = Registry("backend", packages=("nearmetal.backends",))


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    return BACKENDS.register(name)
